"""What lineage is worth to a Dynamo deployment: prefix reuse per request, and a routing simulation.

Each LLM request is a chain of prefix blocks, one per message (system prompt first): block i's key
hashes blocks 0..i, so two requests share a prefix exactly as far as their keys agree. A block's
size in tokens is the message's share of the request's prompt tokens as the provider reported them
(`prompt_tokens`, cached included), split in proportion to the messages' bytes; where no count was
reported, bytes / 4 (BYTES_PER_TOKEN), the usual rule of thumb for English and code.

Reuse: per request, the longest prefix it shares with an earlier request of the same agent, of its
parent, of a sibling (another child of the same parent) and of another session, found by looking
each block key up in one index (cost linear in the traffic).

Routing: N workers, each an LRU cache of blocks holding at most `cache_tokens`; the requests in
their recorded order are routed (a) at random, (b) round robin, (c) by our stamped lineage as
Dynamo 1.6+ pins it (a root agent by its own id, a subagent by its parent's id, so siblings share a
worker), (d) by the lineage Dynamo derives from the CLIs' own headers alone (requests without such
headers are routed at random). A pinned key takes the least-loaded worker at first sight. A
request's cached tokens are its longest prefix present in its worker's cache.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

BYTES_PER_TOKEN = 4
STRATEGIES = ("random", "round-robin", "lineage", "native-headers")
DEFAULT_WORKERS = 4
DEFAULT_CACHE_TOKENS = 2_000_000
# Claude Code's billing line, first in its system prompt. Towards Anthropic's API it carries
# per-request fields (a checksum `cch=`, `cc_prev_req=`, ...) that the API's own cache reads cover
# (tests/fixtures/agents/*_forward); to other hosts it sends only these, constant per agent.
BILLING_LINE = re.compile(r"^x-anthropic-billing-header:([^\n]*)", re.M)
BILLING_FIELDS_SENT_TO_ANY_HOST = ("cc_version", "cc_entrypoint", "cc_is_subagent")


@dataclass(slots=True)
class Request:
    """One LLM request as the KV report sees it."""

    session: str
    agent: str
    parent: str | None
    blocks: list[tuple[bytes, int]]  # (prefix key, tokens) per message, system prompt first
    native: tuple[str, str | None] | None = None  # (session, parent) from the CLI's own headers
    label: str = ""  # where it came from (exchange id or file:step)

    @property
    def tokens(self) -> int:
        return sum(t for _, t in self.blocks)


class Prefix:
    """Keys of a growing message sequence: key i hashes messages 0..i. Extended one message at a
    time, so rebuilding every prompt of a long agent hashes each message once."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self._hash = hashlib.blake2b(digest_size=16)

    def add(self, part: bytes) -> None:
        self._hash.update(hashlib.blake2b(part, digest_size=16).digest())
        self.keys.append(self._hash.copy().digest())


