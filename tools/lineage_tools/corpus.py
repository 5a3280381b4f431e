"""A labelled corpus of simulated agent traffic, written as mitmproxy flow files.

Accuracy is measured, not assumed: this generator imitates how Claude Code, Codex and apps on
the OpenAI SDKs talk to their LLM endpoint (docs/agents.md and the real recordings in
tests/fixtures), runs many sessions at once on a simulated clock, and saves what a proxy would
have saved (`NAME.mitm`) with the ground truth beside it (`NAME.truth.json`, the same format as
the real recordings' labels), so one scorer (`lineage_tools.scoring`) handles both.

    python -m lineage_tools.corpus --out DIR --style claude|codex|sdk|all --sessions N --seed S [--strip-ids]

Client styles:
- claude: Anthropic Messages SSE with Claude Code's headers, billing block, mid-conversation
  system entries, `Agent` delegation (children's requests interleave when parallel), the `HEAD /`
  probe and quota probe at process start, and title requests from interactive sessions;
- codex: Responses SSE with Codex's session/thread headers and turn metadata, delegation through
  tool_search -> spawn_agent -> wait_agent -> `<subagent_notification>`, and the title request
  the TUI sends under a fresh session of its own;
- sdk: apps on the OpenAI SDK or Agents SDK, no identifying header at all: Chat Completions or
  Responses, JSON or SSE, agents exposed as tools (`{"input": task}`), optional title requests.

Each session mixes (from its own seeded random stream) 1-4 user turns, tool loops with parallel
calls, sequential, parallel and nested subagents, side requests, failed responses (a 5xx, then
the client's retry of the same request) and jittered think / tool / streaming times. `--strip-ids`
writes the same traffic with every identifying header and body field removed (message contents
are kept) and the same truth. The same arguments always give byte-identical files.
"""

from __future__ import annotations

import argparse
import copy
import email.utils
import json
import random
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mitmproxy import connection, http
from mitmproxy.io import FlowWriter
from mitmproxy.proxy.mode_specs import ProxyMode

STYLES = ("claude", "codex", "sdk")
EPOCH = 1_795_700_000.0  # simulated time starts here (late 2026, like the real recordings)
UPSTREAM_PORT = 28751
PROXY_PORT = 28752
FAILURE_RATE = 0.03  # share of LLM requests answered with a 5xx first (the client retries)
_ALNUM = string.ascii_letters + string.digits


