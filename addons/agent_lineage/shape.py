"""The shape of a trajectory: what `agent-lineage summary` prints and `agent-lineage diff` compares.

A shape keeps the structure — agents nested under the tool calls that started them, turns, steps
by source, tool calls, observations, tokens — and leaves out what legitimately differs between
two runs of the same scenario: ids, timestamps, latencies and message texts. Two runs are
compared position by position; subagents are paired by their task text where it matches, else
in order, so a subagent that moved shows up as moved rather than as one missing and one extra.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .harness import default_table

PREVIEW_CHARS = 48
MIN_ID_CHARS = 8  # after a short word prefix such as our derived ids' `sess-` / `agent-`
WORD_PREFIX = re.compile(r"^[A-Za-z]{1,6}-")


@dataclass(eq=False)
class StepShape:
    step_id: int
    source: str
    turn: int | None
    model: str | None
    tools: list[str]
    results: int
    delegations: list[tuple[str, str]]  # (tool name, subagent trajectory_id) of each subagent ref
    tokens: tuple[int, int, int] | None  # prompt, completion, cached
    text: str  # message text, for previews only

    def signature(self) -> tuple[str, tuple[str, ...]]:
        return self.source, tuple(self.tools)


@dataclass(eq=False)
class AgentShape:
    trajectory_id: str
    name: str
    version: str
    task: str | None  # the first user step, harness reminders removed
    steps: list[StepShape]
    totals: tuple[int, int, int]  # with subagents
    own_tokens: tuple[int, int, int]
    unmatched: int
    parent: AgentShape | None = None
    attached: tuple[int, str] | None = None  # (parent step_id, tool name) whose ref points here
    children: list[AgentShape] = field(default_factory=list)

    def turns(self) -> list[tuple[int | None, list[StepShape]]]:
        """Consecutive steps grouped by turn."""
        groups: list[tuple[int | None, list[StepShape]]] = []
        for step in self.steps:
            if groups and groups[-1][0] == step.turn:
                groups[-1][1].append(step)
            else:
                groups.append((step.turn, [step]))
        return groups

    def walk(self) -> list[AgentShape]:
        """This agent and its subagents, depth first, in embedding order."""
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        return found


@dataclass(eq=False)
class TrajectoryShape:
    session_id: str
    root: AgentShape
    side_requests: Counter[str]


def shape_of(document: dict[str, Any]) -> TrajectoryShape:
    """The shape of a valid ATIF trajectory (ours or another producer's)."""
    root = _agent_shape(document, None)
    lineage = (document.get("extra") or {}).get("agent_lineage") or {}
    sides = Counter(str(s.get("kind", "?")) for s in lineage.get("side_requests", []))
    return TrajectoryShape(str(document.get("session_id", "")), root, sides)


def _agent_shape(trajectory: dict[str, Any], parent: AgentShape | None) -> AgentShape:
    steps = [_step_shape(s) for s in trajectory.get("steps", [])]
    if not any(s.turn is not None for s in steps):
        _turns_from_user_steps(steps)
    final = trajectory.get("final_metrics") or {}
    extra = final.get("extra") or {}
    totals = (final.get("total_prompt_tokens") or 0, final.get("total_completion_tokens") or 0, final.get("total_cached_tokens") or 0)
    own = (
        extra.get("own_prompt_tokens", totals[0]),
        extra.get("own_completion_tokens", totals[1]),
        extra.get("own_cached_tokens", totals[2]),
    )
    user = next((s for s in steps if s.source == "user"), None)
    agent = trajectory.get("agent") or {}
    lineage = (trajectory.get("extra") or {}).get("agent_lineage") or {}
    shape = AgentShape(
        trajectory_id=str(trajectory.get("trajectory_id", "")),
        name=str(agent.get("name", "")),
        version=str(agent.get("version", "")),
        task=default_table().without_text_noise(user.text) if user else None,
        steps=steps,
        totals=totals,
        own_tokens=own,
        unmatched=len(lineage.get("unmatched_tool_results", [])),
        parent=parent,
    )
    refs = {child_id: (s.step_id, tool) for s in steps for tool, child_id in s.delegations}
    for sub in trajectory.get("subagent_trajectories") or []:
        child = _agent_shape(sub, shape)
        child.attached = refs.get(child.trajectory_id)
        shape.children.append(child)
    return shape


def _step_shape(step: dict[str, Any]) -> StepShape:
    tool_calls = step.get("tool_calls") or []
    names = {c.get("tool_call_id"): str(c.get("function_name", "")) for c in tool_calls}
    results = (step.get("observation") or {}).get("results") or []
    delegations = [
        (names.get(r.get("source_call_id"), "?"), str(ref.get("trajectory_id") or ref.get("trajectory_path")))
        for r in results
        for ref in r.get("subagent_trajectory_ref") or []
    ]
    metrics = step.get("metrics")
    tokens = None
    if metrics:
        tokens = (metrics.get("prompt_tokens") or 0, metrics.get("completion_tokens") or 0, metrics.get("cached_tokens") or 0)
    message = step.get("message")
    return StepShape(
        step_id=int(step.get("step_id", 0)),
        source=str(step.get("source", "")),
        turn=((step.get("extra") or {}).get("agent_lineage") or {}).get("turn"),
        model=step.get("model_name"),
        tools=[str(c.get("function_name", "")) for c in tool_calls],
        results=len(results),
        delegations=delegations,
        tokens=tokens,
        text=message if isinstance(message, str) else "",
    )


def _turns_from_user_steps(steps: list[StepShape]) -> None:
    """Another producer's trajectory: each user step opens a turn."""
    turn, seen_user = 1, False
    for step in steps:
        if step.source == "user":
            turn += seen_user
            seen_user = True
        step.turn = turn


# -- summary ------------------------------------------------------------------------------


def summary_lines(shape: TrajectoryShape) -> list[str]:
    agents = shape.root.walk()
    short = _short_ids([a.trajectory_id for a in agents] + [shape.session_id])
    root = shape.root
    turns = {s.turn for a in agents for s in a.steps if s.turn is not None}
    lines = [
        f"session {short[shape.session_id]}  {root.name} {root.version}",
        f"{plural(len(turns), 'turn')} · {plural(len(agents), 'agent')} ({plural(len(agents) - 1, 'subagent')}) · "
        f"{plural(sum(len(a.steps) for a in agents), 'step')} · tokens prompt {root.totals[0]}, "
        f"completion {root.totals[1]}, cached {root.totals[2]}",
        "side requests: " + (", ".join(f"{kind} ×{n}" for kind, n in sorted(shape.side_requests.items())) or "none"),
    ]
    lines += _agent_lines(root, short, "", "")
    return lines


def _agent_lines(agent: AgentShape, short: dict[str, str], first: str, rest: str) -> list[str]:
    where = ""
    if agent.parent is not None:
        where = f" via step {agent.attached[0]} `{agent.attached[1]}`" if agent.attached else " (delegating call unknown)"
    role = "main" if agent.parent is None else "subagent"
    lines = [f"{first}{role} {short[agent.trajectory_id]}{where} · {_steps_line(agent.steps)} · tokens {_tokens(agent.own_tokens)}"]
    if agent.unmatched:
        lines.append(f"{rest}  ! {plural(agent.unmatched, 'unmatched tool result')}")
    if agent.parent is not None and agent.task:
        lines.append(f"{rest}  task {_preview(agent.task)}")
    else:
        for turn, steps in agent.turns():
            user = next((s for s in steps if s.source == "user"), None)
            label = f"turn {turn}" if turn is not None else "steps"
            prompt = f" · {_preview(default_table().without_text_noise(user.text))}" if user else ""
            lines.append(f"{rest}  {label} (steps {steps[0].step_id}–{steps[-1].step_id}): {_steps_line(steps)}{prompt}")
    for i, child in enumerate(agent.children):
        last = i == len(agent.children) - 1
        lines += _agent_lines(child, short, rest + ("└─ " if last else "├─ "), rest + ("   " if last else "│  "))
    return lines


def _steps_line(steps: list[StepShape]) -> str:
    by_source = Counter(s.source for s in steps)
    parts = [f"{plural(len(steps), 'step')} ({', '.join(f'{k} {by_source[k]}' for k in ('system', 'user', 'agent') if by_source[k])})"]
    tools = Counter(t for s in steps for t in s.tools)
    if tools:
        parts.append("tools " + ", ".join(f"{name} ×{n}" for name, n in tools.most_common()))
    results = sum(s.results for s in steps)
    if results:
        parts.append(plural(results, "observation"))
    return " · ".join(parts)


def _short_ids(ids: list[str]) -> dict[str, str]:
    """Each id cut to the shortest prefix (at least MIN_ID_CHARS) that no other id shares."""
    short = {}
    for i in ids:
        prefix = WORD_PREFIX.match(i)
        length = MIN_ID_CHARS + (prefix.end() if prefix else 0)
        while length < len(i) and any(o != i and o[:length] == i[:length] for o in ids):
            length += 1
        short[i] = i if length >= len(i) else i[:length] + "…"
    return short


def _preview(text: str) -> str:
    line = " ".join(text.split())
    return f'"{line[:PREVIEW_CHARS]}…"' if len(line) > PREVIEW_CHARS else f'"{line}"'


def _tokens(tokens: tuple[int, int, int]) -> str:
    return "/".join(map(str, tokens)) + " (prompt/completion/cached)"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- diff ---------------------------------------------------------------------------------


def diff_shapes(a: TrajectoryShape, b: TrajectoryShape, tokens: bool = False) -> list[str]:
    """Human-readable structural differences from A to B; [] when they have the same shape."""
    differences: list[str] = []
    if a.root.name != b.root.name:
        differences.append(f"main agent is `{a.root.name}`, now `{b.root.name}`")
    for kind in sorted(set(a.side_requests) | set(b.side_requests)):
        if a.side_requests[kind] != b.side_requests[kind]:
            differences.append(f"side requests `{kind}`: {a.side_requests[kind]} → {b.side_requests[kind]}")
    pairs, missing, extra = _pair_agents(a.root, b.root)
    labels = {id(x): _label(x, i) for i, x in enumerate(a.root.walk())}
    labels.update({id(y): labels[id(x)] for x, y in pairs})
    labels.update({id(y): _label(y, i) for i, y in enumerate(b.root.walk()) if id(y) not in labels})
    partner = {id(x): y for x, y in pairs}
    for x, y in pairs:
        label = labels[id(x)]
        if x.parent is not None:
            differences += _attachment(x, y, partner, labels)
        if x.parent is None:
            differences += _turn_differences(x, y, tokens)
        else:
            differences += _step_differences(x.steps, y.steps, f"{label}: ", tokens)
        if x.unmatched != y.unmatched:
            differences.append(f"{label}: unmatched tool results {x.unmatched} → {y.unmatched}")
        if tokens and x.totals != y.totals:
            differences.append(f"{label}: total tokens {_tokens(x.totals)} → {_tokens(y.totals)}")
    differences += [f"{labels[id(x)]} missing (was {_place(x, labels)})" for x in missing]
    differences += [f"extra {labels[id(y)]} ({_place(y, labels)})" for y in extra]
    return differences


def _pair_agents(a: AgentShape, b: AgentShape) -> tuple[list[tuple[AgentShape, AgentShape]], list[AgentShape], list[AgentShape]]:
    """Pairs of the same agent in A and B: roots, then subagents by task text, then in order."""
    left, right = a.walk()[1:], b.walk()[1:]
    pairs = [(a, b)]
    for x in list(left):
        y = next((y for y in right if (y.name, y.task) == (x.name, x.task)), None)
        if y is not None:
            pairs.append((x, y))
            left.remove(x)
            right.remove(y)
    pairs += zip(left, right)
    n = min(len(left), len(right))
    return pairs, left[n:], right[n:]


def _label(agent: AgentShape, index: int) -> str:
    if agent.parent is None:
        return "main"
    return f"subagent {index} {_preview(agent.task)}" if agent.task else f"subagent {index}"


def _place(agent: AgentShape, labels: dict[int, str]) -> str:
    assert agent.parent is not None
    parent = labels[id(agent.parent)]
    return f"under step {agent.attached[0]} of {parent}" if agent.attached else f"under {parent}, no subagent ref"


def _attachment(x: AgentShape, y: AgentShape, partner: dict[int, AgentShape], labels: dict[int, str]) -> list[str]:
    assert x.parent is not None and y.parent is not None
    label = labels[id(x)]
    if partner.get(id(x.parent)) is not y.parent:
        return [f"{label} attached to the wrong parent (was {_place(x, labels)}, now {_place(y, labels)})"]
    if x.attached and y.attached and x.attached != y.attached:
        return [f"{label} moved (was {_place(x, labels)}, now {_place(y, labels)})"]
    return []


def _turn_differences(x: AgentShape, y: AgentShape, tokens: bool) -> list[str]:
    turns_a, turns_b = x.turns(), y.turns()
    signature = [tuple(s.signature() for s in steps) for _, steps in turns_a]
    matcher = difflib.SequenceMatcher(None, signature, [tuple(s.signature() for s in steps) for _, steps in turns_b], autojunk=False)
    found: list[str] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        part_a, part_b = turns_a[i1:i2], turns_b[j1:j2]
        steps_a = [s for _, steps in part_a for s in steps]
        steps_b = [s for _, steps in part_b for s in steps]
        names_a = _turn_names(part_a)
        if op == "delete":
            found.append(f"{names_a} missing ({plural(len(steps_a), 'step')})")
        elif op == "insert":
            after = f" after turn {turns_a[i1 - 1][0]}" if i1 else " before the first turn"
            found.append(f"extra turn{after} ({plural(len(steps_b), 'step')})")
        elif op == "replace" and len(part_a) == len(part_b):
            for (turn, a_steps), (_, b_steps) in zip(part_a, part_b):
                found += _step_differences(a_steps, b_steps, f"turn {turn}: ", tokens)
        elif op == "replace" and [s.signature() for s in steps_a] == [s.signature() for s in steps_b]:
            if len(part_a) == 1:
                found.append(f"{names_a} split in {_count_word(len(part_b))}")
            elif len(part_b) == 1:
                found.append(f"{names_a} merged into one")
            else:
                found.append(f"{names_a} regrouped into {_count_word(len(part_b))} turns")
            found += _step_differences(steps_a, steps_b, f"{names_a}: ", tokens)
        else:  # equal, or turns that changed and a count that differs: pair them in order
            for (turn, a_steps), (_, b_steps) in zip(part_a, part_b):
                found += _step_differences(a_steps, b_steps, f"turn {turn}: ", tokens)
            paired = min(len(part_a), len(part_b))
            for turn, a_steps in part_a[paired:]:
                found.append(f"turn {turn} missing ({plural(len(a_steps), 'step')})")
            for _, b_steps in part_b[paired:]:
                found.append(f"extra turn after turn {part_a[-1][0]} ({plural(len(b_steps), 'step')})")
    return found


def _turn_names(part: list[tuple[int | None, list[StepShape]]]) -> str:
    numbers = [str(t) for t, _ in part]
    return f"turn {numbers[0]}" if len(numbers) == 1 else f"turns {', '.join(numbers)}"


def _count_word(n: int) -> str:
    return {1: "one", 2: "two", 3: "three"}.get(n, str(n))


def _step_differences(a: list[StepShape], b: list[StepShape], prefix: str, tokens: bool) -> list[str]:
    matcher = difflib.SequenceMatcher(None, [s.signature() for s in a], [s.signature() for s in b], autojunk=False)
    found: list[str] = []
    for _, i1, i2, j1, j2 in matcher.get_opcodes():
        paired = list(zip(a[i1:i2], b[j1:j2]))
        for x, y in paired:
            found += [prefix + d for d in _step_pair(x, y, tokens)]
        for x in a[i1 + len(paired) : i2]:
            found.append(f"{prefix}step {x.step_id} ({_describe(x)}) missing")
        for y in b[j1 + len(paired) : j2]:
            after = f"after step {a[i2 - 1].step_id}" if i2 else "at the start"
            found.append(f"{prefix}extra step {after} ({_describe(y)})")
    return found


def _describe(step: StepShape) -> str:
    return f"{step.source}: {', '.join(f'`{t}`' for t in step.tools)}" if step.tools else step.source


def _step_pair(x: StepShape, y: StepShape, tokens: bool) -> list[str]:
    step = f"step {x.step_id}"
    if x.source != y.source:
        return [f"{step} is a {y.source} step, was {x.source}"]
    found = []
    tools_a, tools_b = Counter(x.tools), Counter(y.tools)
    for name, n in (tools_a - tools_b).items():
        found.append(f"{step} missing tool call `{name}`" + (f" ×{n}" if n > 1 else ""))
    for name, n in (tools_b - tools_a).items():
        found.append(f"{step} has an extra tool call `{name}`" + (f" ×{n}" if n > 1 else ""))
    if x.model != y.model:
        found.append(f"{step} model `{x.model}` → `{y.model}`")
    refs_a, refs_b = Counter(t for t, _ in x.delegations), Counter(t for t, _ in y.delegations)
    for name in refs_a - refs_b:
        found.append(f"{step} tool call `{name}` lost its subagent ref")
    for name in refs_b - refs_a:
        found.append(f"{step} tool call `{name}` gained a subagent ref")
    if tools_a == tools_b and x.results != y.results:
        found.append(f"{step} observation results {x.results} → {y.results}")
    if tokens and x.tokens != y.tokens:
        found.append(f"{step} tokens {_tokens(x.tokens or (0, 0, 0))} → {_tokens(y.tokens or (0, 0, 0))}")
    return found
