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

from .calls import ResponseReader, start_call
from .codecs import MalformedBody
from .harness import load_table
from .lineage import PARENT_HEADER, lineage_headers
from .model import Call, Exchange
from .scopes import Scope, ScopeTracker, TrackerSettings

log = logging.getLogger("agent_lineage")
ORPHAN_WINDOW = 30.0


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
        # Side requests that name no session (HEAD probes, id-less quota probes): a session start
        # from their host claims them. Those that finished unclaimed wait in `_unclaimed`.
        self._orphans: dict[str, Call] = {}
        self._unclaimed: set[str] = set()
        self._claims: set[tuple[tuple[str, int], str | None]] = set()  # ((session, turn), orphan kind) claimed

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
        self._claim_orphans(call)
        self._release_evicted()
        if scope.pending:
            self._orphans[call.exchange_id] = call
            # Its session is not known yet: no id to stamp, but no stale parent either.
            return Outcome(call, {PARENT_HEADER: None} if self.settings.stamp else {})
        headers = lineage_headers(scope.agent_id, scope.parent_id) if self.settings.stamp else {}
        return Outcome(call, headers)

    def upgrade(self, exchange: Exchange) -> dict[str, str | None]:
        """Lineage headers for a WebSocket upgrade, from its headers alone (no body yet)."""
        lineage = self.tracker.lineage_from_headers(exchange.request_headers) if self.settings.stamp else None
        return lineage_headers(*lineage) if lineage else {}

    def response_reader(self, call: Call, status: int | None, headers: dict[str, str], t_first_byte: float | None) -> ResponseReader:
        call.t_first_byte = t_first_byte
        return ResponseReader(call, status, headers)

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
        if call.exchange_id in self._orphans:
            self._unclaimed.add(call.exchange_id)
        else:
            self._emit(call)
        return call

    def close(self) -> None:
        for orphan in sorted(self._orphans.values(), key=lambda c: c.t_start):
            self._release_orphan(orphan)  # never claimed: recorded as they are
        for sink in self.sinks:
            sink.close()

    def _emit(self, call: Call) -> None:
        for sink in self.sinks:
            try:
                sink.add(call)
            except Exception:  # a broken sink must not stop the traffic
                log.exception("agent-lineage: cannot record call %s", call.exchange_id)

    def _note_probe(self, exchange: Exchange) -> None:
        """Claude Code's `HEAD /` at start-up carries no id (and another user agent)."""
        placeholder = f"probe-{exchange.id}"
        probe = Call(
            exchange_id=exchange.id,
            api="http",
            path=exchange.path,
            client=exchange.client,
            headers=exchange.request_headers,
            t_start=exchange.t_request,
            side="probe",
        )
        probe.scope = Scope(placeholder, placeholder, None, 0, 0, False, side="probe", pending=True)
        self._orphans[exchange.id] = probe
        self._unclaimed.add(exchange.id)

    def _claim_orphans(self, owner: Call) -> None:
        """An agent CLI probes as it starts (one HEAD, maybe one quota probe), then opens a turn
        of its session, or first sends a side request naming the session it is starting. Each such
        start (a session's turn) claims the oldest waiting orphan of each kind from its host,
        within ORPHAN_WINDOW seconds."""
        for orphan in [o for o in self._orphans.values() if owner.t_start - o.t_start > ORPHAN_WINDOW]:
            self._release_orphan(orphan)
        scope: Scope = owner.scope
        starts_turn = scope.new_turn and scope.depth == 0 and scope.side is None
        names_new_session = scope.side is not None and not scope.pending and scope.turn == 0
        if not (starts_turn or names_new_session):
            return
        start = (scope.session_id, max(scope.turn, 1))  # a side request speaks for the turn to come
        host = owner.client.split(" ", 1)[0]
        for orphan in sorted(self._orphans.values(), key=lambda c: c.t_start):
            if owner.t_start >= orphan.t_start and orphan.client.split(" ", 1)[0] == host and (start, orphan.side) not in self._claims:
                self._claims.add((start, orphan.side))
                self._release_orphan(orphan, claimant=scope)

    def _release_orphan(self, orphan: Call, claimant: Scope | None = None) -> None:
        """Stop waiting: give it its claimant's session, and emit it now if it finished (else when
        it finishes). A HEAD request nobody claimed was not an agent's: it is dropped."""
        del self._orphans[orphan.exchange_id]
        if claimant is not None:
            orphan.scope = Scope(
                session_id=claimant.session_id,
                agent_id=claimant.session_id,
                parent_id=None,
                depth=0,
                turn=claimant.turn,
                new_turn=False,
                side=orphan.scope.side,
                client_name=claimant.client_name,
                evidence={"session": "side:claimed-by-next-turn-of-same-host"},
            )
        if orphan.exchange_id in self._unclaimed:
            self._unclaimed.discard(orphan.exchange_id)
            if not (orphan.api == "http" and orphan.scope.pending):
                self._emit(orphan)

    def _release_evicted(self) -> None:
        evicted = set(self.tracker.evicted)
        if evicted:
            self._claims = {claim for claim in self._claims if claim[0][0] not in evicted}
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