def dumps(value: Any) -> str:
    """Compact JSON, as the Node, Rust and Python clients and the APIs write it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- ids ------------------------------------------------------------------------------------


class Ids:
    """Identifiers in each provider's format, drawn from one seeded stream."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def hex(self, n: int) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def alnum(self, n: int) -> str:
        return "".join(self.rng.choices(_ALNUM, k=n))

    def uuid4(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def uuid7(self, t: float) -> str:
        """Codex ids: a millisecond timestamp first, so they sort by creation time."""
        ms = int(t * 1000) & ((1 << 48) - 1)
        value = (ms << 80) | (0x7 << 76) | (self.rng.getrandbits(12) << 64) | (0b10 << 62) | self.rng.getrandbits(62)
        return str(uuid.UUID(int=value))


# -- the simulated wire -------------------------------------------------------------------


@dataclass
class Wire:
    """One simulated HTTP exchange and its ground-truth label."""

    method: str
    path: str
    headers: list[tuple[str, str]]  # Content-Length is filled in when the flow is written
    content: bytes  # the body as sent: serialized at once, the history it holds keeps growing
    port: int  # the client's ephemeral port
    t_start: float
    t_sent: float  # the request body has fully arrived
    truth: dict[str, Any]
    status: int = 200
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    t_first_byte: float = 0.0
    t_end: float = 0.0


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any = ""  # what the client sends back: text, or Claude content blocks
    item_id: str = ""  # the Responses output item id
    namespace: str | None = None
    kind: str = "function"  # function | tool_search


@dataclass
class Output:
    """What the simulated model answers to one request."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    reasoning: bool = False  # Codex: an encrypted reasoning item comes first


@dataclass(eq=False)
class Agent:
    truth_id: str  # the label: "main", a Claude agent id, a Codex thread id, an SDK agent id
    parent: Agent | None
    depth: int
    task: str  # the prompt (root) or the delegated task
    port: int
    history: list[dict[str, Any]] = field(default_factory=list)  # the conversation in wire format
    can_delegate: bool = True
    sent: bool = False  # has made its first request
    role: str = ""  # SDK: which specialist it is
    specialists: list[str] = field(default_factory=list)  # SDK: the specialists it may call as tools
    turn_id: str = ""  # Codex: the agent's current turn id
    tools_loaded: bool = False  # Codex: multi_agent tools found through tool_search
    saw_tool_result: bool = False  # Claude: a subagent's harness adds a system entry after it


@dataclass
class Round:
    kind: str  # tools | delegate
    count: int


# -- content --------------------------------------------------------------------------------

MODULES = ["billing", "auth", "scheduler", "parser", "cache", "exporter", "router", "ingest", "metrics", "storage", "search", "notify"]
VERBS = ["parse", "load", "render", "validate", "sync", "merge", "resolve", "flush", "retry", "encode", "fetch", "apply"]
NOUNS = ["invoice", "token", "config", "batch", "header", "session", "record", "schedule", "payload", "index", "cursor", "policy"]
ERRORS = [
    "KeyError: 'tenant_id'",
    "AssertionError: expected 3 rows, got 2",
    "TimeoutError after 30s",
    "TypeError: 'NoneType' object is not iterable",
    "ValueError: invalid literal for int()",
    "UnicodeDecodeError at byte 0x9f",
]
PROJECTS = ["/home/user/project", "/home/user/src/ledger", "/home/user/work/api-gateway", "/srv/app"]
FOLLOW_UPS = [
    "continue",
    "yes, go ahead",
    "run the tests again",
    "Thanks. Now add a regression test for that.",
    "Also update the changelog.",
    "Can you explain why that fixes it?",
    "ok, commit it",
]
NICKNAMES = ["Erdos", "Noether", "Turing", "Lovelace", "Hopper", "Euler", "Gauss", "Curie"]


class Words:
    """Prompts, tasks and tool traffic for coding agents, varied by the seeded stream."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def func(self) -> str:
        return f"{self.rng.choice(VERBS)}_{self.rng.choice(NOUNS)}"

    def path(self) -> str:
        module = self.rng.choice(MODULES)
        return f"src/{module}/{self.rng.choice(NOUNS)}s.py"

    def test_command(self) -> str:
        return f"pytest -q tests/test_{self.rng.choice(MODULES)}.py"

    def prompt(self) -> str:
        r = self.rng
        n = r.randint(100, 9999)
        return r.choice(
            [
                f"Fix the failing test test_{self.func()} in tests/test_{r.choice(MODULES)}.py: it fails with `{r.choice(ERRORS)}` since PR #{n}.",  # noqa: E501
                f"Add a --{r.choice(NOUNS)}-limit option to the {r.choice(MODULES)} CLI (default {n}) and document it in README.md.",
                f"Refactor {self.func()} in {self.path()} so it reads the config once; keep the public API. Ticket OPS-{n}.",
                f"Why does `{self.test_command()}` fail with {r.choice(ERRORS)} on CI run {n}? Find the cause and fix it.",
                f"Rename {self.func()} to {self.func()}_v{n % 7 + 2} across the repo and update every call site.",
                f"Review the diff on branch feature/{r.choice(NOUNS)}-{n} for bugs and summarise what you find.",
            ]
        )

    def follow_up(self) -> str:
        if self.rng.random() < 0.5:
            return self.rng.choice(FOLLOW_UPS)
        return f"Now do the same for {self.path()} (issue #{self.rng.randint(100, 9999)})."

    def subtask(self) -> str:
        r = self.rng
        return (
            r.choice(
                [
                    f"Search the codebase for every caller of {self.func()} and list the files with line numbers. Report only the list.",
                    f"Read {self.path()} and summarise how {self.func()} handles errors; do not edit anything.",
                    f"Run `{self.test_command()}` and report any failures verbatim, with the failing assertion.",
                    f"Find where the {r.choice(NOUNS)} retry limit is configured (look for {r.randint(2, 99)} or RETRY_*) and report the file and line.",  # noqa: E501
                    f"Check whether {self.path()} still imports {self.func()}; if it does, explain what it is used for.",
                ]
            )
            + f" (subtask {r.randint(1000, 99999)})"
        )

    def preamble(self) -> str:
        return self.rng.choice(
            ["", "", "Let me look at the code first.", "I'll check the tests.", "Running a command.", "Delegating part of this."]
        )

    def answer(self) -> str:
        r = self.rng
        return r.choice(
            [
                f"Done: {self.func()} now handles the empty case and the tests pass ({r.randint(3, 90)} passed).",
                f"The failure comes from {self.path()}:{r.randint(10, 400)}, where the {r.choice(NOUNS)} is read before it is set. Fixed.",
                f"I found {r.randint(2, 14)} call sites; all are updated and the suite is green.",
                "No bugs found; two style nits are noted inline.",
            ]
        )

    def shell_output(self, command: str) -> str:
        r = self.rng
        if command.startswith("pytest"):
            return f"{r.randint(3, 80)} passed, {r.randint(0, 2)} failed in {r.uniform(0.5, 9):.2f}s"
        if command.startswith(("rg", "grep")):
            return "\n".join(f"{self.path()}:{r.randint(1, 400)}:    {self.func()}(x)" for _ in range(r.randint(1, 4)))
        return "ok"

    def shell_command(self) -> str:
        r = self.rng
        return r.choice(
            [
                self.test_command(),
                f"rg -n '{self.func()}' src",
                "git status --short",
                f"git diff --stat HEAD~{r.randint(1, 5)}",
                f"ls {r.choice(MODULES)}",
            ]
        )

    def file_text(self) -> str:
        return "\n".join(
            f"{i:>6}\tdef {self.func()}(x):" if i % 3 == 1 else f"{i:>6}\t    return x" for i in range(1, self.rng.randint(4, 12))
        )


# -- SDK app domains: orchestrators with specialist agents exposed as tools --------------------

SDK_DOMAINS: dict[str, dict[str, Any]] = {
    "support": {
        "instructions": "You are the support desk orchestrator. Answer the customer; call the specialists as tools when their area is involved.",  # noqa: E501
        "prompts": [
            "Customer #{n} asks why invoice #{m} shows a late fee, and where their parcel is.",
            "Order {m} for customer #{n} arrived damaged; they want a refund and a replacement.",
            "Customer #{n} was charged twice for order {m}. Sort it out and tell them when the parcel ships.",
        ],
        "specialists": {
            "billing_expert": (
                "You handle invoices, refunds and payment plans.",
                ["lookup_invoice", "issue_refund"],
                "Check invoice #{m} for customer #{n} and report the balance and any fees.",
            ),
            "shipping_expert": (
                "You track parcels and arrange replacements.",
                ["track_order"],
                "Track the parcel of order {m} for customer #{n} and give its ETA.",
            ),
            "policy_expert": (
                "You quote the refund and warranty policy. Answer from memory.",
                [],
                "Quote our refund policy that applies to order {m} (customer #{n}).",
            ),
        },
    },
    "research": {
        "instructions": "You are a research lead. Break the question down and delegate to the specialists; write the final answer yourself.",  # noqa: E501
        "prompts": [
            "Compare the {a} and {b} storage engines for a write-heavy workload of {n} events per second.",
            "Summarise what changed in release {n}.{m} of the {a} project and whether it affects us.",
            "Estimate the monthly cost of running {n} {a} nodes versus a managed {b} cluster.",
        ],
        "specialists": {
            "web_researcher": (
                "You search the web and cite sources.",
                ["web_search", "fetch_page"],
                "Find recent benchmarks of {a} under {n} writes per second; cite sources.",
            ),
            "data_analyst": (
                "You compute figures from data the lead gives you.",
                ["run_sql"],
                "Compute the cost per million events for {a} and {b} at {n} events per second.",
            ),
            "fact_checker": (
                "You verify claims. Answer yes or no with one reason.",
                [],
                "Verify the claim that {a} release {n}.{m} changed its default compaction.",
            ),
        },
    },
    "travel": {
        "instructions": "You are a travel planner. Use the booking specialists; confirm every booking with the traveller.",
        "prompts": [
            "Plan a {n}-day trip to {a} in May for two people, budget {m} EUR.",
            "Find a flight from {a} to {b} on the {n}th and a hotel near the conference centre.",
        ],
        "specialists": {
            "flight_agent": (
                "You find and hold flights.",
                ["search_flights"],
                "Find two flight options from {a} to {b} on the {n}th under {m} EUR.",
            ),
            "hotel_agent": (
                "You find and hold hotel rooms.",
                ["search_hotels"],
                "Find a hotel in {b} for {n} nights under {m} EUR per night.",
            ),
            "visa_agent": (
                "You answer visa questions. Answer from memory.",
                [],
                "Say whether a traveller from {a} needs a visa for {b} (trip #{m}).",
            ),
        },
    },
}
SDK_FOLLOW_UPS = [
    "Thanks. And what about order {m}?",
    "Can you check the same for customer #{n}?",
    "ok, go ahead",
    "Please double-check {a} as well.",
    "What would change for {b}?",
]
SDK_PLACES = ["Paris", "Rome", "Oslo", "Lisbon", "Tokyo", "Denver", "Nairobi", "Lima"]
SDK_ENGINES = ["RocksDB", "LevelDB", "Cassandra", "ScyllaDB", "Postgres", "ClickHouse"]
SDK_TOOLS: dict[str, tuple[str, str, str]] = {  # name -> (argument, description, result template)
    "lookup_invoice": ("invoice_id", "Look up an invoice by id.", "invoice {v}: open, balance {x} EUR, late fee 5 EUR"),
    "issue_refund": ("order_id", "Refund an order.", "refund for {v} issued: {x} EUR"),
    "track_order": ("order_id", "Track a parcel by order id.", "order {v}: in transit, ETA {x} days"),
    "web_search": ("query", "Search the web.", "3 results for {v!r}: blog.example.com/{x}, docs.example.org/{x}, news.example.net/{x}"),
    "fetch_page": ("url", "Fetch a web page.", "<title>Benchmark {x}</title> ... {x} writes/s sustained ..."),
    "run_sql": ("query", "Run a read-only SQL query.", "cost_per_million\n{x}.{x}"),
    "search_flights": ("route", "Search flights.", "{v}: AF{x} 08:10, LH{x} 13:45"),
    "search_hotels": ("city", "Search hotels.", "{v}: Hotel Central ({x} EUR), Parkside Inn ({x} EUR)"),
}


# -- response rendering -------------------------------------------------------------------------


def _pieces(text: str, size: int = 24) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _sse(event: str | None, data: Any) -> str:
    text = data if isinstance(data, str) else dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


def anthropic_events(message_id: str, model: str, output: Output, usage: dict[str, int]) -> bytes:
    """A Messages stream exactly as the API sends it: start, ping, blocks, delta, stop."""
    start_usage = {**usage, "output_tokens": 1}
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events = [_sse("message_start", {"type": "message_start", "message": message}), _sse("ping", {"type": "ping"})]
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if output.text:
        blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in _pieces(output.text)]))
    for call in output.calls:
        start = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
        blocks.append((start, [{"type": "input_json_delta", "partial_json": p} for p in _pieces(dumps(call.arguments), 40)]))
    for index, (start, deltas) in enumerate(blocks):
        events.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events += [_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = "tool_use" if output.calls else "end_turn"
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return "".join(events).encode()


def anthropic_message(message_id: str, model: str, output: Output, usage: dict[str, int]) -> bytes:
    content: list[dict[str, Any]] = [{"type": "text", "text": output.text}] if output.text else []
    content += [{"type": "tool_use", "id": c.call_id, "name": c.name, "input": c.arguments} for c in output.calls]
    stop = "tool_use" if output.calls else "end_turn"
    return dumps(
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
    ).encode()


def responses_items(output: Output, message_id: str, ids: Ids) -> list[dict[str, Any]]:
    """The output items of a Responses answer (also what the client echoes back as input)."""
    items: list[dict[str, Any]] = []
    if output.reasoning:
        items.append({"type": "reasoning", "id": f"rs_{ids.hex(48)}", "summary": [], "encrypted_content": "gAAAAB" + ids.alnum(120)})
    if output.text:
        items.append(
            {
                "type": "message",
                "id": message_id,
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": output.text, "annotations": []}],
            }
        )
    for call in output.calls:
        if call.kind == "tool_search":
            items.append(
                {
                    "type": "tool_search_call",
                    "id": call.item_id,
                    "call_id": call.call_id,
                    "execution": "client",
                    "status": "completed",
                    "arguments": call.arguments,
                }
            )
            continue
        item = {
            "type": "function_call",
            "id": call.item_id,
            "call_id": call.call_id,
            "name": call.name,
            "arguments": dumps(call.arguments),
            "status": "completed",
        }
        if call.namespace:
            item["namespace"] = call.namespace
        items.append(item)
    return items


def responses_object(
    response_id: str, model: str, created: int, status: str, items: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": items,
        "parallel_tool_calls": True,
        "usage": usage,
    }


def responses_events(response: dict[str, Any]) -> bytes:
    """A Responses stream: created, in_progress, each item added / deltas / done, completed."""
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
    ]
    for index, item in enumerate(response["output"]):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append(("response.output_item.added", {"output_index": index, "item": {**item, "status": "in_progress", "content": []}}))
            events.append(("response.content_part.added", {**at, "content_index": 0, "part": part}))
            events += [("response.output_text.delta", {**at, "content_index": 0, "delta": p, "logprobs": []}) for p in _pieces(text)]
            events.append(("response.output_text.done", {**at, "content_index": 0, "text": text, "logprobs": []}))
            events.append(("response.content_part.done", {**at, "content_index": 0, "part": {**part, "text": text}}))
        elif item["type"] == "function_call":
            events.append(
                ("response.output_item.added", {"output_index": index, "item": {**item, "arguments": "", "status": "in_progress"}})
            )
            events += [("response.function_call_arguments.delta", {**at, "delta": p}) for p in _pieces(item["arguments"], 40)]
            events.append(("response.function_call_arguments.done", {**at, "arguments": item["arguments"]}))
        else:  # reasoning and tool_search_call arrive whole
            events.append(
                (
                    "response.output_item.added",
                    {"output_index": index, "item": {**item, "status": "in_progress"} if "status" in item else item},
                )
            )
        events.append(("response.output_item.done", {"output_index": index, "item": item}))
    events.append(("response.completed", {"response": response}))
    return "".join(_sse(kind, {"type": kind, "sequence_number": n, **data}) for n, (kind, data) in enumerate(events)).encode()


def chat_tool_calls(output: Output) -> list[dict[str, Any]]:
    return [{"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": dumps(c.arguments)}} for c in output.calls]


def chat_completion(completion_id: str, model: str, created: int, output: Output, usage: dict[str, Any]) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": output.text or None, "refusal": None, "annotations": []}
    if output.calls:
        message["tool_calls"] = chat_tool_calls(output)
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if output.calls else "stop"}
    return dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_5d0c1a7e32",
        }
    ).encode()


def chat_events(completion_id: str, model: str, created: int, output: Output, usage: dict[str, Any]) -> bytes:
    """A Chat Completions stream with `stream_options.include_usage`: usage in a last, choice-less chunk."""

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, last_usage: dict[str, Any] | None = None) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return _sse(
            None,
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_5d0c1a7e32",
                "choices": choices,
                "usage": last_usage,
            },
        )

    events = [chunk({"role": "assistant", "content": "" if output.text else None, "refusal": None})]
    events += [chunk({"content": p}) for p in _pieces(output.text)] if output.text else []
    for i, call in enumerate(chat_tool_calls(output)):
        head = {"index": i, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
        events.append(chunk({"tool_calls": [head]}))
        events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in _pieces(call["function"]["arguments"], 40)]
    events.append(chunk({}, "tool_calls" if output.calls else "stop"))
    events.append(chunk(None, last_usage=usage))
    events.append(_sse(None, "[DONE]"))
    return "".join(events).encode()


# -- the session simulation ---------------------------------------------------------------------


