"""The one driver of the pipeline, fed by both feeders: mitmproxy's hooks live, saved flows offline.

Both call the same methods with mitmproxy flows (duck-typed: this module imports no mitmproxy),
in the order the hooks fire, so live and offline make the same decisions and write the same files.
The moment a streamed answer's terminal event passed to the client is recorded in the flow's
metadata live, and offline replays it at that moment: a subagent that starts after its parent's
answer but before the end of the parent's stream is the same subagent in both.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import flows
from .calls import ResponseReader
from .model import Call, Exchange
from .pipeline import Pipeline
from .websocket import ResponsesSocket, is_responses_upgrade

log = logging.getLogger("agent_lineage")

ANSWERED_KEY = "agent_lineage.answered"  # flow.metadata: when the terminal event passed (epoch seconds)
# flow.metadata: a live stream's chunks as [bytes, seconds after the first], so a replay can send the
# body again exactly as it arrived (mitmproxy saves a streamed body whole).
CHUNKS_KEY = "agent_lineage.chunks"


class InFlight:
    """An LLM call whose response has not ended: its reader and, for a streamed body, its chunks."""

    def __init__(self, call: Call, flow: Any) -> None:
        self.call = call
        self.flow = flow
        self.reader: ResponseReader | None = None
        self.chunks: list[bytes] | None = None  # a live stream, kept so the flow is saved whole
        self.chunk_times: list[float] = []
        self.body_fed = False  # the saved body went to the reader already (offline, when answered)
        self.answered = False


class Driver:
    def __init__(self, pipeline: Pipeline, on_call: Callable[[Any, Call], None] | None = None) -> None:
        self.pipeline = pipeline
        self.on_call = on_call  # told (flow, call) once a request is scoped, in arrival order
        self.in_flight: dict[str, InFlight] = {}  # flow id -> call
        self.sockets: dict[str, tuple[ResponsesSocket, Any]] = {}  # flow id -> Responses WebSocket
        self.unread: deque[tuple[Any, Exchange, dict[str, str | None]]] = deque()  # stamped, body not read yet

    # -- HTTP ---------------------------------------------------------------------------

    def request(self, flow: Any) -> None:
        """A complete request, before it is forwarded: stamp its lineage headers. When its headers
        alone decide them, its body is read later, by `catch_up`, which the feeder calls once the
        request is on its way (and every hook calls first, so the pipeline sees every request in
        arrival order, live and offline alike)."""
        self.catch_up()
        try:
            exchange = flows.request_exchange(flow)
            if is_responses_upgrade(exchange.method, exchange.path, exchange.request_headers):
                _stamp(flow, exchange, self.pipeline.upgrade(exchange))
                return
            early = self.pipeline.headers_before_body(exchange)
            if early is not None:
                _stamp(flow, exchange, early)
                self.unread.append((flow, exchange, early))
                return
            outcome = self.pipeline.request(exchange)
        except Exception:  # never turn a working request into a failing one
            log.exception("agent-lineage: request %s %s forwarded unchanged", flow.request.method, flows.redact_query(flow.request.path))
            return
        if outcome is not None:
            _stamp(flow, exchange, outcome.headers)
            self._follow(flow, outcome.call)

    def catch_up(self) -> None:
        """Read the bodies of the requests stamped from their headers alone, oldest first."""
        while self.unread:
            flow, exchange, stamped = self.unread.popleft()
            try:
                outcome = self.pipeline.request(exchange)
            except Exception:
                log.exception("agent-lineage: cannot record request %s %s", flow.request.method, flows.redact_query(flow.request.path))
                continue
            if outcome is None:
                continue  # an unreadable body (logged): it went out with the lineage of its headers
            if outcome.headers != stamped:  # headers_before_body promised otherwise: a bug
                log.error("agent-lineage: %s was stamped %s from its headers, its body says %s", exchange.id, stamped, outcome.headers)
            self._follow(flow, outcome.call)

    def _follow(self, flow: Any, call: Call) -> None:
        self.in_flight[flow.id] = InFlight(call, flow)
        if self.on_call is not None:
            self.on_call(flow, call)

    def responseheaders(self, flow: Any, stream: bool) -> None:
        """The response began. `stream`: the body will pass chunk by chunk through `chunk` (live);
        otherwise it arrives whole with `response` (buffered, or a saved flow)."""
        self.catch_up()
        live = self.in_flight.get(flow.id)
        if live is not None and live.reader is None:
            self._start_reader(live)
            if stream:
                live.chunks = []

    def streams(self, flow: Any) -> bool:
        """Whether this flow's response should pass through `chunk` as it arrives."""
        self.catch_up()
        live = self.in_flight.get(flow.id)
        response = flow.response
        return (
            live is not None
            and response is not None
            and ("text/event-stream" in response.headers.get("content-type", "") or response.stream is True)
        )

    def chunk(self, flow: Any, data: bytes) -> bytes:
        """One chunk of a live streamed body, on its way to the client unchanged."""
        if self.unread:
            self.catch_up()
        live = self.in_flight.get(flow.id)
        if live is None or live.reader is None:
            return data
        if live.chunks is not None and data:
            live.chunks.append(data)
            live.chunk_times.append(time.time())
        live.reader.feed(data)
        if not live.answered:
            self._learn_answered(live, time.time())
        return data

    def answered(self, flow: Any) -> None:
        """Offline: the recorded moment the answer reached the client; learn from it now."""
        self.catch_up()
        live = self.in_flight.get(flow.id)
        if live is None or live.answered:
            return
        reader = live.reader or self._start_reader(live)
        reader.feed(flow.response.raw_content or b"")
        live.body_fed = True
        self._learn_answered(live, None)

    def response(self, flow: Any) -> Call | None:
        self.catch_up()
        live = self.in_flight.pop(flow.id, None)
        if live is None:
            return None
        self._take_body(live)
        return self._finish(live, None)

    def error(self, flow: Any) -> Call | None:
        self.catch_up()
        live = self.in_flight.pop(flow.id, None)
        if live is None:
            return None
        self._take_body(live)
        return self._finish(live, flows.error_text(flow))

    # -- WebSocket (Codex's Responses over a WebSocket) ------------------------------------

    def websocket_start(self, flow: Any) -> None:
        self.catch_up()
        exchange = flows.request_exchange(flow)
        if is_responses_upgrade(exchange.method, exchange.path, exchange.request_headers):
            self.sockets[flow.id] = (ResponsesSocket(self.pipeline, exchange), flow)

    def websocket_message(self, flow: Any, message: Any) -> Call | None:
        self.catch_up()
        entry = self.sockets.get(flow.id)
        if entry is None:
            return None
        try:
            return entry[0].message(message.from_client, message.content, message.timestamp)
        except Exception:
            log.exception("agent-lineage: cannot record a websocket message of %s", flows.redact_query(flow.request.path))
            return None

    def websocket_end(self, flow: Any) -> Call | None:
        self.catch_up()
        entry = self.sockets.pop(flow.id, None)
        if entry is None:
            return None
        end = flow.websocket.timestamp_end if flow.websocket else None
        return self._close_socket(entry[0], flow, end, flows.error_text(flow))

    # -- shutdown -----------------------------------------------------------------------

    def done(self) -> None:
        """The proxy stops: finish what is still in flight with what arrived, then close the sinks."""
        self.catch_up()
        for live in list(self.in_flight.values()):
            self._finish(live, "proxy shut down before the response ended")
        self.in_flight.clear()
        for socket, flow in self.sockets.values():
            self._close_socket(socket, flow, None, "proxy shut down before the response ended")
        self.sockets.clear()
        self.pipeline.close()

    # -- helpers ------------------------------------------------------------------------

    def _take_body(self, live: InFlight) -> None:
        """At the end of a response: a live stream's chunks go back into the flow (so `-w` saves
        the body); a body that arrived whole (buffered, saved, `mitmdump -r`) goes to the reader."""
        response = live.flow.response
        if response is None:
            return
        reader = live.reader or self._start_reader(live)
        if live.chunks:
            response.raw_content = b"".join(live.chunks)
            first = live.chunk_times[0]
            live.flow.metadata[CHUNKS_KEY] = [[len(c), round(t - first, 6)] for c, t in zip(live.chunks, live.chunk_times)]
        elif not live.body_fed:  # no chunk passed: `mitmdump -r` streams nothing
            reader.feed(response.raw_content or b"")

    def _start_reader(self, live: InFlight) -> ResponseReader:
        status, headers, t_first_byte = flows.response_parts(live.flow)
        live.reader = self.pipeline.response_reader(live.call, status, headers, t_first_byte)
        return live.reader

    def _learn_answered(self, live: InFlight, t: float | None) -> None:
        assert live.reader is not None
        try:
            live.answered = self.pipeline.learn_answered(live.reader)
        except Exception:
            live.answered = True
            log.exception("agent-lineage: cannot learn from the answer of %s", flows.redact_query(live.flow.request.path))
        if live.answered and t is not None:
            live.flow.metadata[ANSWERED_KEY] = t

    def _finish(self, live: InFlight, error: str | None) -> Call | None:
        if live.reader is None:
            live.reader = self.pipeline.response_reader(live.call, None, {}, None)
        try:
            return self.pipeline.finish(live.reader, flows.end_time(live.flow), error)
        except Exception:
            log.exception("agent-lineage: cannot record %s", flows.redact_query(live.flow.request.path))
            return None

    def _close_socket(self, socket: ResponsesSocket, flow: Any, t: float | None, error: str | None) -> Call | None:
        try:
            return socket.close(t, error)
        except Exception:
            log.exception("agent-lineage: cannot record the end of %s", flows.redact_query(flow.request.path))
            return None


def _stamp(flow: Any, exchange: Exchange, headers: dict[str, str | None]) -> None:
    if headers:
        flows.remember_client_lineage(flow, exchange.request_headers)
    for name, value in headers.items():
        if value is None:
            flow.request.headers.pop(name, None)
        else:
            flow.request.headers[name] = value  # replaces every field of that name, any case
