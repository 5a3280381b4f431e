"""The mitmproxy addon: infer agent sessions, turns and subagents from LLM traffic, stamp NVIDIA
Dynamo lineage headers on each LLM request, and write every session as an ATIF v1.7 trajectory.

    mitmdump -s addons/lineage.py                          # in a checkout
    mitmdump -s "$(agent-lineage addon-path)"              # from an installed package
    agent-lineage proxy --mode reverse:https://api.anthropic.com

Thin on purpose: it declares the options, applies them in place, and hands every hook to the
Driver that offline conversion uses too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import sys
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.utils import human

from . import contentview
from .console import LINEAGE_KEY, MODES, SUBAGENT_MARKER, Console, Placement, flow_comment, flow_marker, lineage_record
from .driver import Driver
from .harness import HarnessTableError
from .model import REDACTED, SECRET_HEADERS, SECRET_QUERY_PARAMS, Call
from .pipeline import CallLog, Pipeline
from .settings import DEFAULTS, Settings, parse_priority
from .trajectories import TrajectoryWriter

log = logging.getLogger("agent_lineage")

CLIENT_HEADER_CHOICES = ["respect", "override"]


class Lineage:
    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.driver: Driver | None = None
        self.writer: TrajectoryWriter | None = None
        self.calls_log: CallLog | None = None
        self.unredacted: dict[str, http.HTTPFlow] = {}  # flows whose secrets are still in the record
        self.console = Console()

    def load(self, loader: Any) -> None:
        loader.add_option(
            "lineage_stamp",
            bool,
            DEFAULTS.stamp,
            "Stamp x-dynamo-session-id / x-dynamo-parent-session-id on LLM requests. Off: only observe and record.",
        )
        loader.add_option(
            "lineage_client_headers",
            str,
            "respect",
            "What to do with x-dynamo-* lineage a client already sends: 'respect' keeps it as the request's scope, 'override' infers and stamps ours.",  # noqa: E501
            choices=CLIENT_HEADER_CHOICES,
        )
        loader.add_option("lineage_dir", str, "traces", "Directory for trajectory files (trajectory-<session-id>.json). Empty: write none.")
        # Seconds are strings: mitmproxy's --set cannot parse float options.
        loader.add_option(
            "lineage_write_interval", str, "1", "Seconds between rewrites of a session's trajectory file (0: after every call)."
        )
        loader.add_option(
            "lineage_turn_gap",
            str,
            f"{DEFAULTS.turn_gap_seconds:g}",
            "Idle seconds after which a root agent's next request opens a new turn.",
        )
        loader.add_option(
            "lineage_session_ttl",
            str,
            f"{DEFAULTS.session_ttl_seconds:g}",
            "Idle seconds after which a session's state is released from memory.",
        )
        loader.add_option(
            "lineage_harness_file", str, "", "YAML file merged over the built-in harness table (client headers and body fields)."
        )
        loader.add_option("lineage_calls_log", str, "", "Append every finished LLM call as one JSON line to this file (debugging).")
        loader.add_option(
            "lineage_priority",
            str,
            "",
            "Stamp x-dynamo-request-priority by scope, e.g. 'main=2,subagent=2,side=0' (scopes: main, subagent, side). Empty: none.",
        )
        loader.add_option(
            "lineage_max_decoded",
            str,
            "64m",
            "Largest decoded size of a request or response body the addon observes (k/m/g suffixes); a body that "
            "decodes to more (a decompression bomb) is forwarded unchanged and its call recorded as not observed.",
        )
        loader.add_option(
            "lineage_mask_keys",
            bool,
            DEFAULTS.mask_keys,
            "Mask well-known API key patterns (sk-..., AKIA..., ghp_..., AIza..., xox...) found in the content (a key pasted "
            "into a prompt) in trajectories and the calls log. Keys sent as credentials are never recorded either way.",
        )
        loader.add_option(
            "lineage_redact_flows",
            bool,
            True,
            "Blank secret header values (Authorization, x-api-key, cookies) and key-like query values in every flow once forwarded, so saved flows (-w) hold no keys.",  # noqa: E501
        )
        loader.add_option(
            "lineage_console",
            str,
            "line",
            "One line in mitmproxy's log per finished LLM call: 'line', 'verbose' (adds the full ids and all evidence) or 'off'.",
            choices=list(MODES),
        )
        contentview.register()

    def configure(self, updated: set[str]) -> None:
        """Apply changed options in place: sessions in memory survive every change; only a new
        `lineage_dir` or `lineage_calls_log` replaces its sink."""
        if "stream_large_bodies" in updated:
            self._warn_about_streamed_requests()
        if "lineage_console" in updated:
            self.console.mode = ctx.options.lineage_console
            self.console.color = _terminal_takes_colour()
        settings = self._settings()  # validates every option before anything changes
        write_interval = _seconds("lineage_write_interval", minimum=0.0)
        if self.pipeline is None:
            try:
                self.pipeline = Pipeline(settings, [])
            except HarnessTableError as e:
                raise exceptions.OptionsError(f"agent-lineage: {e}") from None
            self.driver = Driver(self.pipeline, on_call=self._show)
            updated = updated | {"lineage_dir", "lineage_calls_log"}
        else:
            if settings.harness_file != self.pipeline.settings.harness_file:
                try:
                    self.pipeline.reload_harness(settings.harness_file)
                except HarnessTableError as e:
                    raise exceptions.OptionsError(f"agent-lineage: {e}") from None
            for field in dataclasses.fields(Settings):
                setattr(self.pipeline.settings, field.name, getattr(settings, field.name))
        if "lineage_dir" in updated:
            self._replace_writer(write_interval)
        elif self.writer is not None:
            self.writer.write_interval = write_interval
        if "lineage_calls_log" in updated:
            self._replace_calls_log()
        if self.writer is not None:
            self.writer.files.mask_keys = settings.mask_keys  # read by the writer's thread at its next write
        if self.calls_log is not None:
            self.calls_log.mask_keys = settings.mask_keys
        self.pipeline.sinks = [sink for sink in (self.writer, self.calls_log, self.console) if sink is not None]

    def running(self) -> None:
        unknown = sorted(name for name in ctx.options.deferred if name.startswith("lineage_"))
        if unknown:
            log.warning("agent-lineage: unknown option(s) ignored: %s", ", ".join(unknown))
        log.info("agent-lineage: ready (trajectories: %s)", ctx.options.lineage_dir or "off")

    def _settings(self) -> Settings:
        options = ctx.options
        if options.lineage_client_headers not in CLIENT_HEADER_CHOICES:
            raise exceptions.OptionsError(f"lineage_client_headers must be one of {', '.join(CLIENT_HEADER_CHOICES)}")
        return Settings(
            stamp=options.lineage_stamp,
            respect_client_lineage=options.lineage_client_headers == "respect",
            turn_gap_seconds=_seconds("lineage_turn_gap"),
            session_ttl_seconds=_seconds("lineage_session_ttl"),
            harness_file=options.lineage_harness_file or None,
            priority=_priority_levels(),
            max_decoded_bytes=_size("lineage_max_decoded"),
            mask_keys=options.lineage_mask_keys,
        )

    def _replace_writer(self, write_interval: float) -> None:
        directory = ctx.options.lineage_dir
        try:
            writer = TrajectoryWriter(directory, write_interval) if directory else None
        except OSError as e:
            raise exceptions.OptionsError(f"agent-lineage: lineage_dir: {e}") from None
        if self.writer is not None:
            self.writer.close()
        self.writer = writer

    def _replace_calls_log(self) -> None:
        path = ctx.options.lineage_calls_log
        try:
            calls_log = CallLog(path) if path else None
        except OSError as e:
            raise exceptions.OptionsError(f"agent-lineage: lineage_calls_log: {e}") from None
        if self.calls_log is not None:
            self.calls_log.close()
        self.calls_log = calls_log

    def _warn_about_streamed_requests(self) -> None:
        if ctx.options.stream_large_bodies:
            log.warning(
                "agent-lineage: stream_large_bodies=%s: LLM requests larger than that are streamed upstream before "
                "the addon sees their body, and go unstamped and unrecorded (responses stream through the addon "
                "anyway); set it above your largest request, e.g. 64m",
                ctx.options.stream_large_bodies,
            )

    # -- hooks --------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        self.unredacted[flow.id] = flow
        if self.driver is not None:
            self.driver.request(flow)
            if self.driver.unread:  # stamped from its headers: read the body once it is forwarded
                try:
                    asyncio.get_running_loop().call_soon(self.driver.catch_up)
                except RuntimeError:  # no event loop (hooks called by hand): the next hook catches up
                    pass

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if self.driver is None or flow.response is None:
            return
        stream = self.driver.streams(flow)
        self.driver.responseheaders(flow, stream=stream)
        if stream:
            driver = self.driver
            flow.response.stream = lambda chunk: driver.chunk(flow, chunk)

    def response(self, flow: http.HTTPFlow) -> None:
        self._redact(flow)
        if self.driver is not None:
            self.driver.response(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._redact(flow)
        if self.driver is not None:
            self.driver.error(flow)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        if self.driver is not None:
            self.driver.websocket_start(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if self.driver is None or flow.websocket is None:
            return
        call = self.driver.websocket_message(flow, flow.websocket.messages[-1])
        if call is not None and call.scope is not None and not call.scope.pending:
            # One connection carries many calls of one agent (Codex): the comment names the latest
            # call's place; the marker only a subagent's connection (side marks are per call).
            flow.comment = flow_comment(call.scope, Placement(None, self.console.path(call.scope)))
            if call.scope.depth > 0:
                flow.marked = SUBAGENT_MARKER

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        if self.driver is not None:
            self.driver.websocket_end(flow)

    def done(self) -> None:
        if self.driver is not None:
            self.driver.done()
        for flow in list(self.unredacted.values()):  # still in flight: the save addon writes them next
            self._redact(flow)
        contentview.unregister()

    def _show(self, flow: http.HTTPFlow, call: Call) -> None:
        """The call's lineage where mitmproxy's UIs show it: comment, marker, and the record the
        "LLM call" content view reads (saved with the flow)."""
        placement = self.console.begin(call)
        scope = call.scope
        assert scope is not None
        flow.comment = flow_comment(scope, placement)
        if marker := flow_marker(scope):
            flow.marked = marker
        flow.metadata[LINEAGE_KEY] = lineage_record(call, placement)

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


def _priority_levels() -> dict[str, int]:
    try:
        return parse_priority(ctx.options.lineage_priority)
    except ValueError as e:
        raise exceptions.OptionsError(f"lineage_priority: {e}") from None


def _size(option: str) -> int:
    """A size option's value in bytes ("64m", "512k", "1g", a plain number); OptionsError unless > 0."""
    raw = getattr(ctx.options, option)
    try:
        value = human.parse_size(raw)
    except ValueError:
        value = None
    if not value or value <= 0:
        raise exceptions.OptionsError(f"{option} must be a size such as 64m, not {raw!r}")
    return value


def _seconds(option: str, minimum: float | None = None) -> float:
    """A duration option's value; OptionsError unless it is a finite number above `minimum` (or > 0)."""
    raw = getattr(ctx.options, option)
    try:
        value = float(raw)
    except ValueError:
        raise exceptions.OptionsError(f"{option} must be a number of seconds, not {raw!r}") from None
    too_small = value < minimum if minimum is not None else value <= 0
    if too_small or not math.isfinite(value):
        bound = f">= {minimum:g}" if minimum is not None else "> 0"
        raise exceptions.OptionsError(f"{option} must be a finite number {bound}, not {raw!r}")
    return value


def _terminal_takes_colour() -> bool:
    """Colour for mitmdump writing to a terminal; none with NO_COLOR or TERM=dumb, and none in
    mitmweb and the mitmproxy console, whose event logs (the eventstore addon) show plain text."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    addons = ctx.master.addons
    return addons.get("termlog") is not None and addons.get("eventstore") is None and sys.stdout.isatty()
