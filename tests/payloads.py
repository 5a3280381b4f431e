"""Realistic sample payloads and SSE byte-stream builders shared by the codec and SSE tests.

Shapes follow real traffic: Claude Code 2.1.197 on the Anthropic Messages API, Codex 0.171.0 on
the OpenAI Responses API, and the OpenAI SDK on Chat Completions (see tests/fixtures/ for the
recordings they were taken from). Every stream builder derives its events from the matching
whole JSON response, so a test can check that the streamed and the non-streamed parse agree.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from agent_lineage.codecs import codec_for
from agent_lineage.model import Call, Response
from agent_lineage.sse import SSEParser

FIXTURES = Path(__file__).parent / "fixtures"

SSEEvent = tuple[str | None, Any]  # (`event:` name or None, data: a JSON value or a raw string)


# --- generic helpers ---------------------------------------------------------------------------


def sse(events: Iterable[SSEEvent], eol: str = "\n") -> bytes:
    """Events as on the wire: `event:` line (when named), one `data:` line, blank line."""
    out: list[str] = []
    for name, data in events:
        if name is not None:
            out.append(f"event: {name}{eol}")
        text = data if isinstance(data, str) else orjson.dumps(data).decode()
        out.append(f"data: {text}{eol}{eol}")
    return "".join(out).encode()


def pieces(text: str, n: int) -> list[str]:
    """`text` cut into `n` consecutive pieces (some may be empty for short text), joined back = text."""
    size = -(-len(text) // n) if text else 0
    return [text[i * size : (i + 1) * size] for i in range(n)] if size else [text]


def two_piece_splits(data: bytes) -> Iterator[list[bytes]]:
    """The stream split in two at every byte boundary, both ends included."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


def byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(data: bytes, rng: random.Random, max_size: int = 40) -> list[bytes]:
    chunks = []
    i = 0
    while i < len(data):
        n = rng.randint(1, max_size)
        chunks.append(data[i : i + n])
        i += n
    return chunks


def new_call(path: str, method: str = "POST") -> Call:
    codec = codec_for(method, path)
    assert codec is not None, path
    return Call(exchange_id="x1", api=codec.api, path=path, client="test", headers={}, t_start=0.0)


def parse_request(path: str, body: dict[str, Any]) -> Call:
    """Run a body through the codec for `path`, after a JSON round trip (as off the wire)."""
    call = new_call(path)
    codec_for("POST", path).parse_request(orjson.loads(orjson.dumps(body)), call)
    return call


def parse_json_response(path: str, body: Any) -> Response:
    return codec_for("POST", path).parse_response(orjson.loads(orjson.dumps(body)))


def stream_response(path: str, data: bytes, chunks: Iterable[bytes] | None = None) -> Response:
    """Feed an SSE body (whole, or as the given chunks) through SSEParser and the codec's accumulator."""
    parser = SSEParser()
    acc = codec_for("POST", path).stream_accumulator()
    for chunk in [data] if chunks is None else chunks:
        for event in parser.feed(chunk):
            acc.event(event)
    for event in parser.close():
        acc.event(event)
    return acc.result()


# --- Anthropic Messages (Claude Code) ----------------------------------------------------------

