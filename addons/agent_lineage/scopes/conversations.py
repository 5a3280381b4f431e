"""The tracker's memory: sessions and agents, and the indexes that find the conversation a request
continues (message states, tool call ids, response ids, prompt cache keys), released with their
session when it idles past the TTL."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..harness import HarnessTable
from ..model import Call, Message


@dataclass(slots=True)
class ToolUse:
    """A tool call an agent made: what it quotes, and the subagent it started, once known."""

    name: str
    quotes: list[str]  # argument strings long enough to identify a task
    delegation: bool
    t_emitted: float
    t_closed: float | None = None
    child: TrackedAgent | None = None


@dataclass(slots=True, eq=False)
class TrackedAgent:
    id: str
    session: TrackedSession
    parent: TrackedAgent | None
    client: str
    raw_id: str | None = None  # the harness id as sent, before sanitising
    depth: int = 0
    tools: dict[str, ToolUse] = field(default_factory=dict)  # tool call id -> use
    children: list[TrackedAgent] = field(default_factory=list)
    delegated_by: str | None = None
    last_response_len: int = -1  # message count of the state after its latest response
    context: tuple[bytes, bytes] | None = None  # fingerprints of its latest system prompt and tools
    failed_lengths: set[int] = field(default_factory=set)  # request lengths whose call failed
    keys: list[tuple] = field(default_factory=list)  # index entries to drop on eviction


@dataclass(slots=True, eq=False)
class TrackedSession:
    id: str
    client: str
    root: TrackedAgent | None = None
    turn: int = 0
    turn_ids: set[str] = field(default_factory=set)
    first_prompt: str = ""
    last_t: float = 0.0
    agents: list[TrackedAgent] = field(default_factory=list)
    # The one-shot request (no tools, a message or two) that opened this session, until its
    # conversation goes on: it may be a side request of a session that starts just after it.
    one_shot: Call | None = None
    last_answer: str = ""  # the latest answer text of a root agent of the session


Thread = tuple[TrackedAgent, int, str]  # the agent continued, the prefix length, how it was found


class Conversations:
    def __init__(self, table: HarnessTable) -> None:
        self.table = table
        self.sessions: dict[str, TrackedSession] = {}
        self.agents: dict[str, TrackedAgent] = {}
        self.states: dict[tuple, TrackedAgent] = {}  # (client, api, anchor, length, last fp) -> agent
        self.tool_owner: dict[str, TrackedAgent] = {}
        self.response_owner: dict[str, TrackedAgent] = {}
        self.cache_keys: dict[str, TrackedSession] = {}
        self._indexes: dict[str, dict] = {
            "state": self.states,
            "tool": self.tool_owner,
            "response": self.response_owner,
            "cache": self.cache_keys,
        }
        self.evicted: list[str] = []  # session ids dropped since the caller last looked
        self._next_eviction = 0.0

    # -- finding the conversation a request continues ---------------------------------------

    def thread(self, call: Call, context: tuple[bytes, bytes], anchor: bytes) -> Thread | None:
        messages = call.messages
        if messages:
            for i in range(len(messages) - 1, -1, -1):
                agent = self.states.get((call.client, call.api, anchor, i + 1, messages[i].fingerprint()))
                if agent is not None and agent.id in self.agents:
                    # A conversation keeps its system prompt or its tools: a request changing both
                    # (a title call repeating the opening message) starts one of its own.
                    if agent.context is None or context[0] == agent.context[0] or context[1] == agent.context[1]:
                        return agent, i + 1, "prefix"
                    break
        for i in range(len(messages) - 1, -1, -1):
            for result in messages[i].tool_results:
                agent = self.tool_owner.get(result.call_id)
                if agent is not None and agent.id in self.agents:
                    return agent, i, "tool-result"
        previous = call.fields.get("previous_response_id")
        if isinstance(previous, str) and previous in self.response_owner:
            return self.response_owner[previous], 0, "previous-response-id"
        return None

    def anchor(self, messages: list[Message]) -> bytes:
        """What identifies a conversation from its start: its first message and its first real
        user text (harnesses open every conversation with the same boilerplate, such as Codex's
        environment context)."""
        h = hashlib.blake2b(messages[0].fingerprint(), digest_size=16)
        task = next((m for m in messages[:8] if m.role == "user" and m.text and not self.table.is_chatter(m.text)), None)
        if task is not None:
            h.update(task.fingerprint())
        return h.digest()

    # -- learning ------------------------------------------------------------------------

    def register_request(self, call: Call, agent: TrackedAgent, context: tuple[bytes, bytes], anchor: bytes) -> None:
        agent.context = context
        if call.messages:
            self.index_state(call, anchor, len(call.messages), call.messages[-1], agent)
        key = call.fields.get("prompt_cache_key")
        if isinstance(key, str) and key and agent.parent is None:
            self.remember("cache", key, agent.session)

    def index_state(self, call: Call, anchor: bytes, length: int, last: Message, agent: TrackedAgent) -> None:
        self.remember("state", (call.client, call.api, anchor, length, last.fingerprint()), agent)

    def remember(self, index: str, key: object, value: TrackedAgent | TrackedSession) -> None:
        """Index `key`; the entry is dropped when its session is evicted. Indexing it again (an
        answer learnt as it passed, then at the end of its stream) changes nothing."""
        if self._indexes[index].get(key) is value:
            return
        self._indexes[index][key] = value
        owner = value if isinstance(value, TrackedAgent) else value.root
        if owner is not None:
            owner.keys.append((index, key))

    # -- sessions and agents -------------------------------------------------------------

    def agent_by_id(self, agent_id: str, parent_id: str | None, root_id: str | None, call: Call, raw_id: str | None = None) -> TrackedAgent:
        """The agent with this id, created (with its parent and session) on first sight."""
        known = self.agents.get(agent_id)
        if known is not None:
            return known
        parent = None
        if parent_id is not None:
            parent = self.agents.get(parent_id) or self.agent_by_id(parent_id, root_id if root_id != parent_id else None, root_id, call)
        if parent is not None:
            session = parent.session
        else:
            session = self.sessions.get(root_id or agent_id) or self.new_session(root_id or agent_id, call)
        agent = self.new_agent(session, parent, call, agent_id)
        agent.raw_id = raw_id
        return agent

    def new_session(self, session_id: str, call: Call) -> TrackedSession:
        session = TrackedSession(session_id, call.client, last_t=call.t_start)
        self.sessions[session_id] = session
        return session

    def new_agent(self, session: TrackedSession, parent: TrackedAgent | None, call: Call, agent_id: str) -> TrackedAgent:
        agent_id = agent_id if agent_id not in self.agents else self.unique(agent_id)
        agent = TrackedAgent(agent_id, session, parent, call.client, depth=parent.depth + 1 if parent else 0)
        self.agents[agent_id] = agent
        session.agents.append(agent)
        if parent is None and session.root is None:
            session.root = agent
        if parent is not None:
            parent.children.append(agent)
        return agent

    def unique(self, wanted: str) -> str:
        if wanted not in self.agents and wanted not in self.sessions:
            return wanted
        n = 2
        while f"{wanted}-{n}" in self.agents or f"{wanted}-{n}" in self.sessions:
            n += 1
        return f"{wanted}-{n}"

    def drop_agent(self, agent: TrackedAgent) -> None:
        self.agents.pop(agent.id, None)
        session = agent.session
        session.agents.remove(agent)
        if not session.agents:
            self.sessions.pop(session.id, None)

    def evict_idle(self, now: float, ttl: float) -> None:
        """Forget sessions idle for longer than the TTL (traffic time), bounding memory."""
        if now < self._next_eviction:
            return
        self._next_eviction = now + min(60.0, ttl / 10)
        stale = [s for s in self.sessions.values() if now - s.last_t > ttl]
        for session in stale:
            for agent in session.agents:
                for index, key in agent.keys:
                    self._indexes[index].pop(key, None)
                self.agents.pop(agent.id, None)
            del self.sessions[session.id]
            self.evicted.append(session.id)