class Session:
    """One simulated session: its agents' conversations, timing, and the wires they produce.

    Time is computed agent by agent: an agent's requests follow each other (response time, tool
    time), a subagent starts when its parent's delegating response ends, and the parent resumes when
    its last child is done. Sorting every wire by start time then interleaves sessions, parallel
    children and side requests as the proxy would have seen them.
    """

    client_label = ""

    def __init__(self, builder: CorpusBuilder, index: int, start: float) -> None:
        self.builder = builder
        self.rng = random.Random(f"{builder.style}:{builder.seed}:session:{index}")
        self.ids = Ids(self.rng)
        self.words = Words(self.rng)
        self.start = start
        self.root_id = ""
        self.turn = 0
        self.pending_turn = False  # a prompt was typed: the root's next request opens a turn
        self.first_prompt = ""
        self.max_depth = self.rng.choice((1, 1, 2, 3))
        self.delegation_rate = self.rng.choice((0.2, 0.5, 0.8))
        self.wants_title = False
        self.root: Agent | None = None

    # style hooks -----------------------------------------------------------------------

    def start_process(self, t: float) -> float:
        """Traffic a client process sends before its first prompt; the time it is ready."""
        return t

    def new_root(self, prompt: str, t: float) -> Agent:
        raise NotImplementedError

    def add_prompt(self, agent: Agent, prompt: str, t: float) -> None:
        raise NotImplementedError

    def new_child(self, parent: Agent, call: ToolCall, t: float) -> Agent:
        """The subagent a delegating tool call starts."""
        raise NotImplementedError

    def request(self, agent: Agent, retry: int) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
        raise NotImplementedError

    def render(self, agent: Agent, output: Output, wire: Wire) -> tuple[list[tuple[str, str]], bytes, bool]:
        """Response headers, body and whether it streamed; records the output in the history."""
        raise NotImplementedError

    def error_response(self, wire: Wire) -> tuple[int, list[tuple[str, str]], bytes]:
        raise NotImplementedError

    def tool_call(self, agent: Agent) -> ToolCall:
        raise NotImplementedError

    def add_tool_results(self, agent: Agent, calls: list[ToolCall], t: float) -> None:
        raise NotImplementedError

    def delegation_calls(self, agent: Agent, count: int) -> list[ToolCall]:
        raise NotImplementedError

    def delegation_result(self, child: Agent, final: str, duration: float) -> Any:
        return final

    def final_answer(self, agent: Agent) -> str:
        return self.words.answer()

    def title_request(self, t: float) -> None:
        """A title side request for the session's first prompt, sent at `t`."""

    # the run ---------------------------------------------------------------------------

    def run(self) -> None:
        t = self.start_process(self.start)
        for turn in range(self.rng.choice((1, 1, 2, 2, 3, 4))):
            if turn:
                t += self.think_time()
                if self.resumes_in_new_process():
                    t = self.start_process(t)
            prompt = self.prompt(turn)
            self.turn += 1
            self.pending_turn = True
            if self.root is None:
                self.first_prompt = prompt
                self.root = self.new_root(prompt, t)
            else:
                self.add_prompt(self.root, prompt, t)
            t, _ = self.run_agent(self.root, t)

    def resumes_in_new_process(self) -> bool:
        return False

    def prompt(self, turn: int) -> str:
        """What the user types for turn `turn` (0-based)."""
        return self.words.prompt() if turn == 0 else self.words.follow_up()

    def run_agent(self, agent: Agent, t: float) -> tuple[float, str]:
        """One turn of an agent (a subagent's whole task): tool rounds, delegations, final answer."""
        for round_ in self.plan(agent):
            if round_.kind == "tools":
                t = self.tool_round(agent, round_.count, t)
            else:
                t = self.delegate(agent, round_.count, t)
        final = Output(text=self.final_answer(agent))
        t = self.call(agent, final, t)
        return t, final.text

    def plan(self, agent: Agent) -> list[Round]:
        rng = self.rng
        most = 5 if agent.parent is None else 3
        tool_calls = 0 if rng.random() < 0.15 else rng.randint(1, most)
        rounds: list[Round] = []
        while tool_calls > 0:
            size = min(tool_calls, rng.choice((1, 1, 1, 2, 3)))  # sometimes parallel calls in one response
            rounds.append(Round("tools", size))
            tool_calls -= size
        rate = self.delegation_rate if agent.parent is None else 0.4
        if agent.can_delegate and agent.depth < self.max_depth and rng.random() < rate:
            shape = rng.choice(("single", "sequential", "parallel"))
            delegations = {"single": [1], "sequential": [1, 1], "parallel": [rng.randint(2, 3)]}[shape]
            for count in delegations:
                rounds.insert(rng.randint(0, len(rounds)), Round("delegate", count))
        return rounds

    def tool_round(self, agent: Agent, count: int, t: float) -> float:
        calls = [self.tool_call(agent) for _ in range(count)]
        t = self.call(agent, Output(text=self.words.preamble(), calls=calls), t)
        t += max(self.tool_time() for _ in calls)
        self.add_tool_results(agent, calls, t)
        return t

    def delegate(self, agent: Agent, count: int, t: float) -> float:
        """Synchronous delegation (Claude's Agent tool, agents as tools): the delegating calls, the
        children (in parallel when several: their requests interleave), then the results."""
        calls = self.delegation_calls(agent, count)
        t = self.call(agent, Output(text=self.words.preamble(), calls=calls), t)
        ends = []
        for call in calls:
            begin = t + self.rng.uniform(0.01, 0.15)
            child = self.new_child(agent, call, begin)
            end, final = self.run_agent(child, begin)
            ends.append(end)
            call.result = self.delegation_result(child, final, end - begin)
        t = max(ends) + self.rng.uniform(0.01, 0.1)
        self.add_tool_results(agent, calls, t)
        return t

    def call(self, agent: Agent, output: Output, t: float) -> float:
        """One LLM request of `agent` answered with `output` (after a failed attempt, sometimes)."""
        retry = 0
        if self.rng.random() < FAILURE_RATE:
            failed = self.emit_request(agent, t, retry)
            failed.status, failed.response_headers, failed.response_body = self.error_response(failed)
            failed.t_first_byte = failed.t_sent + self.rng.uniform(0.05, 1.5)
            failed.t_end = failed.t_first_byte + 0.001
            t = failed.t_end + self.rng.uniform(0.4, 2.0)  # the SDKs' retry backoff
            retry = 1
        wire = self.emit_request(agent, t, retry)
        wire.response_headers, wire.response_body, streamed = self.render(agent, output, wire)
        wire.t_first_byte = wire.t_sent + self.rng.uniform(0.25, 2.5)
        wire.t_end = wire.t_first_byte + (self.stream_time(output) if streamed else 0.002)
        if agent is self.root and self.wants_title:
            self.wants_title = False
            self.title_request(wire.t_start + self.rng.uniform(0.02, 0.4))
        return wire.t_end

    def emit_request(self, agent: Agent, t: float, retry: int) -> Wire:
        path, headers, body = self.request(agent, retry)
        truth = self.agent_truth(agent)
        return self.emit("POST", path, headers, body, agent.port, t, truth)

    def agent_truth(self, agent: Agent) -> dict[str, Any]:
        starts = agent.parent is None and self.pending_turn
        if agent.parent is None:
            self.pending_turn = False
        first = not agent.sent
        agent.sent = True
        return {
            "kind": "agent",
            "root_session_id": self.root_id,
            "agent_id": agent.truth_id,
            "parent_agent_id": agent.parent.truth_id if agent.parent else None,
            "turn_index": self.turn,
            "starts_new_turn": starts,
            "first_request_of_agent": first,
        }

    def side_truth(self, side_type: str, turn: int | None) -> dict[str, Any]:
        return {
            "kind": "side",
            "side_type": side_type,
            "root_session_id": self.root_id,
            "agent_id": None,
            "parent_agent_id": None,
            "turn_index": turn,
            "starts_new_turn": False,
        }

    def emit(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: dict[str, Any] | None,
        port: int,
        t: float,
        truth: dict[str, Any],
    ) -> Wire:
        content = dumps(body).encode() if body is not None else b""
        wire = Wire(method, path, headers, content, port, t, t + 0.0005 + len(content) / 40e6, {"client": self.client_label, **truth})
        self.builder.wires.append(wire)
        return wire

    # timing --------------------------------------------------------------------------

    def think_time(self) -> float:
        return self.rng.uniform(4.0, 240.0)

    def tool_time(self) -> float:
        return min(30.0, self.rng.lognormvariate(-1.0, 1.2))

    def stream_time(self, output: Output) -> float:
        size = len(output.text) + sum(len(dumps(c.arguments)) for c in output.calls)
        return self.rng.uniform(0.2, 1.5) + size / 4 * self.rng.uniform(0.01, 0.03)

    def usage_tokens(self, agent: Agent) -> tuple[int, int]:
        """(input, cached) tokens: the history grows, most of it cached after the first exchange."""
        total = 3000 + 180 * len(agent.history)
        return total, (total * 3 // 4) // 64 * 64 if len(agent.history) > 4 else 0

    def date(self, t: float) -> str:
        return email.utils.formatdate(t, usegmt=True)


# -- Claude Code ------------------------------------------------------------------------------

CLAUDE_VERSION = "2.1.197"
CLAUDE_MODEL = "claude-opus-4-8"
CLAUDE_SMALL_MODEL = "claude-haiku-4-5-20251001"
CLAUDE_BETAS = "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14,thinking-token-count-2026-05-13,context-management-2025-06-27,prompt-caching-scope-2026-01-05,mid-conversation-system-2026-04-07,effort-2025-11-24"  # noqa: E501
CLAUDE_REMINDER = (
    "<system-reminder>\nAs you answer the user's questions, you can use the following context:\n# currentDate\n"
    "Today's date is 2026-11-26.\n\n      IMPORTANT: this context may or may not be relevant to your tasks. You should not "
    "respond to this context unless it is highly relevant to your task.\n</system-reminder>\n\n"
)
CLAUDE_MAIN_PROMPT = (
    "\nYou are an interactive agent that helps users with software engineering tasks.\n\n# Harness\n - Text you output "
    "outside of tool use is displayed to the user as Github-flavored markdown in a terminal.\n - `<system-reminder>` tags in "
    "messages and tool results are injected by the harness, not the user.\n\n# Environment\n - Primary working directory: "
    "/home/user/project\n - Platform: linux\n"
)
CLAUDE_SUB_PROMPT = (
    "You are an agent for Claude Code, Anthropic's official CLI for Claude. Given the user's message, you should use the "
    "tools available to complete the task. When you complete the task, respond with a concise report covering what was "
    "done and any key findings.\n\n<env>\nWorking directory: /home/user/project\nPlatform: linux\n</env>"
)
CLAUDE_AGENT_TYPES = (
    "Available agent types for the Agent tool:\n- general-purpose: General-purpose agent for researching complex questions, "
    "searching for code, and executing multi-step tasks. (Tools: *)\n- Explore: Read-only search agent for broad fan-out "
    "searches. (Tools: All tools except Agent, Edit, Write)\n\nWhen you launch multiple agents for independent work, send them "
    "in a single message with multiple tool uses so they run concurrently."
)
CLAUDE_SKILLS = "The following skills are available for use with the Skill tool:\n\n- verify: Verify that a code change actually does what it's supposed to.\n- code-review: Review the current diff for correctness bugs."  # noqa: E501
CLAUDE_TITLE_PROMPT = 'Generate a concise, sentence-case title (3-7 words) that captures the main topic or goal of this coding session. Return JSON with a single "title" field.'  # noqa: E501


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


CLAUDE_TOOLS = [
    {
        "name": "Agent",
        "description": "Launch a new agent to handle complex, multi-step tasks autonomously.",
        "input_schema": _schema(
            {"description": {"type": "string"}, "prompt": {"type": "string"}, "subagent_type": {"type": "string"}},
            ["description", "prompt"],
        ),
    },
    {
        "name": "Bash",
        "description": "Executes a bash command and returns its output.",
        "input_schema": _schema({"command": {"type": "string"}, "description": {"type": "string"}}, ["command"]),
    },
    {
        "name": "Edit",
        "description": "Performs exact string replacements in files.",
        "input_schema": _schema(
            {"file_path": {"type": "string"}, "old_string": {"type": "string"}, "new_string": {"type": "string"}},
            ["file_path", "old_string", "new_string"],
        ),
    },
    {
        "name": "Grep",
        "description": "A powerful search tool built on ripgrep.",
        "input_schema": _schema({"pattern": {"type": "string"}, "path": {"type": "string"}}, ["pattern"]),
    },
    {
        "name": "Read",
        "description": "Reads a file from the local filesystem.",
        "input_schema": _schema({"file_path": {"type": "string"}}, ["file_path"]),
    },
    {
        "name": "Write",
        "description": "Writes a file to the local filesystem.",
        "input_schema": _schema({"file_path": {"type": "string"}, "content": {"type": "string"}}, ["file_path", "content"]),
    },
]


class ClaudeSession(Session):
    client_label = "claude-code"

    def __init__(self, builder: CorpusBuilder, index: int, start: float) -> None:
        super().__init__(builder, index, start)
        self.root_id = self.ids.uuid4()
        self.device_id = self.ids.hex(64)
        self.interactive = self.rng.random() < 0.4  # the TUI also asks for a session title
        self.wants_title = self.interactive
        self.user_agent = f"claude-cli/{CLAUDE_VERSION} (external, {'cli' if self.interactive else 'sdk-cli'})"
        self.port = 0

    def start_process(self, t: float) -> float:
        """`HEAD /` from the native runtime (its own user agent), sometimes a quota probe."""
        self.port = self.builder.port()
        probe = self.emit(
            "HEAD",
            "/",
            [
                ("Connection", "keep-alive"),
                ("User-Agent", "Bun/1.4.0"),
                ("Accept", "*/*"),
                ("Host", f"127.0.0.1:{UPSTREAM_PORT}"),
                ("Accept-Encoding", "gzip, deflate, br, zstd"),
            ],
            None,
            self.builder.port(),
            t,
            self.side_truth("probe", None),
        )
        probe.response_headers = [("date", self.date(t)), ("content-type", "application/json"), ("content-length", "2")]
        probe.response_body = b"{}"
        probe.t_first_byte = probe.t_sent + self.rng.uniform(0.003, 0.05)
        probe.t_end = probe.t_first_byte + 0.0005
        t = probe.t_end + self.rng.uniform(0.3, 0.6)
        if self.rng.random() < 0.5:
            body = {
                "model": CLAUDE_SMALL_MODEL,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "test"}],
                "metadata": {"user_id": self.user_id()},
            }
            quota = self.emit("POST", "/v1/messages?beta=true", self.headers(None, 0), body, self.port, t, self.side_truth("quota", None))
            self.json_answer(
                quota,
                anthropic_message(
                    f"msg_01{self.ids.alnum(22)}",
                    CLAUDE_SMALL_MODEL,
                    Output(text="Hi"),
                    {"input_tokens": 8, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1},
                ),
            )
            t = quota.t_end + self.rng.uniform(0.05, 0.3)
        if self.root is not None:
            self.root.port = self.port
        return t

    def resumes_in_new_process(self) -> bool:
        return not self.interactive and self.rng.random() < 0.3  # `claude -p --continue`

    def user_id(self) -> str:
        return dumps({"device_id": self.device_id, "account_uuid": "", "session_id": self.root_id})

    def headers(self, agent: Agent | None, retry: int) -> list[tuple[str, str]]:
        headers = [
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("User-Agent", self.user_agent),
            ("X-Claude-Code-Session-Id", self.root_id),
            ("X-Stainless-Arch", "x64"),
            ("X-Stainless-Lang", "js"),
            ("X-Stainless-OS", "Linux"),
            ("X-Stainless-Package-Version", "0.94.0"),
            ("X-Stainless-Retry-Count", str(retry)),
            ("X-Stainless-Runtime", "node"),
            ("X-Stainless-Runtime-Version", "v26.3.0"),
            ("X-Stainless-Timeout", "600"),
            ("anthropic-beta", CLAUDE_BETAS),
            ("anthropic-dangerous-direct-browser-access", "true"),
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", "sk-fake"),
            ("x-app", "cli"),
        ]
        if agent is not None and agent.parent is not None:
            headers.append(("x-claude-code-agent-id", agent.truth_id))
            if agent.parent.parent is not None:
                headers.append(("x-claude-code-parent-agent-id", agent.parent.truth_id))
        return headers + [
            ("Connection", "keep-alive"),
            ("Host", f"127.0.0.1:{UPSTREAM_PORT}"),
            ("Accept-Encoding", "gzip, deflate, br, zstd"),
            ("Content-Length", ""),
        ]

    def first_message(self, text: str) -> dict[str, Any]:
        return {"role": "user", "content": [{"type": "text", "text": CLAUDE_REMINDER}, {"type": "text", "text": text}]}

    def new_root(self, prompt: str, t: float) -> Agent:
        agent = Agent("main", None, 0, prompt, self.port)
        agent.history = [self.first_message(prompt), {"role": "system", "content": CLAUDE_AGENT_TYPES}]
        return agent

    def add_prompt(self, agent: Agent, prompt: str, t: float) -> None:
        agent.history.append({"role": "user", "content": [{"type": "text", "text": prompt}]})

    def new_child(self, parent: Agent, call: ToolCall, t: float) -> Agent:
        task = call.arguments["prompt"]
        agent = Agent(f"a{self.ids.hex(16)}", parent, parent.depth + 1, task, parent.port)
        agent.history = [self.first_message(task), {"role": "system", "content": CLAUDE_SKILLS}]
        return agent

    def request(self, agent: Agent, retry: int) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
        sub = agent.parent is not None
        billing = (
            f"x-anthropic-billing-header: cc_version={CLAUDE_VERSION}.{self.ids.hex(3)}; cc_entrypoint={'cli' if self.interactive else 'sdk-cli'};"  # noqa: E501
            + (" cc_is_subagent=true;" if sub else "")
        )
        system = [
            {"type": "text", "text": billing},
            {
                "type": "text",
                "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": CLAUDE_SUB_PROMPT if sub else CLAUDE_MAIN_PROMPT, "cache_control": {"type": "ephemeral"}},
        ]
        body: dict[str, Any] = {
            "model": CLAUDE_MODEL,
            "messages": _with_cache_marker(agent.history),
            "system": system,
            "tools": CLAUDE_TOOLS,
            "metadata": {"user_id": self.user_id()},
            "max_tokens": 32000 if sub else 64000,
            "thinking": {"type": "disabled"} if sub else {"type": "adaptive"},
        }
        if not sub:
            body["context_management"] = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
        body["output_config"] = {"effort": "high"}
        body["stream"] = True
        return "/v1/messages?beta=true", self.headers(agent, retry), body

    def usage(self, agent: Agent, output: Output) -> dict[str, int]:
        total, cached = self.usage_tokens(agent)
        written = (total - cached) // 64 * 64
        return {
            "input_tokens": total - cached - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": cached,
            "output_tokens": 20 + len(output.text) // 4,
        }

    def response_headers(self, t: float, content_type: str) -> list[tuple[str, str]]:
        return [
            ("date", self.date(t)),
            ("content-type", content_type),
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive"),
            ("request-id", f"req_011C{self.ids.alnum(20)}"),
            ("anthropic-organization-id", self.ids.uuid4()),
            ("server", "cloudflare"),
        ]

    def render(self, agent: Agent, output: Output, wire: Wire) -> tuple[list[tuple[str, str]], bytes, bool]:
        message_id = f"msg_01{self.ids.alnum(22)}"
        body = anthropic_events(message_id, CLAUDE_MODEL, output, self.usage(agent, output))
        content: list[dict[str, Any]] = [{"type": "text", "text": output.text}] if output.text else []
        content += [{"type": "tool_use", "id": c.call_id, "name": c.name, "input": c.arguments} for c in output.calls]
        agent.history.append({"role": "assistant", "content": content})
        return self.response_headers(wire.t_sent, "text/event-stream; charset=utf-8"), body, True

    def json_answer(self, wire: Wire, body: bytes) -> None:
        wire.response_headers = self.response_headers(wire.t_sent, "application/json")
        wire.response_body = body
        wire.t_end = wire.t_sent + self.rng.uniform(0.3, 1.2)
        wire.t_first_byte = wire.t_end - 0.002

    def error_response(self, wire: Wire) -> tuple[int, list[tuple[str, str]], bytes]:
        status, kind, message = self.rng.choice(((529, "overloaded_error", "Overloaded"), (500, "api_error", "Internal server error")))
        body = dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_011C{self.ids.alnum(20)}"}).encode()
        return status, [("date", self.date(wire.t_sent)), ("content-type", "application/json"), ("x-should-retry", "true")], body

    def tool_call(self, agent: Agent) -> ToolCall:
        words, kind = self.words, self.rng.choice(("Bash", "Bash", "Read", "Grep", "Edit"))
        call_id = f"toolu_01{self.ids.alnum(22)}"
        if kind == "Bash":
            command = words.shell_command()
            return ToolCall(call_id, "Bash", {"command": command, "description": "Run " + command.split()[0]}, words.shell_output(command))
        if kind == "Read":
            path = words.path()
            return ToolCall(call_id, "Read", {"file_path": f"/home/user/project/{path}"}, words.file_text())
        if kind == "Grep":
            pattern = words.func()
            return ToolCall(call_id, "Grep", {"pattern": pattern, "path": "/home/user/project/src"}, words.shell_output("rg"))
        path = f"/home/user/project/{words.path()}"
        return ToolCall(
            call_id,
            "Edit",
            {"file_path": path, "old_string": "return x", "new_string": "return x or []"},
            f"The file {path} has been updated.",
        )

    def add_tool_results(self, agent: Agent, calls: list[ToolCall], t: float) -> None:
        blocks = [{"tool_use_id": c.call_id, "type": "tool_result", "content": c.result, "is_error": False} for c in calls]
        agent.history.append({"role": "user", "content": blocks})
        if agent.parent is not None and not agent.saw_tool_result:
            agent.saw_tool_result = True
            agent.history.append({"role": "system", "content": CLAUDE_AGENT_TYPES})

    def delegation_calls(self, agent: Agent, count: int) -> list[ToolCall]:
        calls = []
        for _ in range(count):
            task = self.words.subtask()
            calls.append(
                ToolCall(
                    f"toolu_01{self.ids.alnum(22)}",
                    "Agent",
                    {"description": " ".join(task.split()[:4]), "prompt": task, "subagent_type": "general-purpose"},
                )
            )
        return calls

    def delegation_result(self, child: Agent, final: str, duration: float) -> Any:
        """The child's report, then the harness's line naming the child (`agentId`)."""
        footer = (
            f"agentId: {child.truth_id} (use SendMessage with to: '{child.truth_id}', summary: '<5-10 word recap>' to continue this agent)\n"  # noqa: E501
            f"<usage>subagent_tokens: {self.rng.randint(800, 40000)}\ntool_uses: {self.rng.randint(1, 9)}\nduration_ms: {int(duration * 1000)}</usage>"  # noqa: E501
        )
        return [{"type": "text", "text": final}, {"type": "text", "text": footer}]

    def title_request(self, t: float) -> None:
        schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"], "additionalProperties": False}
        body = {
            "model": CLAUDE_SMALL_MODEL,
            "max_tokens": 512,
            "messages": [{"role": "user", "content": self.first_prompt}],
            "system": [
                {"type": "text", "text": f"x-anthropic-billing-header: cc_version={CLAUDE_VERSION}.{self.ids.hex(3)}; cc_entrypoint=cli;"},
                {"type": "text", "text": CLAUDE_TITLE_PROMPT},
            ],
            "tools": [],
            "metadata": {"user_id": self.user_id()},
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
            "stream": False,
        }
        wire = self.emit(
            "POST", "/v1/messages?beta=true", self.headers(None, 0), body, self.builder.port(), t, self.side_truth("title", self.turn)
        )
        title = " ".join(self.first_prompt.split()[:5]).capitalize()
        self.json_answer(
            wire,
            anthropic_message(
                f"msg_01{self.ids.alnum(22)}",
                CLAUDE_SMALL_MODEL,
                Output(text=dumps({"title": title})),
                {"input_tokens": 120, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 12},
            ),
        )


