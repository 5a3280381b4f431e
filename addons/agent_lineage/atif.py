"""ATIF v1.7 trajectories from scoped Calls: one document per root session, subagents embedded.

`TrajectoryBuilder` is fed finished Calls in the order they finish. Each agent scope is a
trajectory; a subagent's trajectory sits in its parent's `subagent_trajectories` (nested to any
depth) and the parent's delegating tool call points to it with a `subagent_trajectory_ref`.
Steps: `system` when an agent starts and whenever its system prompt changes, `user` for fresh
user input only, one `agent` step per LLM call. Tool results that arrive with a later request
become `observation.results` on the step that made the call. Side requests are not steps: they
are listed under the root's `extra`. Everything we add under `extra` is documented in
docs/atif-extra.md.

Incremental: every step keeps its serialised JSON and is re-serialised only when it changes (a
late tool result or subagent ref), and every trajectory keeps its serialised pieces until
something in it changes, so adding a call costs about the same at call 10 and at call 10,000;
only joining the cached pieces into the file grows with the session
(scripts/bench_trajectories.py measures it). The layout is exactly orjson's OPT_INDENT_2, so a
file re-dumped with orjson is byte-identical.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from nat.atif import ATIF_VERSION

from . import __version__
from .harness import HarnessTable, default_table
from .model import Call, Message, Scope, ToolDef, ToolResult

SCHEMA_VERSION = ATIF_VERSION  # "ATIF-v1.7", as the official models (nat.atif) define it
UNKNOWN = "unknown"
_VERSION = re.compile(r"^v?\d+(?:\.[0-9A-Za-z-]+)*$")
_PRODUCT = re.compile(r"^([A-Za-z][A-Za-z0-9._+-]*)(?:/(\S+))?")


def iso_timestamp(t: float) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, from epoch seconds."""
    ms = int(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def agent_identity(client_name: str | None, user_agent: str) -> tuple[str, str]:
    """(name, version) of the agent system: the harness name if recognised, else the user agent's
    product token (`OpenAI/Python 3.57.0` -> openai-python); the version from the user agent."""
    tokens = user_agent.split()
    match = _PRODUCT.match(tokens[0]) if tokens else None
    name, version = UNKNOWN, UNKNOWN
    if match:
        product, detail = match.group(1), match.group(2)
        if detail and _VERSION.match(detail):
            name, version = product.lower(), detail
        else:
            name = f"{product}-{detail}".lower() if detail else product.lower()
            version = next((t for t in tokens[1:] if _VERSION.match(t)), UNKNOWN)
    return client_name or name, version


def fresh_user_text(messages: list[Message]) -> str | None:
    """The text of the last user message that is not tool results, if any."""
    for message in reversed(messages):
        if message.role == "user" and message.text and not message.tool_results:
            return message.text
    return None


def _without_nones(pairs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pairs.items() if v is not None}


def _dump(value: Any, indent: int) -> bytes:
    """`value` laid out as orjson's OPT_INDENT_2 would lay it out `indent` spaces deep."""
    raw = orjson.dumps(value, option=orjson.OPT_INDENT_2)
    return raw.replace(b"\n", b"\n" + b" " * indent) if indent else raw


def _object(members: list[tuple[str, list[bytes]]], indent: int) -> list[bytes]:
    """The pieces of a JSON object whose member values are pieces laid out for `indent + 2`.

    Documents are kept as lists of pieces and joined once, at the end: joining megabytes at
    every level would copy the whole session several times per call.
    """
    pad = b" " * (indent + 2)
    pieces = [b"{\n"]
    for key, value in members:
        if len(pieces) > 1:
            pieces.append(b",\n")
        pieces.append(pad + orjson.dumps(key) + b": ")
        pieces += value
    pieces.append(b"\n" + b" " * indent + b"}")
    return pieces


def _array(items: list[list[bytes]], indent: int) -> list[bytes]:
    """The pieces of a JSON array of items that already carry their `indent + 2` padding."""
    pieces = [b"[\n"]
    for item in items:
        if len(pieces) > 1:
            pieces.append(b",\n")
        pieces += item
    pieces.append(b"\n" + b" " * indent + b"]")
    return pieces


@dataclass(slots=True, eq=False)
class _Step:
    step_id: int
    timestamp: str
    source: str
    message: str
    owner: _AgentTrajectory
    model_name: str | None = None
    reasoning_effort: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None
    llm_call_count: int | None = None
    extra: dict[str, Any] | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # tool call id -> observation result
    fragment: bytes | None = None  # serialised, padded for its place in the document

    def as_json(self) -> dict[str, Any]:
        observation = None
        if self.results:
            order = [c["tool_call_id"] for c in self.tool_calls or []]
            observation = {"results": [self.results[i] for i in order if i in self.results]}
        return _without_nones(
            {
                "step_id": self.step_id,
                "timestamp": self.timestamp,
                "source": self.source,
                "model_name": self.model_name,
                "reasoning_effort": self.reasoning_effort,
                "message": self.message,
                "reasoning_content": self.reasoning_content,
                "tool_calls": self.tool_calls,
                "observation": observation,
                "metrics": self.metrics,
                "llm_call_count": self.llm_call_count,
                "extra": self.extra,
            }
        )

    def result_for(self, call_id: str) -> dict[str, Any]:
        """The one observation result of a tool call, created empty on first use."""
        result = self.results.get(call_id)
        if result is None:
            result = self.results[call_id] = {"source_call_id": call_id, "content": ""}
        return result

    def changed(self) -> None:
        self.fragment = None
        self.owner.changed()


@dataclass(slots=True, eq=False)
class _AgentTrajectory:
    """One agent scope's trajectory."""

    agent_id: str
    session: _SessionDocument
    parent: _AgentTrajectory | None
    depth: int
    name: str = UNKNOWN
    version: str = UNKNOWN
    model_name: str | None = None
    client: str | None = None
    tool_definitions: list[dict[str, Any]] | None = None  # the tools its first call offered
    called: bool = False  # has made an LLM call of its own (not only side requests)
    parent_tool_call_id: str | None = None
    first_seen: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)
    system_prompt: str = ""  # without its per-process parts (harness.yaml `system_noise`)
    steps: list[_Step] = field(default_factory=list)
    tool_steps: dict[str, _Step] = field(default_factory=dict)  # tool call id -> step that made it
    children: list[_AgentTrajectory] = field(default_factory=list)
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    own_tokens: list[int] = field(default_factory=lambda: [0, 0, 0])  # prompt, completion, cached
    ref: tuple[_Step, str] | None = None  # the parent step and tool call that point to this agent
    rendered: list[bytes] | None = None  # this trajectory's JSON, in pieces

    def changed(self) -> None:
        """Something in this trajectory changed: its bytes and its ancestors' are stale."""
        node: _AgentTrajectory | None = self
        while node is not None and node.rendered is not None:
            node.rendered = None
            node = node.parent

    def add_step(self, source: str, call: Call, message: str, **fields: Any) -> _Step:
        step = _Step(len(self.steps) + 1, iso_timestamp(call.t_start), source, message, self, **fields)
        self.steps.append(step)
        assert call.scope is not None
        self.session.note_turn(call.scope, self, step)
        self.changed()
        return step

    def totals(self) -> list[int]:
        """Prompt, completion and cached tokens of this agent and everything under it."""
        sums = list(self.own_tokens)
        for child in self.children:
            for i, value in enumerate(child.totals()):
                sums[i] += value
        return sums

    def render(self) -> list[bytes]:
        """This trajectory as a JSON object at its depth (root at 0), in pieces, from cached fragments."""
        if self.rendered is not None:
            return self.rendered
        indent = 4 * self.depth
        step_pad = b" " * (indent + 4)
        steps = self.steps or [self._placeholder_step()]
        for step in steps:
            if step.fragment is None:
                step.fragment = step_pad + _dump(step.as_json(), indent + 4)
        session = self.session
        members = [
            ("schema_version", [_dump(SCHEMA_VERSION, 0)]),
            ("session_id", [_dump(session.session_id, 0)]),
            ("trajectory_id", [_dump(self.agent_id, 0)]),
            ("agent", [_dump(self._agent_json(), indent + 2)]),
            ("steps", _array([[s.fragment] for s in steps], indent + 2)),  # type: ignore[list-item]
            ("final_metrics", [_dump(self._final_metrics(len(steps)), indent + 2)]),
        ]
        extra = session.root_extra() if self is session.root else self._extra(indent + 2)
        if extra is not None:
            members.append(("extra", [extra]))
        if self.children:
            child_pad = b" " * (indent + 4)
            members.append(("subagent_trajectories", _array([[child_pad, *c.render()] for c in self.children], indent + 2)))
        self.rendered = _object(members, indent)
        return self.rendered

    def _placeholder_step(self) -> _Step:
        # ATIF needs at least one step; an agent seen only through side requests or through its
        # subagents has made no call of its own yet.
        return _Step(1, self.session.first_seen, "system", "", self, extra={"agent_lineage": {"no_agent_calls": True}})

    def _agent_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = _without_nones({"client": self.client, "depth": self.depth})
        if self.parent is not None:
            extra["parent_agent_id"] = self.parent.agent_id
            extra["parent_tool_call_id"] = self.parent_tool_call_id  # null: the delegating call is unknown
        identity = {"name": self.name, "version": self.version, "model_name": self.model_name}
        return _without_nones({**identity, "tool_definitions": self.tool_definitions, "extra": extra})

    def _final_metrics(self, step_count: int) -> dict[str, Any]:
        total = self.totals()
        own = self.own_tokens
        return {
            "total_prompt_tokens": total[0],
            "total_completion_tokens": total[1],
            "total_cached_tokens": total[2],
            "total_steps": step_count,
            "extra": {
                "includes_subagents": True,
                "own_prompt_tokens": own[0],
                "own_completion_tokens": own[1],
                "own_cached_tokens": own[2],
            },
        }

    def _extra(self, indent: int) -> bytes | None:
        if not self.unmatched:
            return None
        return _dump({"agent_lineage": {"unmatched_tool_results": self.unmatched}}, indent)

    def subtree(self) -> list[_AgentTrajectory]:
        found, stack = [], [self]
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(node.children)
        return found