def split_tokens(sizes: list[int], prompt_tokens: int | None) -> list[int]:
    """Each message's tokens: its share by bytes of the reported prompt tokens, else bytes / 4."""
    total = sum(sizes)
    if prompt_tokens and total:
        return [round(prompt_tokens * s / total) for s in sizes]
    return [max(1, s // BYTES_PER_TOKEN) for s in sizes]


def chain(parts: Iterable[bytes], sizes: list[int], prompt_tokens: int | None) -> list[tuple[bytes, int]]:
    """Prefix keys of a message sequence, and each message's tokens (see the module docstring)."""
    prefix = Prefix()
    for part in parts:
        prefix.add(part)
    return list(zip(prefix.keys, split_tokens(sizes, prompt_tokens)))


# -- reuse ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Reuse:
    """Tokens of a request's prompt found in an earlier request of each relation."""

    same_agent: int = 0
    parent: int = 0
    sibling: int = 0
    other_session: int = 0


def reuse(requests: list[Request]) -> list[Reuse]:
    """Per request, in order: the longest prefix shared with earlier requests of each relation.

    Keys chain their prefix, so whoever held a block held every block before it: each relation's
    match is a binary search over the request's blocks, and an agent's request indexes only the
    blocks its own earlier requests had not (cost linear in the new blocks, not the prompts)."""
    agents: dict[bytes, set[str]] = defaultdict(set)  # block key -> agents whose requests held it
    sessions: dict[bytes, set[str]] = defaultdict(set)  # at most two kept: enough for "another"
    children: dict[bytes, dict[str, set[str]]] = defaultdict(dict)  # block key -> parent -> its children that held it
    lineages: dict[str, set[tuple[str, str | None]]] = defaultdict(set)  # agent -> the (session, parent) it came with
    found = []
    for r in requests:
        keys = [key for key, _ in r.blocks]

        def held_by_agent(key: bytes, agent: str = r.agent) -> bool:
            return agent in agents.get(key, ())

        same = _held(keys, held_by_agent)
        found.append(_reuse_of(r, keys, same, agents, sessions, children))
        # The first `same` blocks already list this agent, and its session and parent when it
        # never came with others.
        lineage = lineages[r.agent]
        indexed = same if lineage == {(r.session, r.parent)} else 0
        lineage.add((r.session, r.parent))
        for key in keys[indexed:]:
            agents[key].add(r.agent)
            if len(sessions[key]) < 2:
                sessions[key].add(r.session)
            if r.parent is not None:
                children[key].setdefault(r.parent, set()).add(r.agent)
    return found


def _reuse_of(
    r: Request,
    keys: list[bytes],
    same: int,
    agents: dict[bytes, set[str]],
    sessions: dict[bytes, set[str]],
    children: dict[bytes, dict[str, set[str]]],
) -> Reuse:
    """A request's reuse by relation, given its match with its own agent (`same` blocks)."""
    ends = [0, *accumulate(size for _, size in r.blocks)]  # tokens of the first n blocks
    result = Reuse(same_agent=ends[same])
    parent = r.parent
    if parent is not None:
        result.parent = ends[_held(keys, lambda key: parent in agents.get(key, ()))]
        result.sibling = ends[_held(keys, lambda key: bool(children.get(key, {}).get(parent, set()) - {r.agent}))]
    result.other_session = ends[_held(keys, lambda key: bool(sessions.get(key, set()) - {r.session}))]
    return result


def _held(keys: list[bytes], held: Callable[[bytes], bool]) -> int:
    """How many leading keys pass `held`, which holds for a prefix of them."""
    low, high = 0, len(keys)
    while low < high:
        middle = (low + high + 1) // 2
        if held(keys[middle - 1]):
            low = middle
        else:
            high = middle - 1
    return low


# -- routing ----------------------------------------------------------------------------------


class Worker:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.blocks: OrderedDict[bytes, int] = OrderedDict()
        self.size = 0
        self.requests = 0

    def serve(self, request: Request) -> int:
        """Cached tokens of the request's prompt here; then its blocks are cached (LRU)."""
        cached = 0
        for key, size in request.blocks:
            if key not in self.blocks:
                break
            cached += size
        for key, size in request.blocks:
            if key in self.blocks:
                self.blocks.move_to_end(key)
            else:
                self.blocks[key] = size
                self.size += size
        while self.size > self.capacity and self.blocks:
            _, size = self.blocks.popitem(last=False)
            self.size -= size
        self.requests += 1
        return cached


@dataclass(slots=True)
class Outcome:
    strategy: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    per_request: list[int] = field(default_factory=list)  # cached tokens, in request order


def affinity_key(session: str, parent: str | None) -> str:
    """Dynamo 1.6+: a root is pinned by its own id, a child by its parent's (siblings together)."""
    return f"children-of:{parent}" if parent is not None else session


def simulate(requests: list[Request], strategy: str, workers: int, cache_tokens: int, seed: int = 0) -> Outcome:
    pool = [Worker(cache_tokens) for _ in range(workers)]
    rng = random.Random(seed)
    pinned: dict[str, Worker] = {}
    outcome = Outcome(strategy)
    for n, r in enumerate(requests):
        if strategy == "round-robin":
            worker = pool[n % workers]
        elif strategy in ("lineage", "native-headers"):
            lineage = (r.agent, r.parent) if strategy == "lineage" else r.native
            if lineage is None:
                worker = rng.choice(pool)
            else:
                key = affinity_key(*lineage)
                worker = pinned.get(key) or pinned.setdefault(key, min(pool, key=lambda w: w.requests))
        elif strategy == "random":
            worker = rng.choice(pool)
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
        cached = worker.serve(r)
        outcome.prompt_tokens += r.tokens
        outcome.cached_tokens += cached
        outcome.per_request.append(cached)
    return outcome


# -- inputs -----------------------------------------------------------------------------------


def native_lineage(headers: dict[str, str]) -> tuple[str, str | None] | None:
    """(session, parent) a Dynamo frontend derives from the CLIs' own headers when no x-dynamo-*
    header is sent (docs/dynamo.md): Claude Code, then Codex, then OpenCode; None for other clients."""
    claude = headers.get("x-claude-code-session-id")
    if claude:
        agent = headers.get("x-claude-code-agent-id")
        return (agent, headers.get("x-claude-code-parent-agent-id") or claude) if agent else (claude, None)
    if thread := headers.get("thread-id"):
        return thread, headers.get("x-codex-parent-thread-id")
    if session := headers.get("x-session-id"):
        return session, headers.get("x-parent-session-id")
    return None


def from_calls(calls: Iterable[Any]) -> list[Request]:
    """Requests from scoped Calls (offline replay of saved flows), side requests included. A
    Responses request that continues a stored response (`previous_response_id`) sends only its new
    input: its prompt is that response's prompt and output, then the new input."""
    found = []
    stored: dict[str, tuple[list[bytes], list[int]]] = {}  # response id -> prompt and output, as parts
    for call in sorted(calls, key=lambda c: c.t_start):
        scope = call.scope
        if scope is None or scope.pending:
            continue
        previous = stored.get(str(call.fields.get("previous_response_id") or ""))
        parts, sizes = (list(previous[0]), list(previous[1])) if previous else ([], [])
        if not previous or call.system:
            parts.append(("system\0" + BILLING_LINE.sub(billing_fields_sent_to_any_host, call.system)).encode("utf-8", "surrogatepass"))
            sizes.append(len(call.system.encode("utf-8", "surrogatepass")))
        parts += [m.fingerprint() for m in call.messages]
        sizes += [_message_bytes(m) for m in call.messages]
        blocks = chain(parts, sizes, call.response.usage.input_tokens)
        found.append(Request(scope.session_id, scope.agent_id, scope.parent_id, blocks, native_lineage(call.headers), call.exchange_id))
        output = call.response.output
        if call.response.id and output is not None:
            stored[call.response.id] = (parts + [output.fingerprint()], sizes + [_message_bytes(output)])
    return found


def billing_fields_sent_to_any_host(line: re.Match[str]) -> str:
    fields = [f.strip() for f in line[1].split(";")]
    kept = [f for f in fields if f.partition("=")[0] in BILLING_FIELDS_SENT_TO_ANY_HOST]
    return "x-anthropic-billing-header: " + "; ".join(kept) + ";"


def _message_bytes(message: Any) -> int:
    size = len(message.text.encode("utf-8", "surrogatepass")) + len(message.reasoning)
    size += sum(len(c.name) + len(c.arguments) for c in message.tool_calls)
    size += sum(len(r.content) for r in message.tool_results)
    return max(size, 1)


def from_trajectory(document: dict[str, Any], source: str = "") -> list[Request]:
    """Requests rebuilt from an ATIF trajectory: each agent step's prompt is the agent's system
    prompt, user steps, earlier agent steps and their observations (what the agent had sent)."""
    found: list[tuple[str, Request]] = []
    session = str(document.get("session_id", ""))
    _walk(document, session, None, source, found)
    found.sort(key=lambda pair: pair[0])
    return [r for _, r in found]


def _walk(trajectory: dict[str, Any], session: str, parent: str | None, source: str, found: list[tuple[str, Request]]) -> None:
    agent = str(trajectory.get("trajectory_id", ""))
    harness = _harness_decided(trajectory)
    prefix = Prefix()
    sizes: list[int] = []
    for step in trajectory.get("steps") or []:
        if (((step.get("extra") or {}).get("agent_lineage")) or {}).get("no_agent_calls"):
            continue  # the placeholder of an agent seen only through others
        message = step.get("message")
        text = message if isinstance(message, str) else str(message)
        if step.get("source") == "agent" and step.get("llm_call_count") != 0:
            metrics = step.get("metrics") or {}
            blocks = list(zip(prefix.keys, split_tokens(sizes, metrics.get("prompt_tokens"))))
            native = (agent, parent) if harness else None
            found.append(
                (str(step.get("timestamp", "")), Request(session, agent, parent, blocks, native, f"{source}:{agent}:{step.get('step_id')}"))
            )
        piece = f"{step.get('source')}\0{text}"
        for call in step.get("tool_calls") or []:
            piece += f"\1{call.get('function_name')}\0{call.get('arguments')}"
        for result in ((step.get("observation") or {}).get("results")) or []:
            piece += f"\2{result.get('content')}"
        part = piece.encode("utf-8", "surrogatepass")
        prefix.add(part)
        sizes.append(max(1, len(part)))
    for child in trajectory.get("subagent_trajectories") or []:
        _walk(child, session, agent, source, found)


def _harness_decided(trajectory: dict[str, Any]) -> bool:
    """Whether the client's own ids named this agent (then Dynamo's header rule finds it too)."""
    for step in trajectory.get("steps") or []:
        lineage = ((step.get("extra") or {}).get("agent_lineage")) or {}
        evidence = lineage.get("evidence") or {}
        if evidence:
            return str(evidence.get("agent", "")).startswith("harness:")
    return False


# -- the report -------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    requests: list[Request]
    reuse: list[Reuse]
    outcomes: dict[str, Outcome]
    workers: int
    cache_tokens: int


def report(requests: list[Request], workers: int = DEFAULT_WORKERS, cache_tokens: int = DEFAULT_CACHE_TOKENS, seed: int = 0) -> Report:
    outcomes = {s: simulate(requests, s, workers, cache_tokens, seed) for s in STRATEGIES}
    return Report(requests, reuse(requests), outcomes, workers, cache_tokens)


def table_lines(result: Report, top: int = 5) -> list[str]:
    total = sum(r.tokens for r in result.requests)
    lines = [
        f"{len(result.requests)} requests, {total:,} prompt tokens; {result.workers} workers, LRU prefix cache of {result.cache_tokens:,} tokens each",  # noqa: E501
        "",
        "prefix reuse (tokens shared with an earlier request of ...):",
    ]
    for name in ("same_agent", "parent", "sibling", "other_session"):
        shared = sum(getattr(u, name) for u in result.reuse)
        lines.append(f"  {name.replace('_', ' '):14} {shared:>12,}  ({_percent(shared, total)} of all prompt tokens)")
    baseline = result.outcomes["random"].cached_tokens
    lines += ["", f"  {'routing':16} {'cached share':>12}  {'prefill saved vs random':>24}"]
    for name, outcome in result.outcomes.items():
        lines.append(f"  {name:16} {_percent(outcome.cached_tokens, outcome.prompt_tokens):>12}  {outcome.cached_tokens - baseline:>+24,}")
    per_session = _per_session(result)
    if len(per_session) > 1:
        ranked = sorted(per_session.items(), key=lambda kv: kv[1][0] - kv[1][1], reverse=True)
        lines += ["", "sessions that gain most from lineage over native headers (cached tokens, lineage / native):"]
        for session, (ours, native, tokens) in ranked[:top]:
            lines.append(f"  {session[:40]:40} {ours:>10,} / {native:>10,} of {tokens:,}")
    agents = _per_agent(result)
    subagents = [(a, v) for a, v in agents.items() if v[3]]
    if subagents:
        lines += ["", "subagents (cached tokens under lineage / native headers, of their prompt tokens):"]
        for agent, (ours, native, tokens, _) in sorted(subagents, key=lambda kv: kv[1][0] - kv[1][1], reverse=True)[:top]:
            lines.append(f"  {agent[:40]:40} {ours:>10,} / {native:>10,} of {tokens:,}")
    return lines


def _per_session(result: Report) -> dict[str, tuple[int, int, int]]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    ours, native = result.outcomes["lineage"].per_request, result.outcomes["native-headers"].per_request
    for r, a, b in zip(result.requests, ours, native):
        entry = sums[r.session]
        entry[0] += a
        entry[1] += b
        entry[2] += r.tokens
    return {k: (v[0], v[1], v[2]) for k, v in sums.items()}


def _per_agent(result: Report) -> dict[str, tuple[int, int, int, bool]]:
    sums: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0, False])
    ours, native = result.outcomes["lineage"].per_request, result.outcomes["native-headers"].per_request
    for r, a, b in zip(result.requests, ours, native):
        entry = sums[r.agent]
        entry[0] += a
        entry[1] += b
        entry[2] += r.tokens
        entry[3] = r.parent is not None
    return {k: (v[0], v[1], v[2], v[3]) for k, v in sums.items()}


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"
