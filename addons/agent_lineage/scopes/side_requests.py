"""Side requests: calls that keep their session's lineage but are no agent step (titles, token
counts, quota probes). One that names no session is an orphan until a session start claims it."""

from __future__ import annotations

from ..harness import HarnessTable, is_one_shot
from ..model import Call, Exchange, Scope
from .conversations import Conversations, TrackedAgent, TrackedSession
from .delegation import MIN_QUOTE

ORPHAN_WINDOW = 30.0  # an orphan is claimed by a session start within this many seconds, or never
EARLY_SIDE_SECONDS = 5.0  # a side request races its session's first request by less than this


def is_side_of(agent: TrackedAgent, call: Call, context: tuple[bytes, bytes]) -> bool:
    """A request under the agent's ids that is not its conversation: the shape of a one-shot
    request and a system prompt other than the agent's own."""
    return agent.context is not None and context[0] != agent.context[0] and is_one_shot(call)


def all_text(call: Call) -> str:
    """Everything a one-shot request quotes: its system prompt (a transcript may sit there) and messages."""
    return "\n".join([call.system, *(m.text for m in call.messages)])


def quoted_session(conversations: Conversations, call: Call, exclude: TrackedSession | None = None) -> TrackedSession | None:
    """The most recently active session of the same client whose first prompt this call quotes
    (in its messages, or in its system prompt, where summaries and judges put a transcript)."""
    text = all_text(call)
    hosts = [
        s
        for s in conversations.sessions.values()
        if s is not exclude and s.client == call.client and len(s.first_prompt) >= MIN_QUOTE and s.first_prompt in text
    ]
    return max(hosts, key=lambda s: s.last_t) if hosts else None


def adopt(conversations: Conversations, call: Call, agent: TrackedAgent, scope: Scope) -> None:
    """A side request that arrives under a fresh wire session (Codex titles): if it quotes a
    known session's prompt, it belongs to that session."""
    host = quoted_session(conversations, call, exclude=agent.session)
    if host is not None and host.root is not None:
        conversations.drop_agent(agent)
        scope.session_id = host.id
        scope.agent_id = host.root.id
        scope.parent_id = None
        scope.depth = 0
        scope.evidence["agent"] = "side:quotes-session-prompt"


def reattach_early(table: HarnessTable, conversations: Conversations, call: Call, session: TrackedSession) -> None:
    """A new session's first request: a one-shot request of the same client that quotes its prompt
    and is still in flight opened a session of its own moments ago (an SDK app asks for a title
    in parallel with its first call, and the title can reach us first). That request was stamped
    with its own id as it went out; from now on it is a side request of this session, so its
    trajectory entry lands here and its own session, which made no other call, is forgotten."""
    prompt = session.first_prompt
    if len(prompt) < MIN_QUOTE or session.root is None:
        return
    for early in list(conversations.sessions.values()):
        opener = early.one_shot
        if (
            opener is None
            or early is session
            or early.client != call.client
            or opener.t_end is not None
            or call.t_start - opener.t_start > EARLY_SIDE_SECONDS
            or len(early.agents) != 1
            or prompt not in all_text(opener)
        ):
            continue
        assert opener.scope is not None
        opener.scope = Scope(
            session_id=session.id,
            agent_id=session.root.id,
            turn=session.turn,
            side=table.one_shot_kind(opener),
            client_name=opener.scope.client_name,
            evidence={"agent": "side:quotes-session-prompt", "session": "re-attached:arrived-before-its-session"},
        )
        conversations.drop_agent(early.agents[0])


class Orphans:
    """Side requests that name no session (HEAD probes, id-less quota probes), waiting for a session
    start from their host. The caller records what `claim`, `finished` and `release_all` hand back."""

    def __init__(self) -> None:
        self._waiting: dict[str, Call] = {}
        self._finished: set[str] = set()  # waiting orphans whose exchange has ended
        self._claims: set[tuple[tuple[str, int], str | None]] = set()  # ((session, turn), orphan kind) claimed

    def hold(self, call: Call) -> None:
        self._waiting[call.exchange_id] = call

    def note_probe(self, exchange: Exchange) -> None:
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
        probe.scope = Scope(session_id=placeholder, agent_id=placeholder, side="probe", pending=True)
        self._waiting[exchange.id] = probe
        self._finished.add(exchange.id)

    def finished(self, call: Call) -> bool:
        """Whether this finished call is a waiting orphan (recorded once claimed, not now)."""
        if call.exchange_id not in self._waiting:
            return False
        self._finished.add(call.exchange_id)
        return True

    def claim(self, owner: Call) -> list[Call]:
        """An agent CLI probes as it starts (one HEAD, maybe one quota probe), then opens a turn
        of its session, or first sends a side request naming the session it is starting. Each such
        start (a session's turn) claims the oldest waiting orphan of each kind from its host,
        within ORPHAN_WINDOW seconds. Returns the released calls that are ready to record."""
        ready = [c for o in self._expired(owner.t_start) if (c := self._release(o)) is not None]
        scope = owner.scope
        assert scope is not None
        starts_turn = scope.new_turn and scope.depth == 0 and scope.side is None
        names_new_session = scope.side is not None and not scope.pending and scope.turn == 0
        if not (starts_turn or names_new_session):
            return ready
        start = (scope.session_id, max(scope.turn, 1))  # a side request speaks for the turn to come
        host = _host(owner)
        for orphan in sorted(self._waiting.values(), key=lambda c: c.t_start):
            if owner.t_start >= orphan.t_start and _host(orphan) == host and (start, orphan.side) not in self._claims:
                self._claims.add((start, orphan.side))
                released = self._release(orphan, claimant=scope)
                if released is not None:
                    ready.append(released)
        return ready

    def release_all(self) -> list[Call]:
        """At shutdown: orphans nobody claimed, recorded as they are."""
        waiting = sorted(self._waiting.values(), key=lambda c: c.t_start)
        return [c for o in waiting if (c := self._release(o)) is not None]

    def forget_sessions(self, session_ids: set[str]) -> None:
        self._claims = {claim for claim in self._claims if claim[0][0] not in session_ids}

    def _expired(self, now: float) -> list[Call]:
        return [o for o in self._waiting.values() if now - o.t_start > ORPHAN_WINDOW]

    def _release(self, orphan: Call, claimant: Scope | None = None) -> Call | None:
        """Stop waiting: give it its claimant's session; it is ready to record if it finished (else
        the caller records it when it finishes). A HEAD request nobody claimed was not an agent's."""
        del self._waiting[orphan.exchange_id]
        assert orphan.scope is not None
        if claimant is not None:
            orphan.scope = Scope(
                session_id=claimant.session_id,
                agent_id=claimant.session_id,
                turn=claimant.turn,
                side=orphan.scope.side,
                client_name=claimant.client_name,
                evidence={"session": "side:claimed-by-next-turn-of-same-host"},
            )
        if orphan.exchange_id not in self._finished:
            return None
        self._finished.discard(orphan.exchange_id)
        return None if orphan.api == "http" and orphan.scope.pending else orphan


def _host(call: Call) -> str:
    return call.client.split(" ", 1)[0]