class _SessionDocument:
    """The trajectory document of one root session: its agents, turns and side requests."""

    def __init__(self, session_id: str, first_call: Call, table: HarnessTable) -> None:
        self.session_id = session_id
        self.table = table
        self.first_seen = iso_timestamp(first_call.t_start)
        self.agents: dict[str, _AgentTrajectory] = {}
        self.root = self._agent(session_id, None)
        self.turns: dict[int, dict[str, Any]] = {}
        self.side_requests: list[dict[str, Any]] = []
        self.continues: str | None = None
        self.pending_refs: dict[str, tuple[_Step, str]] = {}  # child agent id -> parent step, tool call id
        self.awaited_steps: dict[str, str] = {}  # tool call id -> child agent id, linked once the step that made the call is recorded
        self.extra_bytes: bytes | None = None

    # -- calls ----------------------------------------------------------------------------

    def add(self, call: Call) -> None:
        scope = call.scope
        assert scope is not None
        if scope.side is not None:
            self._add_side_request(call, scope)
            return
        node = self._agent_for(scope)
        first_call = not node.called
        if first_call:
            self._first_call(node, call, scope)
        self._apply_tool_results(node, call)
        if scope.delegated_by and node.parent is not None:
            self._link(node.parent, scope.delegated_by, node.agent_id)
        for call_id, child_id in scope.delegations.items():
            self._link(node, call_id, child_id)
        self._add_steps(node, call, scope, first_call)

    def _first_call(self, node: _AgentTrajectory, call: Call, scope: Scope) -> None:
        node.called = True
        node.first_seen = iso_timestamp(call.t_start)
        node.evidence = dict(scope.evidence)
        node.name, node.version = agent_identity(scope.client_name, call.headers.get("user-agent", ""))
        node.client = call.client or None
        node.tool_definitions = [_tool_definition(t) for t in call.tools] or None
        pending = self.pending_refs.pop(node.agent_id, None)
        if pending is not None:
            self._link(pending[0].owner, pending[1], node.agent_id)
        self.extra_changed()

    def _add_steps(self, node: _AgentTrajectory, call: Call, scope: Scope, first_call: bool) -> None:
        # Per-process parts of a prompt (Claude Code's billing line, whose cc_version suffix
        # differs between a main agent and its subagent) are no prompt change.
        system = self.table.system_without_noise(scope.client_name, call.system)
        if system != node.system_prompt:
            node.system_prompt = system
            node.add_step("system", call, call.system, extra=_step_lineage(call, scope))
        if (node is self.root and scope.new_turn) or (node is not self.root and first_call):
            text = fresh_user_text(call.new_messages or call.messages)
            if text is not None:
                node.add_step("user", call, text, extra=_step_lineage(call, scope))
        step = node.add_step("agent", call, **_agent_step_fields(call, scope))
        for tool_call in step.tool_calls or []:
            node.tool_steps[tool_call["tool_call_id"]] = step
            child_id = self.awaited_steps.pop(tool_call["tool_call_id"], None)
            if child_id is not None:
                self._link(node, tool_call["tool_call_id"], child_id)
        usage = call.response.usage
        for i, value in enumerate((usage.input_tokens, usage.output_tokens, usage.cache_read_tokens)):
            node.own_tokens[i] += value or 0
        if node.model_name is None and step.model_name:
            node.model_name = step.model_name

    def _add_side_request(self, call: Call, scope: Scope) -> None:
        usage = call.response.usage
        self.side_requests.append(
            _without_nones(
                {
                    "exchange_id": call.exchange_id,
                    "kind": scope.side,
                    "timestamp": iso_timestamp(call.t_start),
                    "api": call.api,
                    "path": call.path,
                    "model": call.response.model or call.model,
                    "agent_id": scope.agent_id,
                    "status": call.status,
                    "error": call.error,
                    "usage": _without_nones(
                        {
                            "input_tokens": usage.input_tokens,
                            "output_tokens": usage.output_tokens,
                            "cache_read_tokens": usage.cache_read_tokens,
                            "cache_write_tokens": usage.cache_write_tokens,
                            "reasoning_tokens": usage.reasoning_tokens,
                        }
                    )
                    or None,
                }
            )
        )
        if not self.root.called:
            # Named after the side request until the root makes a call of its own; not its
            # version: Claude Code's probe comes from its runtime (`Bun/1.4.0`), not the CLI.
            self.root.name = agent_identity(scope.client_name, call.headers.get("user-agent", ""))[0]
        self.extra_changed()

    # -- agents ---------------------------------------------------------------------------

    def _agent(self, agent_id: str, parent: _AgentTrajectory | None) -> _AgentTrajectory:
        node = _AgentTrajectory(agent_id, self, parent, parent.depth + 1 if parent else 0)
        self.agents[agent_id] = node
        if parent is not None:
            parent.children.append(node)
            parent.changed()
        return node

    def _agent_for(self, scope: Scope) -> _AgentTrajectory:
        """The agent's trajectory, created on first sight. An agent known so far only as some
        subagent's parent hangs under the root until its own first call names its parent."""
        node = self.agents.get(scope.agent_id)
        if node is None:
            return self._agent(scope.agent_id, self._parent(scope.parent_id))
        if node is not self.root and not node.called:
            parent = self._parent(scope.parent_id)
            if parent is not node.parent and node not in _ancestry(parent):
                self._move(node, parent)
        return node

    def _parent(self, parent_id: str | None) -> _AgentTrajectory:
        if parent_id is None or parent_id == self.session_id:
            return self.root
        return self.agents.get(parent_id) or self._agent(parent_id, self.root)

    def _move(self, node: _AgentTrajectory, parent: _AgentTrajectory) -> None:
        old = node.parent
        assert old is not None
        old.children.remove(node)
        old.changed()
        node.parent = parent
        parent.children.append(node)
        if node.ref is not None and node.ref[0].owner is not parent:
            self._unlink(node)
        for agent in node.subtree():
            agent.depth = agent.parent.depth + 1  # type: ignore[union-attr]
            agent.rendered = None
            for step in agent.steps:
                step.fragment = None
        parent.changed()
        self.extra_changed()

    # -- observations and delegation --------------------------------------------------------

    def _apply_tool_results(self, node: _AgentTrajectory, call: Call) -> None:
        for message in call.new_messages:
            for result in message.tool_results:
                step = node.tool_steps.get(result.call_id) or self._step_of_tool_call(result.call_id)
                if step is None:
                    node.unmatched.append({"source_call_id": result.call_id, "exchange_id": call.exchange_id})
                    if node is self.root:
                        self.extra_changed()
                    else:
                        node.changed()
                    continue
                _observe(step, result)

    def _step_of_tool_call(self, call_id: str) -> _Step | None:
        """A tool call of another agent of this session (a forked child resends its parent's history)."""
        for agent in self.agents.values():
            step = agent.tool_steps.get(call_id)
            if step is not None:
                return step
        return None

    def _link(self, parent: _AgentTrajectory, call_id: str, child_id: str) -> None:
        """Point the parent's delegating tool call at the child's embedded trajectory."""
        child = self.agents.get(child_id)
        step = parent.tool_steps.get(call_id)
        if child is None or (not child.called and child.parent is not parent):
            if step is not None:
                self.pending_refs[child_id] = (step, call_id)  # linked when the child makes its first call
            return
        if child.ref is not None:
            return
        if child.parent_tool_call_id != call_id:
            child.parent_tool_call_id = call_id
            child.changed()
        # A ref must resolve in the subagent_trajectories of the trajectory holding the step.
        if child.parent is not parent:
            return
        if step is None:
            # The child's call finished before the parent's call that started it (a child
            # starts when the answer's last event passes, the parent's exchange ends later).
            self.awaited_steps[call_id] = child_id
            return
        refs = step.result_for(call_id).setdefault("subagent_trajectory_ref", [])
        refs.append({"trajectory_id": child.agent_id, "session_id": self.session_id})
        child.ref = (step, call_id)
        step.changed()

    def _unlink(self, child: _AgentTrajectory) -> None:
        assert child.ref is not None
        step, call_id = child.ref
        result = step.results[call_id]
        refs = [r for r in result["subagent_trajectory_ref"] if r["trajectory_id"] != child.agent_id]
        if refs:
            result["subagent_trajectory_ref"] = refs
        else:
            del result["subagent_trajectory_ref"]
        child.ref = None
        child.parent_tool_call_id = None  # that call is not its parent's
        step.changed()

    # -- root extra -----------------------------------------------------------------------

    def note_turn(self, scope: Scope, agent: _AgentTrajectory, step: _Step) -> None:
        if scope.turn not in self.turns:
            self.turns[scope.turn] = {
                "turn": scope.turn,
                "timestamp": step.timestamp,
                "trajectory_id": agent.agent_id,
                "step_id": step.step_id,
            }
            self.extra_changed()

    def extra_changed(self) -> None:
        self.extra_bytes = None
        self.root.changed()

    def root_extra(self) -> bytes:
        if self.extra_bytes is None:
            agents = {
                a.agent_id: _without_nones(
                    {
                        "parent_id": a.parent.agent_id if a.parent else None,
                        "depth": a.depth,
                        "first_seen": a.first_seen,
                        "evidence": a.evidence or None,
                    }
                )
                for a in self.agents.values()
            }
            lineage = _without_nones(
                {
                    "version": __version__,
                    "continues": self.continues,
                    "agents": agents,
                    "turns": [self.turns[t] for t in sorted(self.turns)],
                    "side_requests": self.side_requests,
                    "unmatched_tool_results": self.root.unmatched,
                }
            )
            self.extra_bytes = _dump({"agent_lineage": lineage}, 2)
        return self.extra_bytes