ANTHROPIC_PATH = "/v1/messages?beta=true"
CLAUDE_MODEL = "claude-opus-4-8"
BILLING_MAIN = "x-anthropic-billing-header: cc_version=2.1.197.bf2; cc_entrypoint=sdk-cli;"
BILLING_SUB = "x-anthropic-billing-header: cc_version=2.1.197.c04; cc_entrypoint=sdk-cli; cc_is_subagent=true;"
CLAUDE_IDENTITY = "You are a Claude agent, built on Anthropic's Claude Agent SDK."
CLAUDE_PROMPT = "\nYou are an interactive agent that helps users with software engineering tasks."
SYSTEM_REMINDER = (
    "<system-reminder>\nAs you answer the user's questions, you can use the following context:\n"
    "# currentDate\nToday's date is 2026-11-26.\n</system-reminder>\n\n"
)
CLAUDE_TOOLS = [
    {
        "name": "Agent",
        "description": "Launch a new agent to handle complex, multi-step tasks autonomously.",
        "input_schema": {
            "type": "object",
            "properties": {
                "description": {"type": "string"},
                "prompt": {"type": "string"},
                "subagent_type": {"type": "string"},
            },
            "required": ["description", "prompt"],
        },
    },
    {
        "name": "Bash",
        "description": "Executes a given bash command.",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
]
METADATA = {
    "user_id": '{"device_id":"a4deb0ce72ef0fa388665319652d72e883980ef3a9aa7f7d1a3e06ebc4667a81",'
    '"account_uuid":"","session_id":"262845dd-f4af-48ab-b1f9-c617cf26c84a"}'
}


def claude_code_request(messages: list[dict[str, Any]], subagent: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": CLAUDE_MODEL,
        "messages": messages,
        "system": [
            {"type": "text", "text": BILLING_SUB if subagent else BILLING_MAIN},
            {"type": "text", "text": CLAUDE_IDENTITY, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": CLAUDE_PROMPT, "cache_control": {"type": "ephemeral"}},
        ],
        "tools": CLAUDE_TOOLS,
        "metadata": METADATA,
        "max_tokens": 64000,
        "thinking": {"type": "disabled"} if subagent else {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "stream": True,
    }
    if not subagent:
        body["context_management"] = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    return body


def claude_user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": SYSTEM_REMINDER}, {"type": "text", "text": text}]}


# An assistant turn with thinking, text and two parallel tool calls (one of them non-ASCII).
CLAUDE_PARALLEL_CONTENT: list[dict[str, Any]] = [
    {
        "type": "thinking",
        "thinking": "The user wants two things checked; run them in parallel.",
        "signature": "EqQBCkYIBxgCKkB0c2lnbmF0dXJl",
    },
    {"type": "text", "text": "I'll check both at once — résumé first."},
    {
        "type": "tool_use",
        "id": "toolu_01A09q90qw90lq917835lq9",
        "name": "Bash",
        "input": {"command": "ls -la 'résumé/'", "description": "List the résumé directory"},
    },
    {
        "type": "tool_use",
        "id": "toolu_01B12r34st56uv78wx90yz1",
        "name": "Agent",
        "input": {
            "description": "Search the code",
            "prompt": "Find every caller of `parse_request` and report the file names.",
            "subagent_type": "Explore",
        },
    },
]


def anthropic_message(
    content: list[dict[str, Any]],
    stop_reason: str = "end_turn",
    usage: dict[str, Any] | None = None,
    id: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
) -> dict[str, Any]:
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": CLAUDE_MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 12,
            "cache_creation_input_tokens": 2048,
            "cache_read_input_tokens": 30000,
            "output_tokens": 345,
            "service_tier": "standard",
        },
    }


def anthropic_events(message: dict[str, Any], n: int = 3) -> list[SSEEvent]:
    """The SSE events the API sends for `message`, text and tool input JSON cut into `n` deltas each."""
    usage = message["usage"]
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}
    start = {k: v for k, v in message.items() if k not in ("content", "usage")}
    start |= {"content": [], "stop_reason": None, "usage": start_usage}
    events: list[SSEEvent] = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            empty = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"], n)]
        elif kind == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"], n)]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind in ("tool_use", "server_tool_use"):
            empty = {"type": kind, "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces(orjson.dumps(block["input"]).decode(), n)]
        else:
            empty, deltas = block, []
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}))
        for delta in deltas:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


ANTHROPIC_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


# --- OpenAI Chat Completions -------------------------------------------------------------------

CHAT_PATH = "/v1/chat/completions"
CHAT_MODEL = "gpt-4.1-2025-04-14"
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "custom", "custom": {"name": "apply_patch", "description": "Apply a patch (freeform)."}},
]

CHAT_PARALLEL_MESSAGE: dict[str, Any] = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_Rk9vYmFy0001", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}},
        {"id": "call_Rk9vYmFy0002", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "東京"}'}},
    ],
    "refusal": None,
    "annotations": [],
}


