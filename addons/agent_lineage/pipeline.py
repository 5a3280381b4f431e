"""The pure core behind both feeders: Exchange -> Call -> Scope -> lineage headers -> sinks.

The live addon calls `request` when a request is complete (before it is forwarded) and
`finish` when its response ends; the offline reader replays saved flows through the same two
calls in the same order, so both give the same Calls, ids and files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

from .calls import ResponseReader, start_call
from .codecs import MalformedBody
from .harness import load_table
from .lineage import lineage_headers
from .model import Call, Exchange
from .scopes import Scope, ScopeTracker, TrackerSettings

log = logging.getLogger("agent_lineage")
PROBE_WINDOW = 30.0


class CallSink(Protocol):
    def add(self, call: Call) -> None: ...

    def session_evicted(self, session_id: str) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Settings:
    stamp: bool = True
    respect_client_lineage: bool = True
    turn_gap_seconds: float = 900.0
    session_ttl_seconds: float = 3600.0
    harness_file: str | None = None


@dataclass(slots=True)
class Outcome:
    """What the feeder does with a request: stamp these headers (None = remove) and follow the call."""

    call: Call
    headers: dict[str, str | None]


class Pipeline:
    def __init__(self, settings: Settings | None = None, sinks: list[CallSink] | None = None) -> None:
        self.settings = settings or Settings()
        self.sinks = sinks or []
        self.tracker = ScopeTracker(
            load_table(self.settings.harness_file),
            TrackerSettings(
                respect_client_lineage=self.settings.respect_client_lineage,
                turn_gap_seconds=self.settings.turn_gap_seconds,
                session_ttl_seconds=self.settings.session_ttl_seconds,
            ),
        )
        self._probes: list[Call] = []  # HEAD probes waiting for the session they open

    def request(self, exchange: Exchange) -> Outcome | None:
        """Scope an LLM request; None for other traffic and for requests we cannot read (logged)."""
        try:
            call = start_call(exchange)
        except MalformedBody as e:
            log.warning("agent-lineage: %s %s forwarded unchanged: %s", exchange.method, exchange.path, e)
            return None
        if call is None:
            if exchange.method == "HEAD":
                self._note_probe(exchange)
            return None
        scope = self.tracker.begin(call)
        self._claim_probes(call)
        self._release_evicted()
        headers = lineage_headers(scope.agent_id, scope.parent_id) if self.settings.stamp else {}
        return Outcome(call, headers)

    def upgrade(self, exchange: Exchange) -> dict[str, str | None]:
        """Lineage headers for a WebSocket upgrade, from its headers alone (no body yet)."""
        lineage = self.tracker.lineage_from_headers(exchange.request_headers) if self.settings.stamp else None
        return lineage_headers(*lineage) if lineage else {}

    def response_reader(self, call: Call, status: int | None, headers: dict[str, str], t_first_byte: float | None) -> ResponseReader:
        call.t_first_byte = t_first_byte
        return ResponseReader(call, status, headers)

    def finish(self, reader: ResponseReader, t_end: float | None, error: str | None = None) -> Call:
        call = reader.finish(t_end, error)
        if reader.problem:
            log.warning("agent-lineage: %s %s: %s (traffic forwarded unchanged)", call.api, call.path, reader.problem)
        self.tracker.end(call)
        self._emit(call)
        return call

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def _emit(self, call: Call) -> None:
        for sink in self.sinks:
            try:
                sink.add(call)
            except Exception:  # a broken sink must not stop the traffic
                log.exception("agent-lineage: cannot record call %s", call.exchange_id)

    def _note_probe(self, exchange: Exchange) -> None:
        self._probes.append(
            Call(
                exchange_id=exchange.id,
                api="http",
                path=exchange.path,
                client=exchange.client,
                headers=exchange.request_headers,
                t_start=exchange.t_request,
                side="probe",
            )
        )

    def _claim_probes(self, owner: Call) -> None:
        """Claude Code's `HEAD /` carries no id (and another user agent): it is a side request of
        the session of the next LLM call from the same host, within PROBE_WINDOW seconds."""
        host = owner.client.split(" ", 1)[0]
        waiting = []
        for probe in self._probes:
            age = owner.t_start - probe.t_start
            if age > PROBE_WINDOW:
                continue  # nothing claimed it: it was not an agent's probe
            if age < 0 or probe.client.split(" ", 1)[0] != host:
                waiting.append(probe)
                continue
            probe.scope = Scope(
                session_id=owner.scope.session_id,
                agent_id=owner.scope.session_id,
                parent_id=None,
                depth=0,
                turn=owner.scope.turn,
                new_turn=False,
                side="probe",
                client_name=owner.scope.client_name,
                evidence={"session": "probe:next-call-from-same-host"},
            )
            self._emit(probe)
        self._probes = waiting

    def _release_evicted(self) -> None:
        for session_id in self.tracker.evicted:
            for sink in self.sinks:
                sink.session_evicted(session_id)
        self.tracker.evicted.clear()


class CallLog:
    """Every finished call as one JSON line (the `lineage_calls_log` option): Calls for debugging and tests."""

    def __init__(self, path: str | Path) -> None:
        self.file = open(path, "ab")

    def add(self, call: Call) -> None:
        self.file.write(orjson.dumps(call, option=orjson.OPT_APPEND_NEWLINE))
        self.file.flush()

    def session_evicted(self, session_id: str) -> None:
        pass

    def close(self) -> None:
        self.file.close()