def _ancestry(node: _AgentTrajectory | None) -> list[_AgentTrajectory]:
    chain = []
    while node is not None:
        chain.append(node)
        node = node.parent
    return chain


def _tool_definition(tool: ToolDef) -> dict[str, Any]:
    """A tool the agent was offered, in OpenAI's function-calling schema (ATIF's `tool_definitions`)."""
    function = _without_nones({"name": tool.name, "description": tool.description or None, "parameters": tool.parameters})
    return {"type": "function", "function": function}


def _step_lineage(call: Call, scope: Scope) -> dict[str, Any]:
    return {"agent_lineage": {"exchange_id": call.exchange_id, "turn": scope.turn}}


def _observe(step: _Step, result: ToolResult) -> None:
    """A tool result on the step that made the call; a history resend changes nothing."""
    entry = step.result_for(result.call_id)
    if entry["content"]:
        return
    entry["content"] = result.content
    if result.is_error:
        entry["extra"] = {"is_error": True}
    step.changed()


def _agent_step_fields(call: Call, scope: Scope) -> dict[str, Any]:
    output = call.response.output
    tool_calls = []
    seen: set[str] = set()
    for tool_call in output.tool_calls if output else []:
        if tool_call.id in seen:
            continue  # ids must be unique within a step; a provider repeating one is sending the same call
        seen.add(tool_call.id)
        entry: dict[str, Any] = {
            "tool_call_id": tool_call.id,
            "function_name": tool_call.name,
            "arguments": tool_call.parsed_arguments(),
        }
        if tool_call.kind != "function":
            entry["extra"] = {"kind": tool_call.kind}
        tool_calls.append(entry)
    lineage = _without_nones(
        {
            "exchange_id": call.exchange_id,
            "api": call.api,
            "path": call.path,
            "status": call.status,
            "stop_reason": call.response.stop_reason,
            "error": call.error,
            "turn": scope.turn,
            "new_turn": scope.new_turn,
            "session_id": scope.session_id,
            "agent_id": scope.agent_id,
            "parent_id": scope.parent_id,
            "evidence": scope.evidence or None,
        }
    )
    return {
        "message": output.text if output else "",
        "model_name": call.response.model or call.model,
        "reasoning_effort": _reasoning_effort(call),
        "reasoning_content": (output.reasoning or None) if output else None,
        "tool_calls": tool_calls or None,
        "metrics": _metrics(call),
        "llm_call_count": 1,
        "extra": {"agent_lineage": lineage},
    }


