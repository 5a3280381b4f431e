"""Delegation: the tool calls agents make, the task text they quote, and which call started which
subagent (quoted by its first real user text, named in a tool result, or, failing both, timing)."""

from __future__ import annotations

from collections.abc import Iterator

from ..harness import HarnessTable
from ..model import Call, Message, Scope
from .conversations import Conversations, ToolUse, TrackedAgent

MIN_QUOTE = 12  # shortest tool argument text that may identify a subagent's task
RECENT_CLOSE_SECONDS = 120.0  # asynchronous spawns (Codex) answer before the child starts
LONG_QUOTE = 40  # an argument this long found in a longer text still names that text's task
PROSE_QUOTE = 24  # as does a shorter one of four words or more
CHILD_START_SECONDS = 30.0  # a subagent starts right after its delegation call: later, timing alone proves nothing


class Delegation:
    def __init__(self, table: HarnessTable, conversations: Conversations) -> None:
        self.table = table
        self.conversations = conversations

    def open_tool_calls(self, agent: TrackedAgent, output: Message, t: float, client_name: str | None) -> None:
        """The tool calls of an answer, open until a later request carries their results."""
        for tool_call in output.tool_calls:
            if not tool_call.id or tool_call.id in agent.tools:  # learnt already, when the answer passed
                continue
            agent.tools[tool_call.id] = ToolUse(
                tool_call.name,
                _quotes(tool_call.parsed_arguments()),
                self.table.is_delegation(client_name, tool_call.name),
                t,
            )
            self.conversations.remember("tool", tool_call.id, agent)

    def delegating_tool(self, call: Call, system: bytes, marked_subagent: bool) -> tuple[TrackedAgent, str, str] | None:
        """For a new conversation: the tool call of the same client that started it, if any."""
        text = self.task_text(call)
        best: tuple[int, float, TrackedAgent, str] | None = None  # quoted, order, agent, call id
        open_delegations: list[tuple[TrackedAgent, str]] = []
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
            # Equal quotes (one task delegated twice, by one agent or by two sessions): the open
            # call first, the oldest open one (children start in the order they were asked for),
            # else the latest closed one.
            order = -use.t_emitted if use.t_closed is None else use.t_emitted - 1e12
            if quoted and (best is None or (quoted, order) > best[:2]):
                best = (quoted, order, agent, call_id)
        if best is not None:
            return best[2], best[3], "quotes-tool-argument"
        if len({id(agent) for agent, _ in open_delegations}) == 1:
            agent, call_id = open_delegations[0]
            return agent, call_id, "open-delegation-call"
        return None

    def fork_of(self, call: Call, agent: TrackedAgent, prefix: int) -> TrackedAgent | None:
        """A request that takes the agent's latest state but leaves its open tool calls unanswered
        is a forked subagent (the APIs require every tool call to be answered before going on)."""
        if prefix != agent.last_response_len or prefix >= len(call.messages):
            return None
        open_ids = {i for i, use in agent.tools.items() if use.t_closed is None}
        if not open_ids:
            return None
        answered = {r.call_id for m in call.messages[prefix:] for r in m.tool_results}
        return agent if not (open_ids & answered) else None

    def spawn_call(self, call: Call, parent: TrackedAgent, prefix: int) -> str | None:
        """The parent's open call that started a forked or handed-off child: the one whose arguments
        the child's new messages quote best, else the one they answer, else its only open delegation."""
        text = "\n".join(self.table.without_text_noise(m.text) for m in call.messages[prefix:] if m.role == "user")
        open_calls = [(call_id, use) for call_id, use in parent.tools.items() if use.t_closed is None and use.child is None]
        quoted = [(_quoted(use.quotes, text) or _contained_in(use.quotes, text), call_id) for call_id, use in open_calls]
        best = max(quoted, default=(0, None))
        if best[0]:
            return best[1]
        # A handoff's request carries the result of the call that handed off.
        answered = {r.call_id for m in call.messages[prefix:] for r in m.tool_results} & {call_id for call_id, _ in open_calls}
        if len(answered) == 1:
            return answered.pop()
        delegations = [call_id for call_id, use in open_calls if use.delegation]
        return delegations[0] if len(delegations) == 1 else None

    def link(self, call: Call, child: TrackedAgent, scope: Scope) -> None:
        """A harness-identified child: find the parent's tool call that started it (for the trajectory)."""
        text = self.task_text(call)
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
            self.claim(parent, call_id, child)
            scope.delegated_by = call_id
            scope.evidence["delegated_by"] = "quotes-tool-argument"

    def claim(self, parent: TrackedAgent, call_id: str, child: TrackedAgent) -> None:
        parent.tools[call_id].child = child
        child.delegated_by = call_id

    def close_answered(self, call: Call, agent: TrackedAgent, scope: Scope) -> None:
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
                        self.claim(agent, result.call_id, named)
                        scope.delegations[result.call_id] = named.id

    def task_text(self, call: Call) -> str:
        """The task a new conversation opens with: its first user text that is not harness
        chatter (system reminders, Codex's environment context)."""
        for message in call.messages:
            if message.role != "user" or message.tool_results:
                continue
            text = self.table.without_text_noise(message.text)
            if text and not self.table.is_chatter(text):
                return text
        return ""

    def delegator_quoted(self, call: Call, text: str | None = None) -> TrackedAgent | None:
        """The agent whose open delegation's task the call's user text quotes, if any; given the
        whole `text` of a one-shot request, any open tool call's (a framework's own tool that runs
        a group of agents)."""
        any_tool = text is not None
        text = self.task_text(call) if text is None else text
        quoting = [
            (_quoted(use.quotes, text), use.t_emitted, agent)
            for agent, _, use in self._tool_uses(call.client, call.t_start)
            if (use.delegation or any_tool) and use.child is None
        ]
        best = max((q for q in quoting if q[0]), key=lambda q: q[:2], default=None)
        return best[2] if best else None

    def _tool_uses(self, client: str, now: float) -> Iterator[tuple[TrackedAgent, str, ToolUse]]:
        for agent in self.conversations.agents.values():
            if agent.client != client:
                continue
            for call_id, use in agent.tools.items():
                if use.t_closed is None or now - use.t_closed <= RECENT_CLOSE_SECONDS:
                    yield agent, call_id, use


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
    covers at least half of it or is long enough to name a task on its own (frameworks wrap the
    task in a template of their own); a path or a flag found in a long prompt proves nothing."""
    return max((len(q) for q in quotes if (2 * len(q) >= len(task) or _names_a_task(q)) and q in task), default=0)


def _contained_in(quotes: list[str], text: str) -> int:
    """The longest argument that contains the whole text (a fork's task wrapped by its harness is
    the other way round: the spawn call's message holds what the child was told)."""
    text = text.strip()
    return max((len(q) for q in quotes if len(text) >= MIN_QUOTE and text in q), default=0)


def _names_a_task(quote: str) -> bool:
    """Prose long enough to name a task wherever it is found (a path or a flag has no spaces)."""
    return len(quote) >= LONG_QUOTE or (len(quote) >= PROSE_QUOTE and len(quote.split()) >= 4)
