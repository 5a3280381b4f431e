"""ScopeTracker: the decision for each request, evidence strongest first (see the package docstring)."""

from __future__ import annotations

import hashlib

from ..harness import HarnessIds, HarnessTable, is_one_shot
from ..ids import derived_id, sanitize_id
from ..lineage import PARENT_HEADER, SESSION_HEADER
from ..model import Call, Message, Scope
from ..settings import Settings
from . import side_requests
from .conversations import Conversations, Thread, TrackedAgent
from .delegation import LONG_QUOTE, Delegation
from .turns import Turns

CONTEXTS_REMEMBERED = 1024  # distinct (system prompt, tools) pairs; forgotten all at once past that


class ScopeTracker:
    def __init__(self, table: HarnessTable, settings: Settings | None = None) -> None:
        self.table = table
        self.settings = settings or Settings()
        self.conversations = Conversations(table)
        self.delegation = Delegation(table, self.conversations)
        self.turns = Turns(table, self.settings)
        self._contexts: dict[tuple[str | None, str, tuple[str, ...]], tuple[bytes, bytes]] = {}  # see _context
        self._contexts_table = table

    # -- requests ---------------------------------------------------------------------

    def begin(self, call: Call) -> Scope:
        """Decide the scope of a request before it is forwarded."""
        conversations = self.conversations
        conversations.evict_idle(call.t_start, self.settings.session_ttl_seconds)
        ids = self.table.identify(call)
        side = call.side or self.table.side_of(call, ids)
        # Side requests are conversations of their own: they neither continue nor extend one.
        context = self._context(call, ids)
        anchor = conversations.anchor(call.messages) if call.messages and not side else b""
        thread = None if side else conversations.thread(call, context, anchor)
        call.new_messages = call.messages[thread[1] :] if thread else list(call.messages)
        scope = (
            self._from_client_lineage(call)
            or (self._from_harness(call, ids, thread, context) if ids and (ids.root or ids.agent) else None)
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
        agent = conversations.agents[scope.agent_id]
        if scope.side is None:
            conversations.register_request(call, agent, context, anchor)
            self.delegation.close_answered(call, agent, scope)
            self.turns.decide(call, agent, ids, scope, restarted=thread is None and agent.last_response_len > 0)
            if thread is not None:
                agent.session.one_shot = None  # its conversation goes on: not a side request
            elif scope.evidence.get("session") == "content-hash" and agent.session.one_shot is None:
                side_requests.reattach_early(self.table, conversations, call, agent.session)
        else:
            scope.turn = agent.session.turn
            scope.evidence.setdefault("side", f"side:{scope.side}")
        agent.session.last_t = max(agent.session.last_t, call.t_start)
        return scope

    # -- responses --------------------------------------------------------------------

    def end(self, call: Call) -> None:
        """Learn from a finished call: its output extends the conversation, its tool calls open.
        Learning the same answer twice changes nothing."""
        scope = call.scope
        conversations = self.conversations
        if scope is None or scope.side is not None or scope.pending or scope.agent_id not in conversations.agents:
            return
        agent = conversations.agents[scope.agent_id]
        output = call.response.output
        if call.response.id:
            conversations.remember("response", call.response.id, agent)
        if call.error or output is None:
            agent.failed_lengths.add(len(call.messages))
            return
        agent.failed_lengths.discard(len(call.messages))
        if not call.messages:
            return
        length = len(call.messages) + 1
        conversations.index_state(call, conversations.anchor(call.messages), length, output, agent)
        agent.last_response_len = length
        if agent.parent is None:
            answer = output.text.strip()
            agent.session.last_answer = answer if len(answer) >= LONG_QUOTE else ""
        self.delegation.open_tool_calls(agent, output, call.t_end or call.t_start, scope.client_name)

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

    def lineage_before_body(self, headers: dict[str, str], t: float) -> tuple[str, str | None] | None:
        """(agent id, parent id) that `begin` will give an LLM request with these headers at
        traffic time `t`, whatever its body; None when the body may change it. Decided: the
        client's own lineage; harness ids the headers alone decide (harness.yaml) for an agent
        known and not about to be evicted, or for a new agent with a parent. Not decided: a new
        root agent (a side request under it may belong to another session)."""
        lineage = self._client_lineage(headers)
        if lineage is not None:
            return lineage
        ids = self.table.identify_from_headers(headers)
        if ids is None or not (ids.root or ids.agent):
            return None
        agent_id, parent_id, _ = _harness_lineage(ids)
        agent = self.conversations.agents.get(agent_id)
        if agent is None:
            return (agent_id, parent_id) if parent_id is not None and parent_id != agent_id else None
        if t - agent.session.last_t > self.settings.session_ttl_seconds:
            return None  # its session may be evicted by this very request, and the agent made anew
        return agent.id, agent.parent.id if agent.parent else None

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
        agent = self.conversations.agent_by_id(agent_id, parent_id if parent_id != agent_id else None, None, call)
        scope = _scope(agent, {"agent": f"client-lineage:{SESSION_HEADER}"})
        scope.parent_id = parent_id
        return scope

    def _from_harness(self, call: Call, ids: HarnessIds, thread: Thread | None, context: tuple[bytes, bytes]) -> Scope:
        agent_id, parent_id, root_id = _harness_lineage(ids)
        known = agent_id in self.conversations.agents
        agent = self.conversations.agent_by_id(agent_id, parent_id, root_id, call, raw_id=ids.agent or ids.root)
        evidence = {"agent": f"harness:{ids.evidence.get('agent') or ids.evidence.get('root')}"}
        if thread is not None:
            evidence["messages"] = f"{thread[2]}:{thread[0].id}"
        scope = _scope(agent, evidence)
        if known and thread is None and not ids.side and side_requests.is_side_of(agent, call, context):
            # The agent's ids, but not its conversation: a one-shot request under its own prompt.
            scope.side = self.table.one_shot_kind(call)
            scope.evidence["side"] = "one-shot-under-agent-ids"
        if ids.side and not known and ids.root and agent.parent is None:
            side_requests.adopt(self.conversations, call, agent, scope)
        if not known and agent.parent is not None:
            if thread is not None and thread[0] is agent.parent:
                # A forked child: its first request carries its parent's history.
                spawn = self.delegation.spawn_call(call, agent.parent, thread[1])
                if spawn is not None:
                    self.delegation.claim(agent.parent, spawn, agent)
                    scope.delegated_by = spawn
                    scope.evidence["delegated_by"] = "fork-of-parent-history"
            if scope.delegated_by is None:
                self.delegation.link(call, agent, scope)
        return scope

    def _infer(self, call: Call, ids: HarnessIds | None, side: str | None, thread: Thread | None, context: tuple[bytes, bytes]) -> Scope:
        conversations = self.conversations
        # A client that marks its subagents' requests says which new conversations are roots.
        marked = self.table.is_subagent(call, ids)
        if thread is not None:
            agent, prefix, how = thread
            forked_from = self.delegation.fork_of(call, agent, prefix)
            handed_off = forked_from is None and _other_context(agent, context)
            if forked_from is not None or handed_off:
                # A fork leaves its parent's calls open; a handoff takes the conversation on under
                # a system prompt and tools of its own (the history of the agent that handed off).
                forked_from = agent
                kind = "handoff" if handed_off else "fork"
                child = conversations.new_agent(agent.session, agent, call, derived_id(kind, agent.id, str(prefix)))
                scope = _scope(child, {"agent": kind, "parent": f"{kind}-of:{how}"})
                spawn = self.delegation.spawn_call(call, forked_from, prefix)
                if spawn is not None:
                    self.delegation.claim(forked_from, spawn, child)
                    scope.delegated_by = spawn
                return scope
            if not self._twin_of(call, agent, prefix):
                return _scope(agent, {"agent": how})
            thread = None  # the same task delegated again: a conversation of its own
        delegation = None if side or marked is False else self.delegation.delegating_tool(call, context[0], marked is True)
        if delegation is not None:
            parent, call_id, how = delegation
            child = conversations.new_agent(parent.session, parent, call, derived_id("agent", parent.id, call_id))
            self.delegation.claim(parent, call_id, child)
            scope = _scope(child, {"agent": "new-conversation", "parent": how})
            scope.delegated_by = call_id
            return scope
        one_shot = side is None and is_one_shot(call)
        if side is not None or one_shot:
            host = side_requests.quoted_session(conversations, call)
            if host is not None and host.root is not None:
                scope = _scope(host.root, {"agent": "side:quotes-session-prompt"})
                scope.side = side or self.table.one_shot_kind(call)
                return scope
            # A subagent's side request sent before the subagent's own first request (Gemini
            # CLI's router scores the task it was given; a group chat picks its next speaker from
            # the transcript): the delegating agent's.
            delegator = self.delegation.delegator_quoted(call, side_requests.all_text(call) if one_shot else None)
            if delegator is not None:
                scope = _scope(delegator, {"agent": "side:quotes-delegated-task"})
                scope.side = side or self.table.one_shot_kind(call)
                return scope
        if side is not None:
            placeholder = derived_id("side", call.client, call.system, _first_user_text(call.messages))
            return Scope(
                session_id=placeholder, agent_id=placeholder, side=side, pending=True, evidence={"agent": "pending:next-turn-of-client"}
            )
        cached = conversations.cache_keys.get(str(call.fields.get("prompt_cache_key") or ""))
        if cached is not None and cached.root is not None:
            # Same prompt cache key, a conversation that continues none we know: a restart of
            # the session's root agent (context compaction).
            return _scope(cached.root, {"agent": "prompt-cache-key"})
        task = self.delegation.task_text(call)
        resumed = next(
            (s for s in conversations.sessions.values() if s.client == call.client and s.last_answer and s.last_answer in task), None
        )
        if resumed is not None:
            # A new conversation that quotes a session's latest answer goes on with that session
            # (apps that start every user turn afresh hand the previous result on in the task).
            root = conversations.new_agent(resumed, None, call, derived_id("root", resumed.id, str(resumed.turn + 1)))
            return _scope(root, {"agent": "new-conversation", "session": "quotes-previous-answer"})
        session_id = conversations.unique(derived_id("sess", call.client, call.api, call.system, _first_user_text(call.messages)))
        session = conversations.new_session(session_id, call)
        root = conversations.new_agent(session, None, call, session_id)
        if one_shot:
            session.one_shot = call
        return _scope(root, {"agent": "new-conversation", "session": "content-hash"})

    def _twin_of(self, call: Call, agent: TrackedAgent, prefix: int) -> bool:
        """Whether a request that repeats a subagent's first request word for word is a second
        subagent given the same task: another delegation, still unclaimed, quotes it (a retry
        after a failure repeats it too, and stays with its agent)."""
        if prefix != len(call.messages) or agent.delegated_by is None or prefix in agent.failed_lengths:
            return False
        return self.delegation.delegating_tool(call, self._context(call, None)[0], False) is not None

    def _context(self, call: Call, ids: HarnessIds | None) -> tuple[bytes, bytes]:
        """Fingerprints of the system prompt (without its per-process parts) and of the tools.
        An agent sends the same system prompt and tools on every request: remembered, so the
        noise patterns run once per prompt, not once per request."""
        if self._contexts_table is not self.table or len(self._contexts) >= CONTEXTS_REMEMBERED:
            self._contexts.clear()  # a reloaded harness table has other noise patterns
            self._contexts_table = self.table
        key = (ids.client if ids else None, call.system, tuple(t.name for t in call.tools))
        cached = self._contexts.get(key)
        if cached is None:
            system = self.table.stable_system(call, ids).encode("utf-8", "surrogatepass")
            tools = "\0".join(key[2]).encode("utf-8", "surrogatepass")
            cached = self._contexts[key] = (hashlib.blake2b(system, digest_size=8).digest(), hashlib.blake2b(tools, digest_size=8).digest())
        return cached


def _scope(agent: TrackedAgent, evidence: dict[str, str]) -> Scope:
    return Scope(
        session_id=agent.session.id,
        agent_id=agent.id,
        parent_id=agent.parent.id if agent.parent else None,
        depth=agent.depth,
        turn=agent.session.turn,
        evidence=evidence,
    )


def _other_context(agent: TrackedAgent, context: tuple[bytes, bytes]) -> bool:
    """Another system prompt and other tools than the agent's latest request."""
    return agent.context is not None and context[0] != agent.context[0] and context[1] != agent.context[1]


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


def _first_user_text(messages: list[Message]) -> str:
    return next((m.text for m in messages if m.role == "user" and m.text), "")
