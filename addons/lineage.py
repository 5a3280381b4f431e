"""agent-lineage: infer agent sessions, turns and subagents from LLM traffic, stamp NVIDIA Dynamo
lineage headers on each LLM request, and write every session as an ATIF v1.7 trajectory.

    mitmdump -s addons/lineage.py                                   # regular / forward proxy
    mitmdump -s addons/lineage.py --mode reverse:https://api.anthropic.com

This file only wires mitmproxy's hooks and options to the pure core in `agent_lineage`.
(No dataclasses here: mitmproxy loads scripts outside sys.modules, which they need.)
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, exceptions, http

from agent_lineage import flows
from agent_lineage.calls import ResponseReader
from agent_lineage.harness import HarnessTableError
from agent_lineage.model import REDACTED, SECRET_HEADERS, SECRET_QUERY_PARAMS, Call, Exchange
from agent_lineage.pipeline import CallLog, CallSink, Pipeline, Settings
from agent_lineage.settings import DEFAULTS
from agent_lineage.trajectories import TrajectoryWriter
from agent_lineage.websocket import ResponsesSocket, is_responses_upgrade

log = logging.getLogger("agent_lineage")

CLIENT_HEADER_CHOICES = ["respect", "override"]
PIPELINE_OPTIONS = {
    "lineage_client_headers",
    "lineage_turn_gap",
    "lineage_session_ttl",
    "lineage_harness_file",
    "lineage_dir",
    "lineage_write_interval",
    "lineage_calls_log",
}


class _Live:
    """A call in flight: its reader and, for a streamed body, the chunks to save with the flow."""

    def __init__(self, call: Call, flow: http.HTTPFlow, pipeline: Pipeline) -> None:
        self.call = call
        self.flow = flow
        self.pipeline = pipeline
        self.reader: ResponseReader | None = None
        self.chunks: list[bytes] | None = None
        self.answered = False

    def tee(self, chunk: bytes) -> bytes:
        """`flow.response.stream`: each chunk goes to the client as it is, and to the parser."""
        if self.chunks is not None:
            self.chunks.append(chunk)
        if self.reader is not None:
            self.reader.feed(chunk)
            if not self.answered:
                try:
                    self.answered = self.pipeline.learn_answered(self.reader)
                except Exception:
                    self.answered = True
                    log.exception("agent-lineage: cannot learn from the answer of %s", self.flow.request.pretty_url)
        return chunk


class Lineage:
    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.live: dict[str, _Live] = {}  # flow id -> call in flight
        self.sockets: dict[str, tuple[ResponsesSocket, http.HTTPFlow]] = {}  # Responses WebSockets
        self.unredacted: dict[str, http.HTTPFlow] = {}  # flows whose secrets are still in the record

    def load(self, loader: Any) -> None:
        loader.add_option("lineage_stamp", bool, True, "Stamp x-dynamo-session-id / x-dynamo-parent-session-id on LLM requests. Off: only observe and record.")
        loader.add_option(
            "lineage_client_headers",
            str,
            "respect",
            "What to do with x-dynamo-* lineage a client already sends: 'respect' keeps it as the request's scope, 'override' infers and stamps ours.",
            choices=CLIENT_HEADER_CHOICES,
        )
        loader.add_option("lineage_dir", str, "traces", "Directory for trajectory files (trajectory-<session-id>.json). Empty: write none.")
        # Seconds are strings: mitmproxy's --set cannot parse float options.
        loader.add_option("lineage_write_interval", str, "1", "Seconds between rewrites of a session's trajectory file (0: after every call).")
        loader.add_option("lineage_turn_gap", str, f"{DEFAULTS.turn_gap_seconds:g}", "Idle seconds after which a root agent's next request opens a new turn.")
        loader.add_option("lineage_session_ttl", str, f"{DEFAULTS.session_ttl_seconds:g}", "Idle seconds after which a session's state is released from memory.")
        loader.add_option("lineage_harness_file", str, "", "YAML file merged over the built-in harness table (client headers and body fields).")
        loader.add_option("lineage_calls_log", str, "", "Append every finished LLM call as one JSON line to this file (debugging).")
        loader.add_option("lineage_redact_flows", bool, True, "Blank secret header values (Authorization, x-api-key, cookies) and key-like query values in every flow once forwarded, so saved flows (-w) hold no keys.")

    def configure(self, updated: set[str]) -> None:
        if "stream_large_bodies" in updated:
            self._warn_about_streamed_requests()
        if self.pipeline is None or updated & PIPELINE_OPTIONS:
            self._rebuild()
        elif "lineage_stamp" in updated:
            self.pipeline.settings.stamp = ctx.options.lineage_stamp

    def _warn_about_streamed_requests(self) -> None:
        if ctx.options.stream_large_bodies:
            log.warning(
                "agent-lineage: stream_large_bodies=%s: LLM requests larger than that are streamed upstream before "
                "the addon sees their body, and go unstamped and unrecorded (responses stream through the addon "
                "anyway); set it above your largest request, e.g. 64m",
                ctx.options.stream_large_bodies,
            )

    def running(self) -> None:
        unknown = sorted(name for name in ctx.options.deferred if name.startswith("lineage_"))
        if unknown:
            log.warning("agent-lineage: unknown option(s) ignored: %s", ", ".join(unknown))

    def _rebuild(self) -> None:
        options = ctx.options
        if options.lineage_client_headers not in CLIENT_HEADER_CHOICES:
            raise exceptions.OptionsError(f"lineage_client_headers must be one of {', '.join(CLIENT_HEADER_CHOICES)}")
        write_interval = _seconds("lineage_write_interval", minimum=0.0)
        settings = Settings(
            stamp=options.lineage_stamp,
            respect_client_lineage=options.lineage_client_headers == "respect",
            turn_gap_seconds=_seconds("lineage_turn_gap"),
            session_ttl_seconds=_seconds("lineage_session_ttl"),
            harness_file=options.lineage_harness_file or None,
        )
        sinks: list[CallSink] = []
        try:
            if options.lineage_dir:
                sinks.append(TrajectoryWriter(options.lineage_dir, write_interval))
            if options.lineage_calls_log:
                sinks.append(CallLog(options.lineage_calls_log))
            pipeline = Pipeline(settings, sinks)
        except (OSError, HarnessTableError) as e:
            for sink in sinks:
                sink.close()
            raise exceptions.OptionsError(f"agent-lineage: {e}") from None
        if self.pipeline is not None:
            self.pipeline.close()
        self.pipeline = pipeline

    def request(self, flow: http.HTTPFlow) -> None:
        assert self.pipeline is not None
        self.unredacted[flow.id] = flow
        try:
            exchange = flows.request_exchange(flow)
            if is_responses_upgrade(exchange.method, exchange.path, exchange.request_headers):
                _stamp(flow, exchange, self.pipeline.upgrade(exchange))
                return
            outcome = self.pipeline.request(exchange)
        except Exception:  # never turn a working request into a failing one
            log.exception("agent-lineage: request %s %s forwarded unchanged", flow.request.method, flow.request.pretty_url)
            return
        if outcome is not None:
            _stamp(flow, exchange, outcome.headers)
            self.live[flow.id] = _Live(outcome.call, flow, self.pipeline)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        live = self.live.get(flow.id)
        if live is None or self.pipeline is None:
            return
        status, headers, t_first_byte = flows.response_parts(flow)
        live.reader = self.pipeline.response_reader(live.call, status, headers, t_first_byte)
        assert flow.response is not None
        if "text/event-stream" in headers.get("content-type", "") or flow.response.stream is True:
            live.chunks = []
            flow.response.stream = live.tee

    def response(self, flow: http.HTTPFlow) -> None:
        self._redact(flow)
        live = self.live.pop(flow.id, None)
        if live is None or self.pipeline is None:
            return
        assert flow.response is not None
        if live.chunks:
            flow.response.raw_content = b"".join(live.chunks)  # so `-w` saves the streamed body
        elif live.reader is not None:
            # Buffered, or replayed from a file (`mitmdump -r`): the whole body is in the flow.
            live.reader.feed(flow.response.raw_content or b"")
        self._finish(live, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._redact(flow)
        live = self.live.pop(flow.id, None)
        if live is None or self.pipeline is None:
            return
        if live.chunks and flow.response is not None:
            flow.response.raw_content = b"".join(live.chunks)  # what arrived before the failure
        self._finish(live, flows.error_text(flow))

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        exchange = flows.request_exchange(flow)
        if self.pipeline is not None and is_responses_upgrade(exchange.method, exchange.path, exchange.request_headers):
            self.sockets[flow.id] = (ResponsesSocket(self.pipeline, exchange), flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self.sockets or flow.websocket is None:
            return
        socket, _ = self.sockets[flow.id]
        message = flow.websocket.messages[-1]
        try:
            socket.message(message.from_client, message.content, message.timestamp)
        except Exception:
            log.exception("agent-lineage: cannot record a websocket message of %s", flow.request.pretty_url)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        if flow.id in self.sockets:
            socket, _ = self.sockets.pop(flow.id)
            self._close_socket(socket, flow, flow.websocket.timestamp_end if flow.websocket else None, flows.error_text(flow))

    def done(self) -> None:
        for live in list(self.live.values()):
            self._finish(live, "proxy shut down before the response ended")
        self.live.clear()
        for socket, flow in self.sockets.values():
            self._close_socket(socket, flow, None, "proxy shut down before the response ended")
        self.sockets.clear()
        for flow in list(self.unredacted.values()):  # still in flight: the save addon writes them next
            self._redact(flow)
        if self.pipeline is not None:
            self.pipeline.close()

    def _close_socket(self, socket: ResponsesSocket, flow: http.HTTPFlow, t: float | None, error: str | None) -> None:
        try:
            socket.close(t, error)
        except Exception:
            log.exception("agent-lineage: cannot record the end of %s", flow.request.pretty_url)

    def _finish(self, live: _Live, error: str | None) -> None:
        assert self.pipeline is not None
        if live.reader is None:
            live.reader = self.pipeline.response_reader(live.call, None, {}, None)
        try:
            self.pipeline.finish(live.reader, flows.end_time(live.flow), error)
        except Exception:
            log.exception("agent-lineage: cannot record %s", live.flow.request.pretty_url)

    def _redact(self, flow: http.HTTPFlow) -> None:
        """Blank secrets in the flow's record once the request has gone upstream with them, so
        saved flows (-w) keep no key: every flow, LLM or not."""
        self.unredacted.pop(flow.id, None)
        if not ctx.options.lineage_redact_flows:
            return
        for name in SECRET_HEADERS:
            if name in flow.request.headers:
                flow.request.headers[name] = REDACTED
        for name in list(flow.request.query):
            if name.lower() in SECRET_QUERY_PARAMS:
                flow.request.query[name] = REDACTED


def _seconds(option: str, minimum: float | None = None) -> float:
    """A duration option's value; OptionsError unless it is a number above `minimum` (or >= 0)."""
    raw = getattr(ctx.options, option)
    try:
        value = float(raw)
    except ValueError:
        raise exceptions.OptionsError(f"{option} must be a number of seconds, not {raw!r}") from None
    if minimum is not None and value < minimum or minimum is None and value <= 0 or value != value:
        bound = f">= {minimum:g}" if minimum is not None else "> 0"
        raise exceptions.OptionsError(f"{option} must be {bound}, not {raw!r}")
    return value


def _stamp(flow: http.HTTPFlow, exchange: Exchange, headers: dict[str, str | None]) -> None:
    if headers:
        flows.remember_client_lineage(flow, exchange.request_headers)
    for name, value in headers.items():
        if value is None:
            flow.request.headers.pop(name, None)
        else:
            flow.request.headers[name] = value  # replaces every field of that name, any case


addons = [Lineage()]