def chat_completion(
    message: dict[str, Any],
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
    id: str = "chatcmpl-BhxK1yVQ3v0s9Zq",
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": 1795690812,
        "model": CHAT_MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage
        or {
            "prompt_tokens": 5120,
            "completion_tokens": 87,
            "total_tokens": 5207,
            "prompt_tokens_details": {"cached_tokens": 4864, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_b3f1157249",
    }


def chat_events(completion: dict[str, Any], n: int = 3, include_usage: bool = True, done: bool = True) -> list[SSEEvent]:
    """Chunks as the API streams them; parallel tool calls' argument pieces are interleaved."""
    message = completion["choices"][0]["message"]
    head = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")} | {"object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> SSEEvent:
        body = head | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return (None, body)

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    for p in pieces(message.get("reasoning_content") or "", n) if message.get("reasoning_content") else []:
        events.append(chunk({"reasoning_content": p}))
    for p in pieces(message.get("content") or "", n) if message.get("content") else []:
        events.append(chunk({"content": p}))
    calls = message.get("tool_calls") or []
    for i, c in enumerate(calls):
        first = {"index": i, "id": c["id"], "type": c["type"], "function": {"name": c["function"]["name"], "arguments": ""}}
        events.append(chunk({"tool_calls": [first]}))
    split = [pieces(c["function"]["arguments"], n) for c in calls]
    for k in range(n):
        for i, parts in enumerate(split):
            if k < len(parts):
                events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": parts[k]}}]}))
    events.append(chunk({}, completion["choices"][0]["finish_reason"]))
    if include_usage:
        events.append((None, head | {"choices": [], "usage": completion["usage"]}))
    if done:
        events.append((None, "[DONE]"))
    return events


# --- OpenAI Responses (Codex) ------------------------------------------------------------------

RESPONSES_PATH = "/v1/responses"
CODEX_MODEL = "gpt-5.5"
CODEX_BASE_PROMPT = "You are Codex, a coding agent based on GPT-5. You and the user share the same workspace."
CODEX_SKILLS = "<skills_instructions>\n## Skills\nA skill is a set of local instructions.\n</skills_instructions>"
CODEX_ENV = (
    "<environment_context>\n  <cwd>/home/user/project</cwd>\n  <shell>bash</shell>\n"
    "  <current_date>2026-11-26</current_date>\n</environment_context>"
)
CODEX_TOOLS = [
    {
        "type": "function",
        "name": "exec_command",
        "description": "Runs a command in a PTY.",
        "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    },
    {"type": "custom", "name": "apply_patch", "description": "Edit files. FREEFORM.", "format": {"type": "grammar"}},
    {"type": "tool_search", "execution": "client", "description": "# Tool discovery"},
    {"type": "web_search", "external_web_access": True},
]
CLIENT_METADATA = {
    "session_id": "01a21782-6b17-78f2-8fa9-367637f342d3",
    "thread_id": "01a21782-6b17-78f2-8fa9-367637f342d3",
    "turn_id": "01a21782-6b47-7d31-9ed5-b1fb7ef6a58f",
}


def codex_message(role: str, text: str, id: str) -> dict[str, Any]:
    return {"type": "message", "id": id, "role": role, "content": [{"type": "input_text", "text": text}]}


def codex_request(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A Codex request: no `instructions`, the base prompt is the first (developer) input item."""
    return {
        "model": CODEX_MODEL,
        "input": [
            codex_message("developer", CODEX_BASE_PROMPT, "msg_e9aa3255-ae89-5084-b7d6-cf50cb056a18"),
            codex_message("developer", CODEX_SKILLS, "msg_01a21782-6b79-7072-8448-c4367f725fe7"),
            codex_message("user", CODEX_ENV, "msg_01a21782-6b79-7072-8448-c448f43a12ac"),
            *items,
        ],
        "tools": CODEX_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": CLIENT_METADATA["session_id"],
        "text": {"verbosity": "low"},
        "client_metadata": CLIENT_METADATA,
    }


# One model output: reasoning, a message and two parallel function calls (one namespaced).
RESPONSES_PARALLEL_OUTPUT: list[dict[str, Any]] = [
    {
        "type": "reasoning",
        "id": "rs_0a1b2c3d4e5f",
        "summary": [{"type": "summary_text", "text": "**Planning** run the build and spawn a helper."}],
    },
    {
        "type": "message",
        "id": "msg_0a1b2c3d4e60",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Running the build while a helper reads the logs — ✓.", "annotations": []}],
    },
    {
        "type": "function_call",
        "id": "fc_0a1b2c3d4e61",
        "call_id": "call_K2mJx7Hq0001",
        "name": "exec_command",
        "arguments": '{"cmd": "make -j8 && echo ok"}',
        "status": "completed",
    },
    {
        "type": "function_call",
        "id": "fc_0a1b2c3d4e62",
        "call_id": "call_K2mJx7Hq0002",
        "name": "spawn_agent",
        "namespace": "multi_agent_v1",
        "arguments": '{"message": "Read build.log and summarise the warnings."}',
        "status": "completed",
    },
]

RESPONSES_USAGE = {
    "input_tokens": 27000,
    "input_tokens_details": {"cached_tokens": 26112},
    "output_tokens": 410,
    "output_tokens_details": {"reasoning_tokens": 256},
    "total_tokens": 27410,
}


def responses_body(
    output: list[dict[str, Any]],
    status: str = "completed",
    usage: dict[str, Any] | None = None,
    id: str = "resp_68a1f0c2b3d4e5f6",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "response",
        "created_at": 1795690752,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": CODEX_MODEL,
        "output": output,
        "parallel_tool_calls": True,
        "store": False,
        "usage": usage or RESPONSES_USAGE,
        **extra,
    }


def responses_events(body: dict[str, Any], n: int = 3, terminal: str | None = None) -> list[SSEEvent]:
    """The SSE events for a Responses body: created, in_progress, per item added/deltas/done, terminal."""
    seq = iter(range(10_000))

    def ev(kind: str, **fields: Any) -> SSEEvent:
        return (kind, {"type": kind, "sequence_number": next(seq), **fields})

    head = body | {"status": "in_progress", "output": [], "usage": None}
    events = [ev("response.created", response=head), ev("response.in_progress", response=head)]
    for i, item in enumerate(body["output"]):
        kind = item["type"]
        added = copy.deepcopy(item) | {"status": "in_progress"} if "status" in item else copy.deepcopy(item)
        ids = {"item_id": item.get("id"), "output_index": i}
        if kind == "message":
            added["content"] = []
            events.append(ev("response.output_item.added", output_index=i, item=added))
            for j, part in enumerate(item["content"]):
                events.append(
                    ev("response.content_part.added", **ids, content_index=j, part={"type": "output_text", "text": "", "annotations": []})
                )
                for p in pieces(part["text"], n):
                    events.append(ev("response.output_text.delta", **ids, content_index=j, delta=p))
                events.append(ev("response.output_text.done", **ids, content_index=j, text=part["text"]))
                events.append(ev("response.content_part.done", **ids, content_index=j, part=part))
        elif kind == "reasoning":
            added["summary"] = []
            events.append(ev("response.output_item.added", output_index=i, item=added))
            for j, part in enumerate(item.get("summary") or []):
                events.append(
                    ev("response.reasoning_summary_part.added", **ids, summary_index=j, part={"type": "summary_text", "text": ""})
                )
                for p in pieces(part["text"], n):
                    events.append(ev("response.reasoning_summary_text.delta", **ids, summary_index=j, delta=p))
                events.append(ev("response.reasoning_summary_text.done", **ids, summary_index=j, text=part["text"]))
                events.append(ev("response.reasoning_summary_part.done", **ids, summary_index=j, part=part))
        elif kind in ("function_call", "custom_tool_call"):
            key, delta_kind = ("arguments", "function_call_arguments") if kind == "function_call" else ("input", "custom_tool_call_input")
            added[key] = ""
            events.append(ev("response.output_item.added", output_index=i, item=added))
            for p in pieces(item[key], n):
                events.append(ev(f"response.{delta_kind}.delta", **ids, delta=p))
            events.append(ev(f"response.{delta_kind}.done", **ids, **{key: item[key]}))
        else:
            events.append(ev("response.output_item.added", output_index=i, item=added))
        events.append(ev("response.output_item.done", output_index=i, item=item))
    kind = terminal or {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}[body["status"]]
    events.append(ev(kind, response=body))
    return events


def echo_items(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output items as Codex sends them back in the next `input` (store=false): reasoning encrypted."""
    echoed = []
    for item in output:
        item = copy.deepcopy(item)
        if item["type"] == "reasoning":
            item["content"] = None
            item["encrypted_content"] = "gAAAAABoXz1bYmFzZTY0LWVuY3J5cHRlZC1yZWFzb25pbmc="
        echoed.append(item)
    return echoed