def _with_cache_marker(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claude Code marks the last block of the last user message for prompt caching; the mark moves."""
    for i in range(len(history) - 1, -1, -1):
        message = history[i]
        if message["role"] == "user" and isinstance(message["content"], list):
            blocks = [dict(b) for b in message["content"]]
            blocks[-1]["cache_control"] = {"type": "ephemeral"}
            return [*history[:i], {**message, "content": blocks}, *history[i + 1 :]]
    return history


# -- Codex ----------------------------------------------------------------------------------------

CODEX_VERSION = "0.171.0"
CODEX_MODEL = "gpt-5.5"
CODEX_BASE_PROMPT = (
    "You are Codex, a coding agent based on GPT-5. You and the user share one workspace, and your job is to collaborate "
    "with them until their goal is genuinely handled. Prefer small, verifiable steps; run the tests you touch."
)
CODEX_PERMISSIONS = "<permissions instructions>\nFilesystem sandboxing defines which files can be read or written. `sandbox_mode` is `danger-full-access`.\n</permissions instructions>"  # noqa: E501
CODEX_SKILLS = "<skills_instructions>\n## Skills\nA skill is a set of local instructions stored in a `SKILL.md` file.\n- skill-creator: Create or update a Codex skill.\n</skills_instructions>"  # noqa: E501
CODEX_DEFERRED = "<tools>\nDeferred tool namespaces:\n- multi_agent_v1: Tools for spawning and managing sub-agents.\n</tools>"
CODEX_TITLE_PROMPT = 'You write short titles for coding threads. Reply with JSON {"title": ...}, at most 8 words.'


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "strict": False,
        "parameters": {"type": "object", "properties": properties, "required": required, "additionalProperties": False},
    }


CODEX_TOOLS = [
    _function(
        "exec_command",
        "Runs a command in a PTY, returning output or a session ID for ongoing interaction.",
        {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
        ["cmd"],
    ),
    _function(
        "write_stdin",
        "Writes characters to an existing unified exec session.",
        {"session_id": {"type": "number"}, "chars": {"type": "string"}},
        ["session_id"],
    ),
    _function("apply_patch", "Apply a patch to files in the workspace.", {"input": {"type": "string"}}, ["input"]),
    _function("view_image", "View a local image.", {"path": {"type": "string"}}, ["path"]),
]
CODEX_TOOL_SEARCH = {
    "type": "tool_search",
    "execution": "client",
    "description": "Search the deferred tool namespaces.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "number"}}, "required": ["query"]},
}
CODEX_MULTI_AGENT = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Tools for spawning and managing sub-agents.",
    "tools": [
        _function(
            "spawn_agent",
            "Spawn a sub-agent for a well-scoped task. Returns the spawned agent id.",
            {"message": {"type": "string"}},
            ["message"],
        ),
        _function(
            "wait_agent",
            "Wait for sub-agents to finish.",
            {"targets": {"type": "array", "items": {"type": "string"}}, "timeout_ms": {"type": "number"}},
            ["targets"],
        ),
    ],
}


class CodexSession(Session):
    client_label = "codex"

    def __init__(self, builder: CorpusBuilder, index: int, start: float) -> None:
        super().__init__(builder, index, start)
        self.root_id = self.ids.uuid7(start)
        self.installation_id = self.ids.uuid4()
        self.interactive = self.rng.random() < 0.4
        self.wants_title = self.interactive  # the TUI names the thread in a session of its own
        self.originator = "codex_cli_rs" if self.interactive else "codex_exec"
        term = "xterm-256color (codex-tui; " if self.interactive else "dumb (codex_exec; "
        self.user_agent = f"{self.originator}/{CODEX_VERSION} (Debian 12.0.0; x86_64) {term}{CODEX_VERSION})"
        self.cwd = self.rng.choice(PROJECTS)  # sessions in one project share the environment context
        self.root_turn_id = ""
        self.turn_started: dict[str, int] = {}

    def resumes_in_new_process(self) -> bool:
        return not self.interactive and self.rng.random() < 0.3  # `codex exec resume`

    def start_process(self, t: float) -> float:
        if self.root is not None:
            self.root.port = self.builder.port()
        return t + self.rng.uniform(0.2, 0.8)

    def message(self, role: str, texts: list[str], t: float) -> dict[str, Any]:
        return {
            "type": "message",
            "id": f"msg_{self.ids.uuid7(t)}",
            "role": role,
            "content": [{"type": "input_text", "text": x} for x in texts],
        }

    def opening(self, agent: Agent, task: str, t: float) -> None:
        extras = [CODEX_SKILLS, CODEX_PERMISSIONS] + ([CODEX_DEFERRED] if agent.can_delegate else [])
        environment = f"<environment_context>\n  <cwd>{self.cwd}</cwd>\n  <shell>bash</shell>\n  <current_date>2026-11-26</current_date>\n  <timezone>Etc/UTC</timezone>\n</environment_context>"  # noqa: E501
        agent.history = [
            {
                "type": "message",
                "id": "msg_e9aa3255-ae89-5084-b7d6-cf50cb056a18",
                "role": "developer",
                "content": [{"type": "input_text", "text": CODEX_BASE_PROMPT}],
            },
            self.message("developer", extras, t),
            self.message("user", [environment], t),
            self.message("user", [task], t),
        ]

    def new_turn_id(self, t: float) -> str:
        turn_id = self.ids.uuid7(t)
        self.turn_started[turn_id] = int(t * 1000)
        return turn_id

    def new_root(self, prompt: str, t: float) -> Agent:
        agent = Agent(self.root_id, None, 0, prompt, self.builder.port())
        self.opening(agent, prompt, t)
        agent.turn_id = self.root_turn_id = self.new_turn_id(t)
        return agent

    def add_prompt(self, agent: Agent, prompt: str, t: float) -> None:
        agent.history.append(self.message("user", [prompt], t))
        agent.turn_id = self.root_turn_id = self.new_turn_id(t)

    def new_child(self, parent: Agent, call: ToolCall, t: float) -> Agent:
        task = call.arguments["message"]
        agent = Agent(self.ids.uuid7(t), parent, parent.depth + 1, task, self.builder.port())
        agent.can_delegate = agent.depth < self.max_depth and self.rng.random() < 0.5
        self.opening(agent, task, t)
        agent.turn_id = self.new_turn_id(t)
        return agent

    def turn_metadata(self, agent: Agent) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "installation_id": self.installation_id,
            "session_id": self.root_id,
            "thread_id": agent.truth_id,
            "agent_name": "/root",
            "turn_id": agent.turn_id,
            "window_id": f"{agent.truth_id}:0",
            "window_number": 0,
            "request_kind": "turn",
            "history_initialization": "new",
        }
        if agent.parent is not None:
            meta["parent_thread_id"] = agent.parent.truth_id
            meta["parent_turn_id"] = agent.parent.turn_id
        meta["root_turn_id"] = self.root_turn_id
        if agent.parent is not None:
            meta["subagent_kind"] = "thread_spawn"
        meta["thread_source"] = "subagent" if agent.parent is not None else "user"
        meta["turn_trigger"] = "exec"
        meta["sandbox_mode"] = "danger-full-access"
        meta["turn_started_at_unix_ms"] = self.turn_started[agent.turn_id]
        meta["model"] = CODEX_MODEL
        meta["reasoning_effort"] = "medium"
        return meta

    def codex_headers(self, session: str, thread: str, meta: str, parent: str | None) -> list[tuple[str, str]]:
        headers = [("x-codex-beta-features", "remote_compaction_v2"), ("x-codex-window-id", f"{thread}:0"), ("x-codex-turn-metadata", meta)]
        if parent is not None:
            headers += [("x-codex-parent-thread-id", parent), ("x-openai-subagent", "collab_spawn")]
        return headers + [
            ("x-client-request-id", thread),
            ("session-id", session),
            ("thread-id", thread),
            ("accept", "text/event-stream"),
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-fake"),
            ("originator", self.originator),
            ("user-agent", self.user_agent),
            ("accept-encoding", "zstd,gzip"),
            ("host", f"127.0.0.1:{UPSTREAM_PORT}"),
            ("content-length", ""),
        ]

    def request(self, agent: Agent, retry: int) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
        meta = self.turn_metadata(agent)
        meta_text = dumps(meta)
        client_metadata = {
            "thread_id": agent.truth_id,
            "root_turn_id": self.root_turn_id,
            "x-codex-installation-id": self.installation_id,
            "turn_id": agent.turn_id,
            "x-codex-turn-metadata": meta_text,
            "session_id": self.root_id,
            "x-codex-window-id": f"{agent.truth_id}:0",
        }
        if agent.parent is not None:
            client_metadata |= {
                "x-codex-parent-thread-id": agent.parent.truth_id,
                "parent_turn_id": agent.parent.turn_id,
                "x-openai-subagent": "collab_spawn",
            }
        tools = CODEX_TOOLS + ([CODEX_TOOL_SEARCH] if agent.can_delegate else [])
        body = {
            "model": CODEX_MODEL,
            "stream": True,
            "input": agent.history,
            "tools": tools,
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "reasoning": {"effort": "medium"},
            "store": False,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": self.root_id,
            "text": {"verbosity": "low"},
            "client_metadata": client_metadata,
        }
        parent = agent.parent.truth_id if agent.parent else None
        return "/v1/responses", self.codex_headers(self.root_id, agent.truth_id, meta_text, parent), body

    def openai_headers(self, t: float, content_type: str) -> list[tuple[str, str]]:
        return [
            ("date", self.date(t)),
            ("content-type", content_type),
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive"),
            ("x-request-id", f"req_{self.ids.hex(32)}"),
            ("openai-processing-ms", str(self.rng.randint(80, 900))),
            ("openai-version", "2020-10-01"),
            ("server", "cloudflare"),
        ]

    def render(self, agent: Agent, output: Output, wire: Wire) -> tuple[list[tuple[str, str]], bytes, bool]:
        items = responses_items(output, f"msg_{self.ids.hex(48)}", self.ids)
        total, cached = self.usage_tokens(agent)
        produced = 20 + len(output.text) // 4
        usage = {
            "input_tokens": total,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": produced,
            "output_tokens_details": {"reasoning_tokens": 16 if output.reasoning else 0},
            "total_tokens": total + produced,
        }
        response = responses_object(f"resp_{self.ids.hex(48)}", CODEX_MODEL, int(wire.t_sent), "completed", items, usage)
        agent.history += [_echo(item) for item in items]
        return self.openai_headers(wire.t_sent, "text/event-stream"), responses_events(response), True

    def error_response(self, wire: Wire) -> tuple[int, list[tuple[str, str]], bytes]:
        status = self.rng.choice((500, 503))
        body = dumps(
            {
                "error": {
                    "message": "The server had an error while processing your request. Sorry about that!",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        ).encode()
        return (
            status,
            [("date", self.date(wire.t_sent)), ("content-type", "application/json"), ("x-request-id", f"req_{self.ids.hex(32)}")],
            body,
        )

    def call_ids(self) -> tuple[str, str]:
        return f"call_{self.ids.alnum(24)}", f"fc_{self.ids.hex(48)}"

    def tool_call(self, agent: Agent) -> ToolCall:
        call_id, item_id = self.call_ids()
        if self.rng.random() < 0.2:
            path = self.words.path()
            patch = f"*** Begin Patch\n*** Update File: {path}\n@@\n-    return x\n+    return x or []\n*** End Patch\n"
            return ToolCall(call_id, "apply_patch", {"input": patch}, f"Success. Updated the following files:\nM {path}\n", item_id)
        command = self.words.shell_command()
        output = self.words.shell_output(command)
        result = f"Chunk ID: {self.ids.hex(6)}\nWall time: {self.rng.uniform(0, 3):.4f} seconds\nProcess exited with code 0\nOriginal token count: {len(output) // 4}\nOutput:\n{output}\n"  # noqa: E501
        arguments = (
            {"cmd": command, "workdir": self.cwd} if self.rng.random() < 0.3 else {"cmd": command}
        )  # the model sets workdir now and then
        return ToolCall(call_id, "exec_command", arguments, result, item_id)

    def call(self, agent: Agent, output: Output, t: float) -> float:
        output.reasoning = self.rng.random() < 0.5
        return super().call(agent, output, t)

    def add_tool_results(self, agent: Agent, calls: list[ToolCall], t: float) -> None:
        for call in calls:
            if call.kind == "tool_search":
                agent.history.append(
                    {
                        "type": "tool_search_output",
                        "id": f"tso_{self.ids.uuid7(t)}",
                        "call_id": call.call_id,
                        "status": "completed",
                        "execution": "client",
                        "tools": [CODEX_MULTI_AGENT],
                    }
                )
            else:
                agent.history.append(
                    {"type": "function_call_output", "id": f"fco_{self.ids.uuid7(t)}", "call_id": call.call_id, "output": call.result}
                )

    def delegate(self, agent: Agent, count: int, t: float) -> float:
        """Codex delegates asynchronously: find the tools, spawn (answered at once with the child's
        id), wait, then a user-role `<subagent_notification>` per child, all in the same turn."""
        if not agent.tools_loaded:
            call_id, _ = self.call_ids()
            search = ToolCall(
                call_id, "tool_search", {"query": "spawn agent sub-agent", "limit": 8}, item_id=f"ts_{self.ids.hex(48)}", kind="tool_search"
            )
            t = self.call(agent, Output(calls=[search]), t)
            t += self.rng.uniform(0.01, 0.05)
            self.add_tool_results(agent, [search], t)
            agent.tools_loaded = True
        spawns = []
        for _ in range(count):
            call_id, item_id = self.call_ids()
            spawns.append(ToolCall(call_id, "spawn_agent", {"message": self.words.subtask()}, item_id=item_id, namespace="multi_agent_v1"))
        t = self.call(agent, Output(calls=spawns), t)
        children = []
        for call in spawns:
            begin = t + self.rng.uniform(0.05, 0.25)
            child = self.new_child(agent, call, begin)
            call.result = dumps({"agent_id": child.truth_id, "nickname": self.rng.choice(NICKNAMES)})
            children.append((child, begin))
        self.add_tool_results(agent, spawns, t)
        finished = []
        for child, begin in children:
            end, final = self.run_agent(child, begin)
            finished.append((child, end, final))
        call_id, item_id = self.call_ids()
        targets = [child.truth_id for child, _ in children]
        wait = ToolCall(call_id, "wait_agent", {"targets": targets, "timeout_ms": 60000}, item_id=item_id, namespace="multi_agent_v1")
        t = self.call(agent, Output(calls=[wait]), t + self.rng.uniform(0.02, 0.1))
        t = max([t] + [end for _, end, _ in finished]) + self.rng.uniform(0.01, 0.05)
        wait.result = dumps({"status": {child.truth_id: {"completed": final} for child, _, final in finished}, "timed_out": False})
        self.add_tool_results(agent, [wait], t)
        for child, _, final in finished:
            note = dumps({"agent_path": child.truth_id, "status": {"completed": final}})
            agent.history.append(self.message("user", [f"<subagent_notification>\n{note}\n</subagent_notification>"], t))
        return t

    def title_request(self, t: float) -> None:
        wire_session = self.ids.uuid7(t)
        turn_id = self.ids.uuid7(t)
        meta = dumps(
            {
                "installation_id": self.installation_id,
                "session_id": wire_session,
                "thread_id": wire_session,
                "agent_name": "/root",
                "turn_id": turn_id,
                "request_kind": "turn",
                "history_initialization": "new",
                "root_turn_id": turn_id,
                "thread_source": "thread_title",
                "model": "gpt-5.4-mini",
            }
        )
        schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"], "additionalProperties": False}
        body = {
            "model": "gpt-5.4-mini",
            "stream": True,
            "input": [
                self.message("developer", [CODEX_TITLE_PROMPT], t),
                self.message("user", [f"Write a title for this request:\n{self.first_prompt}"], t),
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
            "store": False,
            "prompt_cache_key": wire_session,
            "text": {"format": {"type": "json_schema", "name": "codex_output_schema", "schema": schema, "strict": True}},
            "client_metadata": {"session_id": wire_session, "thread_id": wire_session, "turn_id": turn_id, "x-codex-turn-metadata": meta},
        }
        truth = self.side_truth("title", self.turn) | {"wire_session_id": wire_session, "wire_thread_id": wire_session}
        wire = self.emit(
            "POST", "/v1/responses", self.codex_headers(wire_session, wire_session, meta, None), body, self.builder.port(), t, truth
        )
        title = dumps({"title": " ".join(self.first_prompt.split()[:5])})
        items = responses_items(Output(text=title), f"msg_{self.ids.hex(48)}", self.ids)
        usage = {
            "input_tokens": 140,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 12,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 152,
        }
        wire.response_headers = self.openai_headers(wire.t_sent, "text/event-stream")
        wire.response_body = responses_events(
            responses_object(f"resp_{self.ids.hex(48)}", "gpt-5.4-mini", int(wire.t_sent), "completed", items, usage)
        )
        wire.t_first_byte = wire.t_sent + self.rng.uniform(0.2, 0.8)
        wire.t_end = wire.t_first_byte + self.rng.uniform(0.1, 0.4)


def _echo(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as Codex sends it back in the next request's input."""
    if item["type"] == "message":
        return {
            "type": "message",
            "role": "assistant",
            "id": item["id"],
            "content": [{"type": "output_text", "text": item["content"][0]["text"]}],
        }
    if item["type"] == "function_call":
        echoed = {"type": "function_call", "status": "completed", "id": item["id"], "name": item["name"]}
        if "namespace" in item:
            echoed["namespace"] = item["namespace"]
        return echoed | {"arguments": item["arguments"], "call_id": item["call_id"]}
    return copy.deepcopy(item)


# -- SDK apps (no identifying headers) -------------------------------------------------------------


@dataclass
class SdkApp:
    """One client process serving many sessions: the OpenAI SDK or the Agents SDK on it."""

    label: str
    user_agent: str
    package_version: str
    ports: list[int]


class SdkSession(Session):
    def __init__(self, builder: CorpusBuilder, index: int, start: float, app: SdkApp) -> None:
        super().__init__(builder, index, start)
        self.app = app
        self.client_label = app.label
        self.root_id = f"trace_{self.ids.hex(32)}"
        self.api = self.rng.choice(("chat", "responses"))
        self.stream = self.rng.random() < 0.5
        self.model = self.rng.choice(("gpt-4.1", "gpt-4.1-mini", "gpt-5-mini"))
        self.domain = SDK_DOMAINS[self.rng.choice(sorted(SDK_DOMAINS))]
        self.slots = {
            "n": self.rng.randint(10, 9999),
            "m": self.rng.randint(1000, 99999),
            "a": self.rng.choice(SDK_PLACES + SDK_ENGINES),
            "b": self.rng.choice(SDK_PLACES + SDK_ENGINES),
        }
        self.wants_title = self.rng.random() < 0.3

    def fill(self, template: str) -> str:
        """A template with the session's subjects and fresh numbers: tasks written for the moment."""
        return template.format(**{**self.slots, "n": self.rng.randint(10, 9999), "m": self.rng.randint(1000, 99999)})

    def prompt(self, turn: int) -> str:
        if turn == 0:
            return self.domain["prompts"][self.rng.randrange(len(self.domain["prompts"]))].format(**self.slots)
        return self.fill(self.rng.choice(SDK_FOLLOW_UPS))

    def new_root(self, prompt: str, t: float) -> Agent:
        agent = Agent(
            "main", None, 0, prompt, self.rng.choice(self.app.ports), role="orchestrator", specialists=sorted(self.domain["specialists"])
        )
        agent.history = [self.user_message(prompt)]
        return agent

    def add_prompt(self, agent: Agent, prompt: str, t: float) -> None:
        agent.history.append(self.user_message(prompt))

    def user_message(self, text: str) -> dict[str, Any]:
        return {"role": "user", "content": text} if self.api == "chat" else {"content": text, "role": "user"}

    def new_child(self, parent: Agent, call: ToolCall, t: float) -> Agent:
        name, task = call.name, call.arguments["input"]
        agent = Agent(f"agent_{self.ids.hex(12)}", parent, parent.depth + 1, task, self.rng.choice(self.app.ports), role=name)
        others = [s for s in sorted(self.domain["specialists"]) if s != name]
        nests = agent.depth < self.max_depth and self.rng.random() < 0.5
        agent.specialists = [self.rng.choice(others)] if nests else []
        agent.can_delegate = nests
        agent.history = [self.user_message(task)]
        return agent

    def instructions(self, agent: Agent) -> str:
        if agent.parent is None:
            return self.domain["instructions"]
        return self.domain["specialists"][agent.role][0]

    def function_tools(self, agent: Agent) -> list[str]:
        return [] if agent.parent is None else list(self.domain["specialists"][agent.role][1])

    def tool_defs(self, agent: Agent) -> list[dict[str, Any]]:
        defs = []
        for name in agent.specialists:
            schema = {
                "description": "Default input schema for agent-as-tool calls.",
                "properties": {"input": {"title": "Input", "type": "string"}},
                "required": ["input"],
                "title": "AgentAsToolInput",
                "type": "object",
                "additionalProperties": False,
            }
            defs.append((name, schema, f"Ask the {name.replace('_', ' ')}."))
        for name in self.function_tools(agent):
            argument, description, _ = SDK_TOOLS[name]
            schema = {
                "properties": {argument: {"title": argument.replace("_", " ").title(), "type": "string"}},
                "required": [argument],
                "title": f"{name}_args",
                "type": "object",
                "additionalProperties": False,
            }
            defs.append((name, schema, description))
        if self.api == "chat":
            return [{"type": "function", "function": {"name": n, "description": d, "parameters": s, "strict": True}} for n, s, d in defs]
        return [{"name": n, "parameters": s, "strict": True, "type": "function", "description": d} for n, s, d in defs]

    def headers(self, retry: int) -> list[tuple[str, str]]:
        return [
            ("Host", f"127.0.0.1:{UPSTREAM_PORT}"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Connection", "keep-alive"),
            ("authorization", "Bearer sk-fake"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("user-agent", self.app.user_agent),
            ("x-stainless-lang", "python"),
            ("x-stainless-package-version", self.app.package_version),
            ("x-stainless-os", "Linux"),
            ("x-stainless-arch", "x64"),
            ("x-stainless-runtime", "CPython"),
            ("x-stainless-runtime-version", "3.11.7"),
            ("x-stainless-async", "async:asyncio"),
            ("x-stainless-retry-count", str(retry)),
            ("x-stainless-read-timeout", "600"),
            ("Content-Length", ""),
        ]

    def request(self, agent: Agent, retry: int) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
        tools = self.tool_defs(agent)
        model = self.model_of(agent)
        if self.api == "chat":
            body: dict[str, Any] = {"messages": [{"role": "system", "content": self.instructions(agent)}, *agent.history], "model": model}
            if tools:
                body["tools"] = tools
            if self.stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            path = "/v1/chat/completions"
        else:
            body = {"model": model, "include": [], "input": agent.history, "instructions": self.instructions(agent)}
            if tools:
                body["tools"] = tools
            if self.stream:
                body["stream"] = True
            path = "/v1/responses"
        return path, self.headers(retry), body

    def response_headers(self, t: float, streamed: bool) -> list[tuple[str, str]]:
        return [
            ("date", self.date(t)),
            ("content-type", "text/event-stream; charset=utf-8" if streamed else "application/json"),
            ("x-request-id", f"req_{self.ids.hex(32)}"),
            ("openai-processing-ms", str(self.rng.randint(80, 900))),
            ("server", "cloudflare"),
        ]

    def render(self, agent: Agent, output: Output, wire: Wire) -> tuple[list[tuple[str, str]], bytes, bool]:
        total, cached = self.usage_tokens(agent)
        produced = 20 + len(output.text) // 4
        created = int(wire.t_sent)
        if self.api == "chat":
            usage = {
                "prompt_tokens": total,
                "completion_tokens": produced,
                "total_tokens": total + produced,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            }
            completion_id = f"chatcmpl-{self.ids.alnum(29)}"
            render = chat_events if self.stream else chat_completion
            body = render(completion_id, self.model_of(agent), created, output, usage)
            message: dict[str, Any] = {"role": "assistant", "content": output.text or None}
            if output.calls:
                message["tool_calls"] = chat_tool_calls(output)
            agent.history.append(message)
        else:
            usage = {
                "input_tokens": total,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": produced,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": total + produced,
            }
            items = responses_items(output, f"msg_{self.ids.hex(48)}", self.ids)
            response = responses_object(f"resp_{self.ids.hex(48)}", self.model_of(agent), created, "completed", items, usage)
            body = responses_events(response) if self.stream else dumps(response).encode()
            agent.history += [_agents_sdk_echo(item) for item in items]
        return self.response_headers(wire.t_sent, self.stream), body, self.stream

    def error_response(self, wire: Wire) -> tuple[int, list[tuple[str, str]], bytes]:
        status = self.rng.choice((500, 502, 503))
        body = dumps(
            {"error": {"message": "The server is overloaded or not ready yet.", "type": "server_error", "param": None, "code": None}}
        ).encode()
        return status, [("date", self.date(wire.t_sent)), ("content-type", "application/json")], body

    def model_of(self, agent: Agent) -> str:
        return self.model if agent.parent is None else "gpt-4.1-mini"

    def tool_call(self, agent: Agent) -> ToolCall:
        name = self.rng.choice(self.function_tools(agent))
        argument, _, result = SDK_TOOLS[name]
        value = str(self.rng.choice([self.slots["m"], self.slots["n"], self.slots["a"], self.slots["b"]]))
        call_id, item_id = self.call_ids()
        return ToolCall(call_id, name, {argument: value}, result.format(v=value, x=self.rng.randint(2, 99)), item_id)

    def call_ids(self) -> tuple[str, str]:
        if self.api == "chat":
            return f"call_{self.ids.alnum(24)}", ""
        return f"call_{self.ids.alnum(24)}", f"fc_{self.ids.hex(48)}"

    def plan(self, agent: Agent) -> list[Round]:
        rounds = super().plan(agent)
        if not self.function_tools(agent):  # the orchestrator and tool-less specialists only delegate
            rounds = [r for r in rounds if r.kind == "delegate"]
        if agent.parent is None and not any(r.kind == "delegate" for r in rounds) and self.rng.random() < 0.7:
            rounds.append(Round("delegate", self.rng.choice((1, 2))))
        return rounds

    def delegation_calls(self, agent: Agent, count: int) -> list[ToolCall]:
        """Specialists exposed as tools, named after the agent, with the task as `input`."""
        names = agent.specialists
        calls = []
        for name in self.rng.sample(names, min(count, len(names))):
            task = self.fill(self.domain["specialists"][name][2])
            if self.rng.random() < 0.2:  # orchestrators often forward the customer's words verbatim
                task = f'{task} The customer wrote: "{self.first_prompt}"'
            call_id, item_id = self.call_ids()
            calls.append(ToolCall(call_id, name, {"input": task}, item_id=item_id))
        return calls

    def add_tool_results(self, agent: Agent, calls: list[ToolCall], t: float) -> None:
        for call in calls:
            if self.api == "chat":
                agent.history.append({"role": "tool", "tool_call_id": call.call_id, "content": call.result})
            else:
                agent.history.append({"call_id": call.call_id, "output": call.result, "type": "function_call_output"})

    def final_answer(self, agent: Agent) -> str:
        return f"[{agent.role}] Done: checked {self.slots['m']}; result code {self.rng.randint(100, 999)}."

    def title_request(self, t: float) -> None:
        instruction = (
            "Write a short title (at most six words) for a conversation that starts with the user message below. Reply with the title only."
        )
        # Title chains send the prompt as it is, or wrapped in their own template.
        text = self.first_prompt if self.rng.random() < 0.5 else f"Conversation:\nUSER: {self.first_prompt}\n\nTitle:"
        if self.api == "chat":
            body: dict[str, Any] = {
                "messages": [{"role": "system", "content": instruction}, {"role": "user", "content": text}],
                "model": "gpt-4.1-nano",
            }
            path = "/v1/chat/completions"
        else:
            body = {"model": "gpt-4.1-nano", "include": [], "input": [{"content": text, "role": "user"}], "instructions": instruction}
            path = "/v1/responses"
        wire = self.emit("POST", path, self.headers(0), body, self.rng.choice(self.app.ports), t, self.side_truth("title", self.turn))
        title = Output(text=" ".join(self.first_prompt.split()[:5]))
        usage_chat = {"prompt_tokens": 60, "completion_tokens": 8, "total_tokens": 68}
        if self.api == "chat":
            wire.response_body = chat_completion(f"chatcmpl-{self.ids.alnum(29)}", "gpt-4.1-nano", int(t), title, usage_chat)
        else:
            items = responses_items(title, f"msg_{self.ids.hex(48)}", self.ids)
            usage = {
                "input_tokens": 60,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 8,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 68,
            }
            wire.response_body = dumps(
                responses_object(f"resp_{self.ids.hex(48)}", "gpt-4.1-nano", int(t), "completed", items, usage)
            ).encode()
        wire.response_headers = self.response_headers(wire.t_sent, False)
        wire.t_end = wire.t_sent + self.rng.uniform(0.2, 0.9)
        wire.t_first_byte = wire.t_end - 0.002


def _agents_sdk_echo(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as the Agents SDK resends it (its own key order, as recorded)."""
    if item["type"] == "function_call":
        return {
            "arguments": item["arguments"],
            "call_id": item["call_id"],
            "name": item["name"],
            "type": "function_call",
            "id": item["id"],
            "status": "completed",
        }
    if item["type"] == "message":
        return {
            "id": item["id"],
            "content": [{"annotations": [], "text": item["content"][0]["text"], "type": "output_text"}],
            "role": "assistant",
            "status": "completed",
            "type": "message",
        }
    return copy.deepcopy(item)


# -- building and writing a corpus ------------------------------------------------------------------


class CorpusBuilder:
    """Runs N sessions of one style, staggered so they overlap, and collects their wires."""

    def __init__(self, style: str, sessions: int, seed: int) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
        self.style = style
        self.sessions = sessions
        self.seed = seed
        self.wires: list[Wire] = []
        self._next_port = 41000 + seed % 1000

    def port(self) -> int:
        self._next_port = 41000 + (self._next_port - 41000 + 1) % 20000
        return self._next_port

    def build(self) -> list[Wire]:
        rng = random.Random(f"{self.style}:{self.seed}:schedule")
        spread = 0.0 if self.sessions == 1 else 25.0 * self.sessions**0.8  # all sessions overlap
        starts = sorted(EPOCH + rng.uniform(0, spread) for _ in range(self.sessions))
        apps = self.sdk_apps(rng) if self.style == "sdk" else []
        for index, start in enumerate(starts):
            session: Session
            if self.style == "claude":
                session = ClaudeSession(self, index, start)
            elif self.style == "codex":
                session = CodexSession(self, index, start)
            else:
                session = SdkSession(self, index, start, apps[index % len(apps)])
            session.run()
        self.wires.sort(key=lambda w: w.t_start)
        return self.wires

    def sdk_apps(self, rng: random.Random) -> list[SdkApp]:
        """A few processes, each serving many concurrent sessions (a web service, a worker pool)."""
        count = 1 + self.sessions // 12
        kinds = [("openai-agents", "Agents/Python 0.24.0", "3.57.0"), ("openai-python", "OpenAI/Python 3.57.0", "3.57.0")]
        return [SdkApp(*kinds[i % 2], ports=[self.port() for _ in range(rng.randint(2, 6))]) for i in range(count)]


def corpus_name(style: str, sessions: int, seed: int, strip_ids: bool) -> str:
    return f"{style}-n{sessions}-s{seed}" + ("-stripped" if strip_ids else "")


IDENTIFYING_HEADERS = ("x-claude-code-", "x-codex-")
IDENTIFYING_HEADER_NAMES = frozenset({"session-id", "thread-id", "x-openai-subagent", "x-client-request-id"})
IDENTIFYING_BODY_FIELDS = ("prompt_cache_key", "client_metadata", "previous_response_id")


def strip_identifiers(headers: list[tuple[str, str]], content: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """The request with every session / agent / thread identifier removed; message contents untouched."""
    kept = [(k, v) for k, v in headers if not (k.lower().startswith(IDENTIFYING_HEADERS) or k.lower() in IDENTIFYING_HEADER_NAMES)]
    if not content:
        return kept, content
    body = {k: v for k, v in json.loads(content).items() if k not in IDENTIFYING_BODY_FIELDS}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and "user_id" in metadata:
        rest = {k: v for k, v in metadata.items() if k != "user_id"}
        if rest:
            body["metadata"] = rest
        else:
            del body["metadata"]
    return kept, dumps(body).encode()


def to_flow(wire: Wire, ids: Ids) -> http.HTTPFlow:
    content = wire.content
    headers = [(k, str(len(content))) if k.lower() == "content-length" else (k, v) for k, v in wire.headers]
    client = connection.Client(
        peername=("127.0.0.1", wire.port),
        sockname=("127.0.0.1", PROXY_PORT),
        timestamp_start=wire.t_start - 0.003,
        id=ids.uuid4(),
        proxy_mode=ProxyMode.parse(f"reverse:http://127.0.0.1:{UPSTREAM_PORT}"),
    )
    server = connection.Server(
        address=("127.0.0.1", UPSTREAM_PORT),
        peername=("127.0.0.1", UPSTREAM_PORT),
        sockname=("127.0.0.1", 50000 + wire.port % 10000),
        timestamp_start=wire.t_start - 0.002,
        timestamp_tcp_setup=wire.t_start - 0.0015,
        id=ids.uuid4(),
    )
    flow = http.HTTPFlow(client, server)
    flow.id = ids.uuid4()
    flow.timestamp_created = wire.t_start
    flow.request = http.Request(
        "127.0.0.1",
        UPSTREAM_PORT,
        wire.method.encode(),
        b"http",
        b"",
        wire.path.encode(),
        b"HTTP/1.1",
        http.Headers([(k.encode(), v.encode()) for k, v in headers]),
        content,
        None,
        wire.t_start,
        wire.t_sent,
    )
    flow.response = http.Response(
        b"HTTP/1.1",
        wire.status,
        http.status_codes.RESPONSES.get(wire.status, "").encode(),
        http.Headers([(k.encode(), v.encode()) for k, v in wire.response_headers]),
        wire.response_body,
        None,
        wire.t_first_byte,
        wire.t_end,
    )
    return flow


def write_corpus(wires: list[Wire], out_dir: Path, name: str, style: str, strip_ids: bool) -> tuple[Path, Path]:
    """`NAME.mitm` (flows in request-start order, like the real recordings) and `NAME.truth.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    flows_path, truth_path = out_dir / f"{name}.mitm", out_dir / f"{name}.truth.json"
    ids = Ids(random.Random(f"flows:{name.removesuffix('-stripped')}"))  # the same flow ids in both variants
    labels = []
    with open(flows_path, "wb") as f:
        writer = FlowWriter(f)
        for index, wire in enumerate(wires):
            if strip_ids:
                headers, content = strip_identifiers(wire.headers, wire.content)
                wire = Wire(**{**wire.__dict__, "headers": headers, "content": content})
            writer.add(to_flow(wire, ids))
            labels.append({"index": index, "method": wire.method, "path": wire.path, **wire.truth})
    truth = {
        "file": flows_path.name,
        "recording": name,
        "client": style,
        "generator": {"module": "lineage_tools.corpus", "strip_ids": strip_ids},
        "flow_order": "sorted by request.timestamp_start",
        "summary": summarize(labels),
        "checks": [],
        "flows": labels,
    }
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    return flows_path, truth_path


def summarize(labels: list[dict[str, Any]]) -> dict[str, int]:
    """The truth file's summary block, counted from its flows."""
    agent_flows = [f for f in labels if f["kind"] == "agent"]
    agents = {(f["root_session_id"], f["agent_id"]) for f in agent_flows}
    turns: dict[str, int] = {}
    for f in agent_flows:
        if f["root_session_id"] is not None and f["turn_index"] is not None:
            turns[f["root_session_id"]] = max(turns.get(f["root_session_id"], 0), f["turn_index"])
    return {
        "flows": len(labels),
        "llm_calls": len(agent_flows),
        "side_requests": sum(1 for f in labels if f["kind"] == "side"),
        "other": sum(1 for f in labels if f["kind"] not in ("agent", "side")),
        "sessions": len({f["root_session_id"] for f in labels if f["root_session_id"] is not None}),
        "agents": len(agents),
        "subagents": len({(f["root_session_id"], f["agent_id"]) for f in agent_flows if f["parent_agent_id"] is not None}),
        "turns": sum(turns.values()),
        "new_turn_starts": sum(1 for f in agent_flows if f["starts_new_turn"]),
    }


def generate(out_dir: Path, style: str, sessions: int, seed: int, strip_ids: bool = False) -> tuple[Path, Path]:
    """Simulate and write one corpus; returns the flows file and its truth file."""
    wires = CorpusBuilder(style, sessions, seed).build()
    return write_corpus(wires, out_dir, corpus_name(style, sessions, seed, strip_ids), style, strip_ids)


def iter_styles(choice: str) -> Iterator[str]:
    yield from STYLES if choice == "all" else (choice,)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lineage_tools.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for NAME.mitm and NAME.truth.json")
    parser.add_argument("--style", choices=(*STYLES, "all"), default="all")
    parser.add_argument("--sessions", type=int, default=8, help="sessions running at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--strip-ids", action="store_true", help="remove every identifying header and body field")
    args = parser.parse_args(argv)
    for style in iter_styles(args.style):
        flows_path, _ = generate(args.out, style, args.sessions, args.seed, args.strip_ids)
        print(flows_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
