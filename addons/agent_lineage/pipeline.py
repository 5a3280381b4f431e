"""The pure core behind both feeders: Exchange -> Call -> Scope -> lineage headers -> sinks.

The live addon calls `request` when a request is complete (before it is forwarded) and
`finish` when its response ends; the offline reader replays saved flows through the same two
calls in the same order, so both give the same Calls, ids and files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import orjson

from . import keys
from .calls import NotObserved, ResponseReader, start_call
from .codecs import MalformedBody, codec_for
from .harness import load_table
from .hints import client_hints
from .lineage import PARENT_HEADER, PRIORITY_HEADER, lineage_headers
from .model import Call, Exchange, Scope
from .scopes import Orphans, ScopeTracker
from .settings import Settings

log = logging.getLogger("agent_lineage")

__all__ = ["CallLog", "CallSink", "Outcome", "Pipeline", "Settings"]


class CallSink(Protocol):
    def add(self, call: Call) -> None: ...

    def session_evicted(self, session_id: str) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Outcome:
    """What the feeder does with a request: stamp these headers (None = remove) and follow the call."""

    call: Call
    headers: dict[str, str | None]


class Pipeline:
    def __init__(self, settings: Settings | None = None, sinks: list[CallSink] | None = None) -> None:
        self.settings = settings or Settings()
        self.sinks = sinks or []
        self.tracker = ScopeTracker(load_table(self.settings.harness_file), self.settings)
        self.orphans = Orphans()

    def request(self, exchange: Exchange) -> Outcome | None:
        """Scope an LLM request; None for other traffic and for requests we cannot read (logged)."""
        try:
            call = start_call(exchange, self.settings.max_decoded_bytes)
        except NotObserved as e:  # recorded (calls log) as a call we did not observe
            log.warning("agent-lineage: %s %s forwarded unchanged: %s", exchange.method, exchange.path, e)
            self._emit(e.call)
            return None
        except MalformedBody as e:
            log.warning("agent-lineage: %s %s forwarded unchanged: %s", exchange.method, exchange.path, e)
            return None
        if call is None:
            if exchange.method == "HEAD":
                self.orphans.note_probe(exchange)
            return None
        scope = self.tracker.begin(call)
        for orphan in self.orphans.claim(call):
            self._emit(orphan)
        self._release_evicted()
        if scope.pending:
            self.orphans.hold(call)
        if not self.settings.stamp:
            return Outcome(call, {})
        if scope.pending:
            # Its session is not known yet: no id to stamp, but no stale parent either.
            headers: dict[str, str | None] = {PARENT_HEADER: None}
        else:
            headers = lineage_headers(scope.agent_id, scope.parent_id)
        return Outcome(call, client_hints(exchange.request_headers) | headers | self._priority(call, scope))

    def _priority(self, call: Call, scope: Scope) -> dict[str, str | None]:
        """The request-priority hint of the call's scope, when configured and the client sent none."""
        kind = "side" if (scope.side or call.side) else "subagent" if scope.parent_id else "main"
        level = self.settings.priority.get(kind)
        if level is None or not self.settings.stamp or PRIORITY_HEADER in call.headers:
            return {}
        return {PRIORITY_HEADER: str(level)}

    def headers_before_body(self, exchange: Exchange) -> dict[str, str | None] | None:
        """The lineage headers `request` will stamp on this LLM request, when its headers alone
        decide them: the feeder stamps them and forwards the request, then calls `request` (which
        reads the body) before anything else. None when the body decides, and for other traffic."""
        if codec_for(exchange.method, exchange.path) is None:
            return None
        if not self.settings.stamp:
            return {}
        if self.settings.priority:  # the priority hint needs the body: is it a side request?
            return None
        lineage = self.tracker.lineage_before_body(exchange.request_headers, exchange.t_request)
        return client_hints(exchange.request_headers) | lineage_headers(*lineage) if lineage is not None else None

    def upgrade(self, exchange: Exchange) -> dict[str, str | None]:
        """Lineage headers for a WebSocket upgrade, from its headers alone (no body yet)."""
        lineage = self.tracker.lineage_from_headers(exchange.request_headers) if self.settings.stamp else None
        return lineage_headers(*lineage) if lineage else {}

    def response_reader(self, call: Call, status: int | None, headers: dict[str, str], t_first_byte: float | None) -> ResponseReader:
        call.t_first_byte = t_first_byte
        return ResponseReader(call, status, headers, self.settings.max_decoded_bytes)

    def learn_answered(self, reader: ResponseReader) -> bool:
        """A streamed answer is complete at the client, which may act on it at once (start the
        subagent its tool call asks for) before the end of the stream reaches us: learn from it
        now. False until the terminal event has passed."""
        response = reader.answered()
        if response is None:
            return False
        self.tracker.end(replace(reader.call, response=response))
        return True

    def finish(self, reader: ResponseReader, t_end: float | None, error: str | None = None) -> Call:
        call = reader.finish(t_end, error)
        if reader.problem:
            log.warning("agent-lineage: %s %s: %s (traffic forwarded unchanged)", call.api, call.path, reader.problem)
        self.tracker.end(call)
        if not self.orphans.finished(call):
            self._emit(call)
        return call

    def reload_harness(self, harness_file: str | None) -> None:
        """Use another harness file (HarnessTableError if it is not valid); sessions are kept."""
        self.tracker.table = load_table(harness_file)
        self.settings.harness_file = harness_file

    def close(self) -> None:
        for orphan in self.orphans.release_all():
            self._emit(orphan)
        for sink in self.sinks:
            sink.close()

    def _emit(self, call: Call) -> None:
        for sink in self.sinks:
            try:
                sink.add(call)
            except Exception:  # a broken sink must not stop the traffic
                log.exception("agent-lineage: cannot record call %s", call.exchange_id)

    def _release_evicted(self) -> None:
        evicted = self.tracker.conversations.evicted
        if evicted:
            self.orphans.forget_sessions(set(evicted))
        for session_id in evicted:
            for sink in self.sinks:
                sink.session_evicted(session_id)
        evicted.clear()


class CallLog:
    """Every finished call as one JSON line (the `lineage_calls_log` option): Calls for debugging and tests."""

    def __init__(self, path: str | Path, mask_keys: bool = False) -> None:
        self.file = open(path, "ab")
        self.mask_keys = mask_keys  # well-known API key patterns in the content masked (keys.py)

    def add(self, call: Call) -> None:
        line = orjson.dumps(call, option=orjson.OPT_APPEND_NEWLINE)
        self.file.write(keys.mask_keys(line) if self.mask_keys else line)
        self.file.flush()

    def session_evicted(self, session_id: str) -> None:
        pass

    def close(self) -> None:
        self.file.close()