def _reasoning_effort(call: Call) -> str | None:
    """Responses `reasoning.effort`, Anthropic `output_config.effort`."""
    for key in ("reasoning", "output_config"):
        value = call.fields.get(key)
        if isinstance(value, dict) and isinstance(value.get("effort"), str):
            return value["effort"]
    return None


def _metrics(call: Call) -> dict[str, Any] | None:
    """Token usage and timings; none for a failed call that reported no usage."""
    usage = call.response.usage
    reported = any(
        v is not None
        for v in (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens, usage.reasoning_tokens)
    )
    if not reported and call.error:
        return None
    extra = _without_nones(
        {
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "latency_ms": round((call.t_end - call.t_start) * 1000) if call.t_end is not None else None,
            "ttft_ms": round((call.t_first_byte - call.t_start) * 1000) if call.t_first_byte is not None else None,
        }
    )
    metrics = _without_nones(
        {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "cached_tokens": usage.cache_read_tokens,
            "extra": extra or None,
        }
    )
    return metrics or None


class TrajectoryBuilder:
    """ATIF documents of every root session seen, built incrementally from finished Calls."""

    def __init__(self, table: HarnessTable | None = None) -> None:
        self.table = table or default_table()
        self._sessions: dict[str, _SessionDocument] = {}

    def add(self, call: Call) -> None:
        """Fold a finished, scoped call into its session's document."""
        assert call.scope is not None
        session_id = call.scope.session_id
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _SessionDocument(session_id, call, self.table)
        session.add(call)

    def session_ids(self) -> list[str]:
        return list(self._sessions)

    def render(self, session_id: str) -> bytes:
        """The session's trajectory as JSON bytes (orjson OPT_INDENT_2 layout, trailing newline)."""
        return b"".join([*self._sessions[session_id].root.render(), b"\n"])

    def mark_continuation(self, session_id: str, previous_file: str) -> None:
        """This document continues an earlier file of the same session (see docs/atif-extra.md)."""
        session = self._sessions[session_id]
        session.continues = previous_file
        session.extra_changed()

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
