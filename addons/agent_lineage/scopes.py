"""ScopeTracker: from a stream of Calls to sessions, agents (nested to any depth) and turns.

A decision is made when a request arrives (lineage headers go out with it) and the tracker
learns from each response when it ends. Evidence, strongest first:

1. lineage the client already sent (`x-dynamo-*`), unless told to override it;
2. harness ids (harness.yaml: Claude Code, Codex, OpenCode headers and body fields);
3. conversation threading: a request whose message list extends an earlier call's list
   (request plus response) continues that conversation. States are indexed by
   (client, API, opening messages, length, last message) and a request is looked up from its end
   backwards, so the cost is proportional to its new messages. Tool results, Responses
   `previous_response_id` and `prompt_cache_key` link too;
4. content and timing: a new conversation whose first real user text is (mostly) an argument
   of a tool call of the same client (open, or closed moments ago for asynchronous spawns) is
   that call's subagent; failing that, a delegation call made just before decides if it names no
   task and the newcomer runs under a system prompt of its own (or its client marks it as a
   subagent). A fresh user message (or an idle gap) opens a turn of the root session;
5. side requests (token counts, titles, quota probes) keep their session's lineage but are
   marked so they stay out of the agent's steps; one that names no session is `pending` until a
   session start of its host claims it (Pipeline).

Every decision records the evidence behind it in `Scope.evidence`. Time is the traffic's own
(call timestamps), never the wall clock, so a replay gives the same ids and decisions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .harness import HarnessIds, HarnessTable
from .ids import derived_id, sanitize_id
from .lineage import PARENT_HEADER, SESSION_HEADER
from .model import Call, Message

MIN_QUOTE = 12  # shortest tool argument text that may identify a subagent's task
RECENT_CLOSE_SECONDS = 120.0  # asynchronous spawns (Codex) answer before the child starts
CHILD_START_SECONDS = 30.0  # a subagent starts right after its delegation call: later, timing alone proves nothing
FRESH_TEXT_NOISE = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)


@dataclass(slots=True)
class Scope:
    """Where one call belongs. Ids are already safe for headers and file names."""

    session_id: str  # the root session (one trajectory)
    agent_id: str  # the agent scope that made the request: x-dynamo-session-id
    parent_id: str | None  # the immediately enclosing agent: x-dynamo-parent-session-id
    depth: int  # 0 for the root agent
    turn: int  # 1-based user turn of the root session
    new_turn: bool
    side: str | None = None  # side request kind; side requests are not agent steps
    client_name: str | None = None  # harness client (claude-code, codex, ...) if recognised
    delegated_by: str | None = None  # the parent's tool call that started this agent (first call only)
    delegations: dict[str, str] = field(default_factory=dict)  # tool call id -> child agent learnt now
    evidence: dict[str, str] = field(default_factory=dict)
    # A side request that names no session (an id-less quota probe): a session start of its host
    # claims it (Pipeline); until then its ids are placeholders and nothing is stamped.
    pending: bool = False


@dataclass(slots=True)
class _ToolUse:
    name: str
    quotes: list[str]  # argument strings long enough to identify a task
    delegation: bool
    t_emitted: float
    t_closed: float | None = None
    child: _Agent | None = None


@dataclass(slots=True, eq=False)
class _Agent:
    id: str
    session: _Session
    parent: _Agent | None
    client: str
    raw_id: str | None = None  # the harness id as sent, before sanitising
    depth: int = 0
    tools: dict[str, _ToolUse] = field(default_factory=dict)  # tool call id -> use
    children: list[_Agent] = field(default_factory=list)
    delegated_by: str | None = None
    last_response_len: int = -1  # message count of the state after its latest response
    context: tuple[bytes, bytes] | None = None  # fingerprints of its latest system prompt and tools
    failed_lengths: set[int] = field(default_factory=set)  # request lengths whose call failed
    keys: list[tuple] = field(default_factory=list)  # index entries to drop on eviction


@dataclass(slots=True, eq=False)
class _Session:
    id: str
    client: str
    root: _Agent | None = None
    turn: int = 0
    turn_ids: set[str] = field(default_factory=set)
    first_prompt: str = ""
    last_t: float = 0.0
    agents: list[_Agent] = field(default_factory=list)


@dataclass(slots=True)
class TrackerSettings:
    respect_client_lineage: bool = True
    turn_gap_seconds: float = 900.0
    session_ttl_seconds: float = 3600.0


class ScopeTracker:
    def __init__(self, table: HarnessTable, settings: TrackerSettings | None = None) -> None:
        self.table = table
        self.settings = settings or TrackerSettings()
        self.sessions: dict[str, _Session] = {}
        self.agents: dict[str, _Agent] = {}
        self._states: dict[tuple, _Agent] = {}  # (client, api, anchor, length, last fp) -> agent
        self._tool_owner: dict[str, _Agent] = {}
        self._response_owner: dict[str, _Agent] = {}
        self._cache_keys: dict[str, _Session] = {}
        self._indexes: dict[str, dict] = {
            "state": self._states,
            "tool": self._tool_owner,
            "response": self._response_owner,
            "cache": self._cache_keys,
        }
        self.evicted: list[str] = []  # session ids dropped since the caller last looked
        self._next_eviction = 0.0

    # -- requests ---------------------------------------------------------------------

    def begin(self, call: Call) -> Scope:
        """Decide the scope of a request before it is forwarded."""
        self._evict_idle(call.t_start)
        ids = self.table.identify(call)
        side = call.side or self.table.side_of(call, ids)
        # Side requests are conversations of their own: they neither continue nor extend one.
        context = self._context(call, ids)
        anchor = self._anchor(call.messages) if call.messages and not side else b""
        thread = None if side else self._thread(call, context, anchor)
        call.new_messages = call.messages[thread[1]:] if thread else list(call.messages)
        scope = (
            self._from_client_lineage(call)
            or (self._from_harness(call, ids, thread) if ids and (ids.root or ids.agent) else None)
            or self._infer(call, ids, side, thread, context)
        )
        scope.side = scope.side or side
        scope.client_name = ids.client if ids else None
        call.scope = scope
        if ids:
            for role, where in ids.evidence.items():
                scope.evidence.setdefault(f"{role}_id", where)
        if scope.pending:
            return scope
        agent = self.agents[scope.agent_id]
        if scope.side is None:
            self._register_request(call, agent, context, anchor)
            self._close_answered(call, agent, scope)
            self._decide_turn(call, agent, ids, scope, restarted=thread is None and agent.last_response_len > 0)
        else:
            scope.turn = agent.session.turn
            scope.evidence.setdefault("side", f"side:{scope.side}")
        agent.session.last_t = max(agent.session.last_t, call.t_start)
        return scope

    # -- responses --------------------------------------------------------------------

    def end(self, call: Call) -> None:
        """Learn from a finished call: its output extends the conversation, its tool calls open.
        Learning the same answer twice changes nothing."""
        scope: Scope | None = call.scope
        if scope is None or scope.side is not None or scope.pending or scope.agent_id not in self.agents:
            return
        agent = self.agents[scope.agent_id]
        output = call.response.output
        if call.response.id:
            self._remember("response", call.response.id, agent)
        if call.error or output is None:
            agent.failed_lengths.add(len(call.messages))
            return
        agent.failed_lengths.discard(len(call.messages))
        if not call.messages:
            return
        length = len(call.messages) + 1
        self._index_state(call, self._anchor(call.messages), length, output, agent)
        agent.last_response_len = length
        t = call.t_end or call.t_start
        for tool_call in output.tool_calls:
            if not tool_call.id or tool_call.id in agent.tools:  # learnt already, when the answer passed
                continue
            agent.tools[tool_call.id] = _ToolUse(
                tool_call.name,
                _quotes(tool_call.parsed_arguments()),
                self.table.is_delegation(scope.client_name, tool_call.name),
                t,
            )
            self._remember("tool", tool_call.id, agent)

    # -- the decision, by evidence ------------------------------------------------------

    def lineage_from_headers(self, headers: dict[str, str]) -> tuple[str, str | None] | None:
        """(agent id, parent id) from the client's lineage or harness headers alone, without
        recording anything: for a WebSocket upgrade, whose messages come later."""
        lineage = self._client_lineage(headers)
        if lineage is not None:
            return lineage
        probe = Call(exchange_id="", api="", path="", client="", headers=headers, t_start=0.0)
        ids = self.table.identify(probe)
        if ids is None or not (ids.root or ids.agent):
            return None
        agent_id, parent_id, _ = _harness_lineage(ids)
        return agent_id, parent_id

    def _client_lineage(self, headers: dict[str, str]) -> tuple[str, str | None] | None:
        raw = headers.get(SESSION_HEADER, "").strip()
        if not raw or not self.settings.respect_client_lineage:
            return None
        raw_parent = headers.get(PARENT_HEADER, "").strip()
        return sanitize_id(raw), sanitize_id(raw_parent) if raw_parent else None

    def _from_client_lineage(self, call: Call) -> Scope | None:
        lineage = self._client_lineage(call.headers)
        if lineage is None:
            return None
        agent_id, parent_id = lineage
        # A parent equal to the agent is kept as sent (the rule never skips a same-id parent).
        agent = self._agent_by_id(agent_id, parent_id if parent_id != agent_id else None, None, call)
        scope = self._scope(agent, {"agent": f"client-lineage:{SESSION_HEADER}"})
        scope.parent_id = parent_id
        return scope

    def _from_harness(self, call: Call, ids: HarnessIds, thread: tuple[_Agent, int, str] | None) -> Scope:
        agent_id, parent_id, root_id = _harness_lineage(ids)
        known = agent_id in self.agents
        agent = self._agent_by_id(agent_id, parent_id, root_id, call, raw_id=ids.agent or ids.root)
        evidence = {"agent": f"harness:{ids.evidence.get('agent') or ids.evidence.get('root')}"}
        if thread is not None:
            evidence["messages"] = f"{thread[2]}:{thread[0].id}"
        scope = self._scope(agent, evidence)
        if ids.side and not known and ids.root and agent.parent is None:
            self._adopt_side_request(call, agent, scope)
        if not known and agent.parent is not None:
            self._link_delegation(call, agent, scope)
        return scope

    def _infer(
        self, call: Call, ids: HarnessIds | None, side: str | None, thread: tuple[_Agent, int, str] | None, context: tuple[bytes, bytes]
    ) -> Scope:
        if thread is not None:
            agent, prefix, how = thread
            forked_from = self._fork_of(call, agent, prefix)
            if forked_from is None:
                return self._scope(agent, {"agent": how})
            child = self._new_agent(forked_from.session, forked_from, call, derived_id("fork", forked_from.id, str(prefix)))
            return self._scope(child, {"agent": "fork", "parent": f"fork-of:{how}"})
        # A client that marks its subagents' requests says which new conversations are roots.
        marked = self.table.is_subagent(call, ids)
        delegation = None if side or marked is False else self._delegating_tool(call, context[0], marked is True)
        if delegation is not None:
            parent, call_id, how = delegation
            child = self._new_agent(parent.session, parent, call, derived_id("agent", parent.id, call_id))
            self._claim(parent, call_id, child)
            scope = self._scope(child, {"agent": "new-conversation", "parent": how})
            scope.delegated_by = call_id
            return scope
        if side is not None or _looks_like_side_request(call):
            host = self._quoted_session(call)
            if host is not None and host.root is not None:
                scope = self._scope(host.root, {"agent": "side:quotes-session-prompt"})
                scope.side = side or "quotes-session"
                return scope
        if side is not None and (delegator := self._delegator_quoted(call)) is not None:
            # A subagent's side request sent before the subagent's own first request (Gemini
            # CLI's router scores the task it was given): the delegating agent's.
            scope = self._scope(delegator, {"agent": "side:quotes-delegated-task"})
            scope.side = side
            return scope
        if side is not None:
            placeholder = derived_id("side", call.client, call.system, _first_user_text(call.messages))
            return Scope(placeholder, placeholder, None, 0, 0, False, side=side, pending=True, evidence={"agent": "pending:next-turn-of-client"})
        cached = self._cache_keys.get(str(call.fields.get("prompt_cache_key") or ""))
        if cached is not None and cached.root is not None:
            # Same prompt cache key, a conversation that continues none we know: a restart of
            # the session's root agent (context compaction).
            return self._scope(cached.root, {"agent": "prompt-cache-key"})
        session_id = self._unique(derived_id("sess", call.client, call.api, call.system, _first_user_text(call.messages)))
        session = self._new_session(session_id, call)
        root = self._new_agent(session, None, call, session_id)
        return self._scope(root, {"agent": "new-conversation", "session": "content-hash"})

    # -- threading ----------------------------------------------------------------------

    def _thread(self, call: Call, context: tuple[bytes, bytes], anchor: bytes) -> tuple[_Agent, int, str] | None:
        """The agent whose conversation this request continues, the prefix length, and how."""
        messages = call.messages
        if messages:
            for i in range(len(messages) - 1, -1, -1):
                agent = self._states.get((call.client, call.api, anchor, i + 1, messages[i].fingerprint()))
                if agent is not None and agent.id in self.agents:
                    # A conversation keeps its system prompt or its tools: a request changing both
                    # (a title call repeating the opening message) starts one of its own.
                    if agent.context is None or context[0] == agent.context[0] or context[1] == agent.context[1]:
                        return agent, i + 1, "prefix"
                    break
        for i in range(len(messages) - 1, -1, -1):
            for result in messages[i].tool_results:
                agent = self._tool_owner.get(result.call_id)
                if agent is not None and agent.id in self.agents:
                    return agent, i, "tool-result"
        previous = call.fields.get("previous_response_id")
        if isinstance(previous, str) and previous in self._response_owner:
            return self._response_owner[previous], 0, "previous-response-id"
        return None

    def _fork_of(self, call: Call, agent: _Agent, prefix: int) -> _Agent | None:
        """A request that takes the agent's latest state but leaves its open tool calls unanswered
        is a forked subagent (the APIs require every tool call to be answered before going on)."""
        if prefix != agent.last_response_len or prefix >= len(call.messages):
            return None
        open_ids = {i for i, use in agent.tools.items() if use.t_closed is None}
        if not open_ids:
            return None
        answered = {r.call_id for m in call.messages[prefix:] for r in m.tool_results}
        return agent if not (open_ids & answered) else None

    def _register_request(self, call: Call, agent: _Agent, context: tuple[bytes, bytes], anchor: bytes) -> None:
        agent.context = context
        if call.messages:
            self._index_state(call, anchor, len(call.messages), call.messages[-1], agent)
        key = call.fields.get("prompt_cache_key")
        if isinstance(key, str) and key and agent.parent is None:
            self._remember("cache", key, agent.session)

    def _index_state(self, call: Call, anchor: bytes, length: int, last: Message, agent: _Agent) -> None:
        self._remember("state", (call.client, call.api, anchor, length, last.fingerprint()), agent)

    def _anchor(self, messages: list[Message]) -> bytes:
        """What identifies a conversation from its start: its first message and its first real
        user text (harnesses open every conversation with the same boilerplate, such as Codex's
        environment context)."""
        h = hashlib.blake2b(messages[0].fingerprint(), digest_size=16)
        task = next((m for m in messages[:8] if m.role == "user" and m.text and not self.table.is_chatter(m.text)), None)
        if task is not None:
            h.update(task.fingerprint())
        return h.digest()

    def _remember(self, index: str, key: object, value: _Agent | _Session) -> None:
        """Index `key`; the entry is dropped when its session is evicted. Indexing it again (an
        answer learnt as it passed, then at the end of its stream) changes nothing."""
        if self._indexes[index].get(key) is value:
            return
        self._indexes[index][key] = value
        owner = value if isinstance(value, _Agent) else value.root
        if owner is not None:
            owner.keys.append((index, key))

    # -- delegation ---------------------------------------------------------------------

    def _delegating_tool(self, call: Call, system: bytes, marked_subagent: bool) -> tuple[_Agent, str, str] | None:
        """For a new conversation: the tool call of the same client that started it, if any."""
        text = self._task_text(call)
        best: tuple[int, float, _Agent, str] | None = None
        open_delegations: list[tuple[_Agent, str]] = []
        for agent, call_id, use in self._tool_uses(call.client, call.t_start):
            if use.child is not None:
                continue
            # Timing alone needs a fresh delegation and, unless the client marks its subagents,
            # one that names no task (a child given a task quotes it: a conversation quoting
            # nothing is not that child) and a system prompt other than the caller's (one equal
            # to it is another session of the same app).
            fresh = use.t_closed is None and call.t_start - use.t_emitted <= CHILD_START_SECONDS
            unmarked_child = not use.quotes and agent.context is not None and agent.context[0] != system
            if fresh and use.delegation and (marked_subagent or unmarked_child):
                open_delegations.append((agent, call_id))
            quoted = _quoted(use.quotes, text)
            if quoted and (best is None or (quoted, use.t_emitted) > best[:2]):
                best = (quoted, use.t_emitted, agent, call_id)
        if best is not None:
            return best[2], best[3], "quotes-tool-argument"
        if len({id(agent) for agent, _ in open_delegations}) == 1:
            agent, call_id = open_delegations[0]
            return agent, call_id, "open-delegation-call"
        return None

    def _context(self, call: Call, ids: HarnessIds | None) -> tuple[bytes, bytes]:
        """Fingerprints of the system prompt (without its per-process parts) and of the tools."""
        system = self.table.stable_system(call, ids).encode("utf-8", "surrogatepass")
        tools = "\0".join(t.name for t in call.tools).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(system, digest_size=8).digest(), hashlib.blake2b(tools, digest_size=8).digest()

    def _task_text(self, call: Call) -> str:
        """The task a new conversation opens with: its first user text that is not harness
        chatter (system reminders, Codex's environment context)."""
        for message in call.messages:
            if message.role != "user" or message.tool_results:
                continue
            text = FRESH_TEXT_NOISE.sub("", message.text).strip()
            if text and not self.table.is_chatter(text):
                return text
        return ""

    def _delegator_quoted(self, call: Call) -> _Agent | None:
        """The agent whose open delegation's task the call's user text quotes, if any."""
        text = self._task_text(call)
        quoting = [
            (_quoted(use.quotes, text), use.t_emitted, agent)
            for agent, _, use in self._tool_uses(call.client, call.t_start)
            if use.delegation and use.child is None
        ]
        best = max((q for q in quoting if q[0]), key=lambda q: q[:2], default=None)
        return best[2] if best else None

    def _tool_uses(self, client: str, now: float) -> Iterator[tuple[_Agent, str, _ToolUse]]:
        for agent in self.agents.values():
            if agent.client != client:
                continue
            for call_id, use in agent.tools.items():
                if use.t_closed is None or now - use.t_closed <= RECENT_CLOSE_SECONDS:
                    yield agent, call_id, use

    def _link_delegation(self, call: Call, child: _Agent, scope: Scope) -> None:
        """A harness-identified child: find the parent's tool call that started it (for the trajectory)."""
        text = self._task_text(call)
        parent = child.parent
        assert parent is not None
        candidates = [
            (_quoted(use.quotes, text), use.t_emitted, call_id)
            for call_id, use in parent.tools.items()
            if use.child is None and (use.t_closed is None or call.t_start - use.t_closed <= RECENT_CLOSE_SECONDS)
        ]
        quoted = [c for c in candidates if c[0] > 0]
        if quoted:
            call_id = max(quoted)[2]
            self._claim(parent, call_id, child)
            scope.delegated_by = call_id
            scope.evidence["delegated_by"] = "quotes-tool-argument"

    def _claim(self, parent: _Agent, call_id: str, child: _Agent) -> None:
        parent.tools[call_id].child = child
        child.delegated_by = call_id

    def _close_answered(self, call: Call, agent: _Agent, scope: Scope) -> None:
        """Tool results in this request close the agent's calls (a closed delegation takes no new
        subagent); a result naming a child agent (Claude's agentId, Codex's agent_id) tells
        which call started that child."""
        for message in call.new_messages or call.messages[-1:]:
            for result in message.tool_results:
                use = agent.tools.get(result.call_id)
                if use is None or use.t_closed is not None:
                    continue
                use.t_closed = call.t_start
                if use.child is None:
                    named = next((c for c in agent.children if c.delegated_by is None and c.raw_id and c.raw_id in result.content), None)
                    if named is not None:
                        self._claim(agent, result.call_id, named)
                        scope.delegations[result.call_id] = named.id

    # -- turns --------------------------------------------------------------------------

    def _decide_turn(self, call: Call, agent: _Agent, ids: HarnessIds | None, scope: Scope, restarted: bool) -> None:
        """`restarted`: a known agent whose request continues no known state (context compaction
        restarts the conversation with a summary): its opening user message is not a new turn."""
        session = agent.session
        gap = session.turn > 0 and call.t_start - session.last_t > self.settings.turn_gap_seconds
        if ids is not None and ids.turn:
            opens = ids.turn not in session.turn_ids
            session.turn_ids.add(ids.turn)
            how = "harness-turn-id"
        else:
            opens = agent.parent is None and not restarted and self._fresh_user_input(call, agent)
            how = "fresh-user-message"
        if not opens and gap and agent.parent is None:
            opens, how = True, "idle-gap"
        if opens or session.turn == 0:
            session.turn += 1
            scope.new_turn = True
            scope.evidence["turn"] = how
            if not session.first_prompt:
                session.first_prompt = _last_user_text(call.messages)
        scope.turn = session.turn

    def _fresh_user_input(self, call: Call, agent: _Agent) -> bool:
        """The last message (mid-conversation system entries aside) is new user text, not tool results.

        A request that repeats a known state adds nothing new: after a failed attempt it is a
        retry (same turn); after a successful one the user asked again (a new turn).
        """
        messages = call.new_messages
        if not messages:
            if len(call.messages) in agent.failed_lengths:
                return False
            messages = call.messages
        last = next((m for m in reversed(messages) if m.role != "system"), None)
        if last is None or last.role != "user" or last.tool_results:
            return False
        text = FRESH_TEXT_NOISE.sub("", last.text).strip()
        if not text:
            return False
        return not self.table.is_chatter(last.text)

    # -- side requests ------------------------------------------------------------------

    def _adopt_side_request(self, call: Call, agent: _Agent, scope: Scope) -> None:
        """A side request that arrives under a fresh wire session (Codex titles): if it quotes a
        known session's prompt, it belongs to that session."""
        host = self._quoted_session(call, exclude=agent.session)
        if host is not None and host.root is not None:
            self._drop_agent(agent)
            scope.session_id = host.id
            scope.agent_id = host.root.id
            scope.parent_id = None
            scope.depth = 0
            scope.evidence["agent"] = "side:quotes-session-prompt"

    def _quoted_session(self, call: Call, exclude: _Session | None = None) -> _Session | None:
        text = "\n".join(m.text for m in call.messages)
        hosts = [
            s for s in self.sessions.values()
            if s is not exclude and s.client == call.client and len(s.first_prompt) >= MIN_QUOTE and s.first_prompt in text
        ]
        return max(hosts, key=lambda s: s.last_t) if hosts else None

    # -- bookkeeping --------------------------------------------------------------------

    def _scope(self, agent: _Agent, evidence: dict[str, str]) -> Scope:
        return Scope(
            session_id=agent.session.id,
            agent_id=agent.id,
            parent_id=agent.parent.id if agent.parent else None,
            depth=agent.depth,
            turn=agent.session.turn,
            new_turn=False,
            delegated_by=None,
            evidence=evidence,
        )

    def _agent_by_id(self, agent_id: str, parent_id: str | None, root_id: str | None, call: Call, raw_id: str | None = None) -> _Agent:
        """The agent with this id, created (with its parent and session) on first sight."""
        known = self.agents.get(agent_id)
        if known is not None:
            return known
        parent = None
        if parent_id is not None:
            parent = self.agents.get(parent_id) or self._agent_by_id(parent_id, root_id if root_id != parent_id else None, root_id, call)
        if parent is not None:
            session = parent.session
        else:
            session = self.sessions.get(root_id or agent_id) or self._new_session(root_id or agent_id, call)
        agent = self._new_agent(session, parent, call, agent_id)
        agent.raw_id = raw_id
        return agent

    def _new_session(self, session_id: str, call: Call) -> _Session:
        session = _Session(session_id, call.client, last_t=call.t_start)
        self.sessions[session_id] = session
        return session

    def _new_agent(self, session: _Session, parent: _Agent | None, call: Call, agent_id: str) -> _Agent:
        agent_id = agent_id if agent_id not in self.agents else self._unique(agent_id)
        agent = _Agent(agent_id, session, parent, call.client, depth=parent.depth + 1 if parent else 0)
        self.agents[agent_id] = agent
        session.agents.append(agent)
        if parent is None and session.root is None:
            session.root = agent
        if parent is not None:
            parent.children.append(agent)
        return agent

    def _unique(self, wanted: str) -> str:
        if wanted not in self.agents and wanted not in self.sessions:
            return wanted
        n = 2
        while f"{wanted}-{n}" in self.agents or f"{wanted}-{n}" in self.sessions:
            n += 1
        return f"{wanted}-{n}"

    def _drop_agent(self, agent: _Agent) -> None:
        self.agents.pop(agent.id, None)
        session = agent.session
        session.agents.remove(agent)
        if not session.agents:
            self.sessions.pop(session.id, None)

    def _evict_idle(self, now: float) -> None:
        """Forget sessions idle for longer than the TTL (traffic time), bounding memory."""
        if now < self._next_eviction:
            return
        ttl = self.settings.session_ttl_seconds
        self._next_eviction = now + min(60.0, ttl / 10)
        stale = [s for s in self.sessions.values() if now - s.last_t > ttl]
        for session in stale:
            for agent in session.agents:
                for index, key in agent.keys:
                    self._indexes[index].pop(key, None)
                self.agents.pop(agent.id, None)
            del self.sessions[session.id]
            self.evicted.append(session.id)


def _harness_lineage(ids: HarnessIds) -> tuple[str, str | None, str | None]:
    """(agent, parent, root) ids as Dynamo derives them from harness headers: the agent is the
    agent id or else the root; a non-root agent's parent is the parent id or else the root."""
    agent_raw = ids.agent or ids.root
    assert agent_raw is not None
    agent_id = sanitize_id(agent_raw)
    root_id = sanitize_id(ids.root) if ids.root else None
    if agent_id == root_id:
        return agent_id, None, root_id
    return agent_id, sanitize_id(ids.parent) if ids.parent else root_id, root_id


def _quotes(arguments: dict) -> list[str]:
    """Argument strings long enough to identify a subagent's task."""
    found: list[str] = []
    stack: list = [arguments]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            text = value.strip()
            if len(text) >= MIN_QUOTE:
                found.append(text)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return found


def _quoted(quotes: list[str], task: str) -> int:
    """How much of a task a tool call's arguments quote: the longest argument found in it that
    covers at least half of it (a path or a flag found in a long prompt proves nothing)."""
    return max((len(q) for q in quotes if 2 * len(q) >= len(task) and q in task), default=0)




def _first_user_text(messages: list[Message]) -> str:
    return next((m.text for m in messages if m.role == "user" and m.text), "")


def _last_user_text(messages: list[Message]) -> str:
    text = next((m.text for m in reversed(messages) if m.role == "user" and m.text and not m.tool_results), "")
    return FRESH_TEXT_NOISE.sub("", text).strip()


def _looks_like_side_request(call: Call) -> bool:
    """Title / summary calls of SDK apps: no tools, one or two messages."""
    return not call.tools and len(call.messages) <= 2
