"""Wire-API codecs: requests, JSON and SSE responses, echo consistency, and recorded real traffic."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from mitmproxy.io import FlowReader

import payloads as P
from agent_lineage.codecs import CODECS, MalformedBody, codec_for
from agent_lineage.model import Call, Message, Response, ToolCall, ToolDef, ToolResult, Usage
from agent_lineage.sse import Event, decode_body

# --- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, api",
    [
        ("/v1/messages", "anthropic-messages"),
        ("/v1/messages?beta=true", "anthropic-messages"),
        ("/v1/messages/", "anthropic-messages"),
        ("/v1/messages/count_tokens?beta=true", "anthropic-messages"),
        ("/anthropic/v1/messages", "anthropic-messages"),
        ("/v1/chat/completions", "openai-chat"),
        ("/chat/completions", "openai-chat"),
        ("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", "openai-chat"),
        ("/v1/responses", "openai-responses"),
        ("/responses", "openai-responses"),
        ("/backend-api/codex/responses", "openai-responses"),
        ("/v1/responses/input_tokens", "openai-responses"),
    ],
)
def test_codec_for_llm_paths(path: str, api: str) -> None:
    codec = codec_for("POST", path)
    assert codec is not None and codec.api == api


@pytest.mark.parametrize(
    "method, path",
    [
        ("HEAD", "/"),
        ("GET", "/v1/messages"),
        ("GET", "/v1/responses/resp_123"),
        ("POST", "/v1/models"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/messages/batches"),
        ("POST", "/v1/responses/resp_123/cancel"),
    ],
)
def test_codec_for_other_traffic(method: str, path: str) -> None:
    assert codec_for(method, path) is None


def test_codec_apis_are_distinct() -> None:
    assert sorted(c.api for c in CODECS) == ["anthropic-messages", "gemini", "openai-chat", "openai-responses"]


# --- helpers -----------------------------------------------------------------------------------


def fingerprints(messages: list[Message]) -> list[bytes]:
    return [m.fingerprint() for m in messages]


def assert_split_invariant(path: str, data: bytes, expected: Response, every: bool = True) -> None:
    """The same Response whatever the chunking: every two-piece split (or 300 random ones), byte by byte."""
    assert P.stream_response(path, data) == expected
    splits = list(P.two_piece_splits(data))
    if not every:
        splits = random.Random(1234).sample(splits, min(300, len(splits)))
    for chunks in splits:
        assert P.stream_response(path, data, chunks) == expected, chunks
    assert P.stream_response(path, data, P.byte_chunks(data)) == expected


def stream_prefixes(path: str, data: bytes, step: int = 5) -> list[tuple[int, Response]]:
    """(length, Response) of the stream cut after every `step` bytes (a dropped connection); none may raise."""
    return [(n, P.stream_response(path, data[:n])) for n in range(0, len(data) + 1, step)]


def terminal_event_end(data: bytes) -> int:
    """Where the last event's data ends: a stream cut there or later still holds its terminal event."""
    return data.rindex(b"}") + 1


# === Anthropic Messages ========================================================================

TOOL_RESULTS = [
    {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "total 8\n-rw-r--r-- cv.pdf", "is_error": False},
    {
        "type": "tool_result",
        "tool_use_id": "toolu_01B12r34st56uv78wx90yz1",
        "content": [
            {"type": "text", "text": "Found 3 callers."},
            {"type": "text", "text": "agentId: a745885e64195937a (use SendMessage to continue this agent)"},
        ],
        "cache_control": {"type": "ephemeral"},
    },
]
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def claude_conversation() -> list[dict[str, Any]]:
    return [
        P.claude_user("Fix the failing test"),
        {"role": "system", "content": "Available agent types for the Agent tool:\n- general-purpose"},
        {"role": "assistant", "content": P.CLAUDE_PARALLEL_CONTENT},
        {"role": "user", "content": TOOL_RESULTS},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "EmwKAhgB"}, {"type": "text", "text": "Both done."}]},
        {
            "role": "user",
            "content": [
                IMAGE,
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "log"}},
                {"type": "text", "text": "What is wrong in this screenshot?"},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_err", "content": "exit 2", "is_error": True}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_img", "content": [IMAGE]}]},
        {"role": "system", "content": [{"type": "text", "text": "Context was compacted."}]},
    ]


def test_anthropic_request_claude_code() -> None:
    call = P.parse_request(P.ANTHROPIC_PATH, P.claude_code_request(claude_conversation()))
    assert call.api == "anthropic-messages"
    assert call.model == P.CLAUDE_MODEL and call.stream is True and call.side is None
    # Block 0 is Claude Code's billing line: kept, the system text is every block joined.
    assert call.system == "\n".join([P.BILLING_MAIN, P.CLAUDE_IDENTITY, P.CLAUDE_PROMPT])
    assert [m.role for m in call.messages] == ["user", "system", "assistant", "user", "assistant", "user", "user", "user", "system"]
    user, system, assistant, results, redacted, image, error, image_result, late_system = call.messages

    assert user == Message("user", P.SYSTEM_REMINDER + "\n" + "Fix the failing test")
    assert system == Message("system", "Available agent types for the Agent tool:\n- general-purpose")
    assert assistant.text == "I'll check both at once — résumé first."
    assert assistant.reasoning == "The user wants two things checked; run them in parallel."
    assert [(c.id, c.name, c.kind) for c in assistant.tool_calls] == [
        ("toolu_01A09q90qw90lq917835lq9", "Bash", "function"),
        ("toolu_01B12r34st56uv78wx90yz1", "Agent", "function"),
    ]
    assert assistant.tool_calls[0].parsed_arguments() == P.CLAUDE_PARALLEL_CONTENT[2]["input"]
    assert assistant.tool_calls[1].parsed_arguments()["subagent_type"] == "Explore"
    assert results == Message(
        "user",
        tool_results=[
            ToolResult("toolu_01A09q90qw90lq917835lq9", "total 8\n-rw-r--r-- cv.pdf"),
            ToolResult(
                "toolu_01B12r34st56uv78wx90yz1",
                "Found 3 callers.\nagentId: a745885e64195937a (use SendMessage to continue this agent)",
            ),
        ],
    )
    assert redacted == Message("assistant", "Both done.")
    assert image == Message("user", "[image]\n[document]\nWhat is wrong in this screenshot?")
    assert error.tool_results == [ToolResult("toolu_err", "exit 2", is_error=True)]
    # A result with no text at all is kept as its JSON, so two different images do not compare equal.
    assert orjson.loads(image_result.tool_results[0].content) == [IMAGE]
    assert late_system == Message("system", "Context was compacted.")

    assert [t.name for t in call.tools] == ["Agent", "Bash", "web_search"]
    assert call.tools[1] == ToolDef("Bash", "Executes a given bash command.", P.CLAUDE_TOOLS[1]["input_schema"])
    assert call.fields["metadata"] == P.METADATA
    assert call.fields["max_tokens"] == 64000
    assert call.fields["thinking"] == {"type": "adaptive"}
    assert call.fields["output_config"] == {"effort": "high"}
    assert not {"messages", "system", "tools", "stream", "model"} & call.fields.keys()


def test_anthropic_request_subagent_and_string_system() -> None:
    sub = P.parse_request(P.ANTHROPIC_PATH, P.claude_code_request([P.claude_user("AW_SUBTASK: run it")], subagent=True))
    assert sub.system.startswith(P.BILLING_SUB + "\n")
    assert sub.fields["thinking"] == {"type": "disabled"}
    assert sub.messages[0].text.endswith("\nAW_SUBTASK: run it")

    sdk = P.parse_request(
        "/v1/messages", {"model": "claude-x", "max_tokens": 10, "system": "Be terse.", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert sdk.system == "Be terse." and sdk.stream is False
    assert sdk.messages == [Message("user", "hi")]
    assert sdk.tools == [] and sdk.fields == {"max_tokens": 10}

    bare = P.parse_request("/v1/messages", {"model": "claude-x", "messages": []})
    assert bare.system == "" and bare.messages == []


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/messages/count_tokens?beta=true"])
def test_anthropic_count_tokens_is_a_side_request(path: str) -> None:
    call = P.parse_request(path, {"model": P.CLAUDE_MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert call.side == "count-tokens"
    assert P.parse_json_response(path, {"input_tokens": 2095}) == Response(usage=Usage(input_tokens=2095), complete=True)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"messages": None},
        {"messages": "hi"},
        {"messages": {"role": "user", "content": "hi"}},
        {"messages": ["hi"]},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": 3, "content": "x"}]},
    ],
)
def test_anthropic_malformed_request(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedBody):
        P.parse_request("/v1/messages", body)


PARALLEL_USAGE = Usage(input_tokens=12 + 2048 + 30000, output_tokens=345, cache_read_tokens=30000, cache_write_tokens=2048)


def test_anthropic_json_response_parallel_tools() -> None:
    body = P.anthropic_message(P.CLAUDE_PARALLEL_CONTENT, "tool_use")
    r = P.parse_json_response(P.ANTHROPIC_PATH, body)
    assert r.id == "msg_01XFDUDYJgAACzvnptvVoYEL" and r.model == P.CLAUDE_MODEL
    assert r.stop_reason == "tool_use" and r.complete and r.error is None
    # Total input = fresh + cache reads + cache writes.
    assert r.usage == PARALLEL_USAGE
    assert r.output.role == "assistant"
    assert r.output.text == "I'll check both at once — résumé first."
    assert r.output.reasoning.startswith("The user wants")
    assert [c.name for c in r.output.tool_calls] == ["Bash", "Agent"]
    assert [c.parsed_arguments() for c in r.output.tool_calls] == [b["input"] for b in P.CLAUDE_PARALLEL_CONTENT[2:]]


def test_anthropic_json_response_text_and_errors() -> None:
    r = P.parse_json_response("/v1/messages", P.anthropic_message([{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]))
    assert r.output == Message("assistant", "Hello\nworld") and r.stop_reason == "end_turn"

    empty = P.parse_json_response("/v1/messages", P.anthropic_message([], "max_tokens"))
    assert empty.output is None and empty.stop_reason == "max_tokens" and empty.complete

    err = P.parse_json_response("/v1/messages", P.ANTHROPIC_OVERLOADED)
    assert err == Response(error="overloaded_error: Overloaded", complete=True)
    bare = P.parse_json_response("/v1/messages", {"error": {"type": "rate_limit_error", "message": "Slow down"}})
    assert bare.error == "rate_limit_error: Slow down" and bare.output is None

    with pytest.raises(MalformedBody):
        P.parse_json_response("/v1/messages", ["not", "an", "object"])


SERVER_TOOL_CONTENT = [
    {
        "type": "server_tool_use",
        "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
        "name": "web_search",
        "input": {"query": "mitmproxy 11 release"},
    },
    {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
        "content": [{"type": "web_search_result", "url": "https://mitmproxy.org", "title": "mitmproxy"}],
    },
    {"type": "text", "text": "mitmproxy 11 was released in 2024."},
]

ANTHROPIC_MESSAGES = {
    "text": P.anthropic_message([{"type": "text", "text": "Hello from Claude — ünïcödé 🎉"}]),
    "thinking_parallel_tools": P.anthropic_message(P.CLAUDE_PARALLEL_CONTENT, "tool_use"),
    "server_tool": P.anthropic_message(SERVER_TOOL_CONTENT),
    "empty_tool_input": P.anthropic_message([{"type": "tool_use", "id": "toolu_x", "name": "TaskList", "input": {}}], "tool_use"),
}


@pytest.mark.parametrize("name", list(ANTHROPIC_MESSAGES))
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_anthropic_stream_equals_json_at_every_split(name: str, eol: str) -> None:
    message = ANTHROPIC_MESSAGES[name]
    expected = P.parse_json_response(P.ANTHROPIC_PATH, message)
    data = P.sse(P.anthropic_events(message), eol)
    assert_split_invariant(P.ANTHROPIC_PATH, data, expected, every=eol == "\n")


def test_anthropic_stream_details() -> None:
    r = P.stream_response(P.ANTHROPIC_PATH, P.sse(P.anthropic_events(ANTHROPIC_MESSAGES["thinking_parallel_tools"])))
    assert r.usage == PARALLEL_USAGE and r.stop_reason == "tool_use" and r.complete
    assert [c.id for c in r.output.tool_calls] == ["toolu_01A09q90qw90lq917835lq9", "toolu_01B12r34st56uv78wx90yz1"]
    server = P.stream_response(P.ANTHROPIC_PATH, P.sse(P.anthropic_events(ANTHROPIC_MESSAGES["server_tool"])))
    assert server.output.tool_calls == [
        ToolCall("srvtoolu_014hJH82Qum7Td6UV8gDXThB", "web_search", '{"query":"mitmproxy 11 release"}', "server")
    ]
    assert server.output.text == "mitmproxy 11 was released in 2024."


def test_anthropic_stream_message_delta_with_cumulative_usage() -> None:
    # Newer API versions repeat the input and cache counts in message_delta.
    events = P.anthropic_events(ANTHROPIC_MESSAGES["text"])
    name, delta = events[-2]
    delta["usage"] = {"input_tokens": 12, "cache_creation_input_tokens": 2048, "cache_read_input_tokens": 30000, "output_tokens": 345}
    r = P.stream_response(P.ANTHROPIC_PATH, P.sse(events))
    assert r.usage == PARALLEL_USAGE


def test_anthropic_stream_error_event() -> None:
    events = P.anthropic_events(ANTHROPIC_MESSAGES["text"])[:5] + [("error", P.ANTHROPIC_OVERLOADED)]
    r = P.stream_response(P.ANTHROPIC_PATH, P.sse(events))
    assert r.error == "overloaded_error: Overloaded"
    assert r.complete is False
    assert r.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert r.output.text == "Hello from Claude — ünïcödé 🎉"[: len(r.output.text)] and r.output.text


def test_anthropic_stream_cut_mid_tool_arguments() -> None:
    events = P.anthropic_events(ANTHROPIC_MESSAGES["thinking_parallel_tools"], n=4)
    # Cut after the second argument piece of the second tool call.
    deltas = [i for i, (_, d) in enumerate(events) if d.get("delta", {}).get("type") == "input_json_delta" and d["index"] == 3]
    cut = events[: deltas[1] + 1]
    r = P.stream_response(P.ANTHROPIC_PATH, P.sse(cut))
    assert r.complete is False and r.stop_reason is None and r.error is None
    assert r.output.text == "I'll check both at once — résumé first."
    bash, agent = r.output.tool_calls
    assert bash.parsed_arguments() == P.CLAUDE_PARALLEL_CONTENT[2]["input"]
    assert (agent.id, agent.name) == ("toolu_01B12r34st56uv78wx90yz1", "Agent")
    partial = agent.parsed_arguments()["input"]  # not valid JSON yet: the text that arrived is kept
    assert orjson.dumps(P.CLAUDE_PARALLEL_CONTENT[3]["input"]).decode().startswith(partial) and partial
    assert r.usage.input_tokens == PARALLEL_USAGE.input_tokens and r.usage.output_tokens == 1


def test_anthropic_stream_cut_at_every_point() -> None:
    message = ANTHROPIC_MESSAGES["thinking_parallel_tools"]
    data = P.sse(P.anthropic_events(message))
    final = P.parse_json_response(P.ANTHROPIC_PATH, message)
    results = stream_prefixes(P.ANTHROPIC_PATH, data)
    assert results[0][1] == Response()
    for n, r in results:
        # A final event without its blank line still counts (close() dispatches it).
        assert r.complete == (n >= terminal_event_end(data))
        if r.output:
            assert final.output.text.startswith(r.output.text)
            assert [c.id for c in r.output.tool_calls] == [c.id for c in final.output.tool_calls][: len(r.output.tool_calls)]
    assert P.stream_response(P.ANTHROPIC_PATH, data) == final


def test_anthropic_stream_ignores_junk() -> None:
    acc = codec_for("POST", "/v1/messages").stream_accumulator()
    for data in ["not json", "[1, 2]", '"str"', "{}", '{"type": "ping"}']:
        acc.event(Event("message", data))
    assert acc.result() == Response()


# === OpenAI Chat Completions ===================================================================


def chat_conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in metric units."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Zürich and Tokyo?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        P.CHAT_PARALLEL_MESSAGE,
        {"role": "tool", "tool_call_id": "call_Rk9vYmFy0001", "content": "Zürich: 18°C"},
        {"role": "tool", "tool_call_id": "call_Rk9vYmFy0002", "content": [{"type": "text", "text": "東京: 24°C"}]},
        {"role": "system", "content": "Keep it short."},
        {"role": "assistant", "content": "Zürich 18°C, Tokyo 24°C.", "reasoning_content": "Both are mild."},
        {"role": "user", "content": "And Oslo?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"role": "function", "name": "get_weather", "content": "Oslo: 9°C"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't share that."}]},
    ]


def test_chat_request() -> None:
    body = {
        "model": P.CHAT_MODEL,
        "messages": chat_conversation(),
        "tools": P.CHAT_TOOLS,
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 1024,
        "user": "user-1234",
        "metadata": {"app": "weather"},
    }
    call = P.parse_request(P.CHAT_PATH, body)
    assert call.api == "openai-chat" and call.model == P.CHAT_MODEL and call.stream and call.side is None
    # Only the leading system/developer messages are the system prompt; a later one stays.
    assert call.system == "You are a weather bot.\nAnswer in metric units."
    assert [m.role for m in call.messages] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "system",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    user, calls, r1, r2, system, answer, _, legacy, legacy_result, refusal = call.messages
    assert user == Message("user", "Weather in Zürich and Tokyo?")
    assert calls.text == "" and calls.tool_calls == [
        ToolCall("call_Rk9vYmFy0001", "get_weather", '{"city": "Zürich"}', "function"),
        ToolCall("call_Rk9vYmFy0002", "get_weather", '{"city": "東京"}', "function"),
    ]
    assert r1 == Message("tool", tool_results=[ToolResult("call_Rk9vYmFy0001", "Zürich: 18°C")])
    assert r2 == Message("tool", tool_results=[ToolResult("call_Rk9vYmFy0002", "東京: 24°C")])
    assert system == Message("system", "Keep it short.")
    assert answer == Message("assistant", "Zürich 18°C, Tokyo 24°C.", "Both are mild.")
    assert legacy.tool_calls == [ToolCall("get_weather", "get_weather", '{"city":"Oslo"}')]
    assert legacy_result.tool_results == [ToolResult("get_weather", "Oslo: 9°C")]
    assert refusal.text == "I can't share that."
    assert call.tools == [
        ToolDef("get_weather", "Get the current weather for a city.", P.CHAT_TOOLS[0]["function"]["parameters"]),
        ToolDef("apply_patch", "Apply a patch (freeform).", None),
    ]
    assert call.fields == {"max_completion_tokens": 1024, "tool_choice": "auto", "user": "user-1234", "metadata": {"app": "weather"}}


def test_chat_request_minimal() -> None:
    call = P.parse_request("/chat/completions", {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]})
    assert call.system == "" and call.messages == [Message("user", "hi")] and call.stream is False and call.tools == []
    only_system = P.parse_request(P.CHAT_PATH, {"messages": [{"role": "system", "content": "s"}]})
    assert only_system.system == "s" and only_system.messages == [] and only_system.model is None


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"messages": "hi"},
        {"messages": {"role": "user"}},
        {"messages": [{"role": "system", "content": "s"}, "hi"]},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": None, "content": "x"}]},
    ],
)
def test_chat_malformed_request(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedBody):
        P.parse_request(P.CHAT_PATH, body)


CHAT_USAGE = Usage(input_tokens=5120, output_tokens=87, cache_read_tokens=4864, reasoning_tokens=64)

CHAT_COMPLETIONS = {
    "text": P.chat_completion({"role": "assistant", "content": "Hello from the model — ünïcödé 🎉", "refusal": None}),
    "reasoning": P.chat_completion({"role": "assistant", "content": "42.", "reasoning_content": "Think: 6 × 7 = 42."}),
    "parallel_tools": P.chat_completion(P.CHAT_PARALLEL_MESSAGE, "tool_calls"),
    "text_and_tool": P.chat_completion(
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}],
        },
        "tool_calls",
    ),
}


def test_chat_json_response() -> None:
    r = P.parse_json_response(P.CHAT_PATH, CHAT_COMPLETIONS["parallel_tools"])
    assert r.id == "chatcmpl-BhxK1yVQ3v0s9Zq" and r.model == P.CHAT_MODEL
    assert r.stop_reason == "tool_calls" and r.complete and r.error is None
    assert r.usage == CHAT_USAGE
    assert r.output == Message(
        "assistant",
        tool_calls=[ToolCall(c["id"], "get_weather", c["function"]["arguments"]) for c in P.CHAT_PARALLEL_MESSAGE["tool_calls"]],
    )
    assert [c.parsed_arguments() for c in r.output.tool_calls] == [{"city": "Zürich"}, {"city": "東京"}]

    reasoning = P.parse_json_response(P.CHAT_PATH, CHAT_COMPLETIONS["reasoning"])
    assert reasoning.output == Message("assistant", "42.", "Think: 6 × 7 = 42.")
    vllm = P.parse_json_response(P.CHAT_PATH, P.chat_completion({"role": "assistant", "content": "ok", "reasoning": "hmm"}))
    assert vllm.output.reasoning == "hmm"
    no_usage = P.parse_json_response(
        P.CHAT_PATH, {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"}]}
    )
    assert no_usage.usage == Usage() and no_usage.stop_reason == "length" and no_usage.output.text == "hi"


def test_chat_json_errors() -> None:
    body = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    r = P.parse_json_response(P.CHAT_PATH, body)
    assert r == Response(error="invalid_request_error: This model's maximum context length is 128000 tokens.", complete=True)
    assert P.parse_json_response(P.CHAT_PATH, {"error": "upstream timeout"}).error == "upstream timeout"
    empty = P.parse_json_response(P.CHAT_PATH, {"id": "x", "choices": []})
    assert empty.output is None and empty.complete
    for bad in ([], "text", None, {"choices": {"0": {}}}):
        with pytest.raises(MalformedBody):
            P.parse_json_response(P.CHAT_PATH, bad)


@pytest.mark.parametrize("name", list(CHAT_COMPLETIONS))
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_chat_stream_equals_json_at_every_split(name: str, eol: str) -> None:
    completion = CHAT_COMPLETIONS[name]
    expected = P.parse_json_response(P.CHAT_PATH, completion)
    data = P.sse(P.chat_events(completion), eol)
    assert_split_invariant(P.CHAT_PATH, data, expected, every=eol == "\n")


def test_chat_stream_parallel_arguments_interleaved() -> None:
    events = P.chat_events(CHAT_COMPLETIONS["parallel_tools"], n=5)
    assert [e[1]["choices"][0]["delta"]["tool_calls"][0]["index"] for e in events[3:13]] == [0, 1] * 5  # interleaved
    r = P.stream_response(P.CHAT_PATH, P.sse(events))
    assert [c.arguments for c in r.output.tool_calls] == ['{"city": "Zürich"}', '{"city": "東京"}']
    assert r.usage == CHAT_USAGE and r.complete


def test_chat_stream_without_usage_or_done() -> None:
    completion = CHAT_COMPLETIONS["text"]
    r = P.stream_response(P.CHAT_PATH, P.sse(P.chat_events(completion, include_usage=False, done=False)))
    assert r.usage == Usage()
    assert r.output.text == "Hello from the model — ünïcödé 🎉"
    assert r.stop_reason == "stop" and r.complete  # a finish_reason ends the answer even without [DONE]


def test_chat_stream_cut_mid_tool_arguments() -> None:
    events = P.chat_events(CHAT_COMPLETIONS["parallel_tools"], n=4)
    cut = events[:6]  # role, two call headers, first argument piece of each call
    r = P.stream_response(P.CHAT_PATH, P.sse(cut))
    assert r.complete is False and r.stop_reason is None
    assert r.id == "chatcmpl-BhxK1yVQ3v0s9Zq" and r.model == P.CHAT_MODEL
    assert [(c.id, c.name) for c in r.output.tool_calls] == [("call_Rk9vYmFy0001", "get_weather"), ("call_Rk9vYmFy0002", "get_weather")]
    for call, full in zip(r.output.tool_calls, ['{"city": "Zürich"}', '{"city": "東京"}']):
        assert full.startswith(call.arguments) and call.arguments != full
        assert call.parsed_arguments() == {"input": call.arguments}


def test_chat_stream_cut_at_every_point() -> None:
    completion = CHAT_COMPLETIONS["text_and_tool"]
    data = P.sse(P.chat_events(completion))
    final = P.parse_json_response(P.CHAT_PATH, completion)
    for _, r in stream_prefixes(P.CHAT_PATH, data, step=3):
        if r.output:
            assert final.output.text.startswith(r.output.text)
        assert r.complete == (r.stop_reason is not None)


def test_chat_stream_error_chunk() -> None:
    events = P.chat_events(CHAT_COMPLETIONS["text"])[:2]
    events.append((None, {"error": {"message": "Internal server error", "type": "server_error", "code": 500}}))
    r = P.stream_response(P.CHAT_PATH, P.sse(events))
    assert r.error == "server_error: Internal server error" and r.complete is False
    assert r.output.text == "Hello from the model — ünïcödé 🎉"[: len(r.output.text)]


def test_chat_stream_ignores_other_choices_and_junk() -> None:
    acc = codec_for("POST", P.CHAT_PATH).stream_accumulator()
    acc.event(Event("message", '{"id":"c1","choices":[{"index":1,"delta":{"content":"other"}}]}'))
    acc.event(Event("message", '{"id":"c1","choices":[{"index":0,"delta":{"content":"mine"}}]}'))
    acc.event(Event("message", "garbage"))
    acc.event(Event("message", "[1]"))
    r = acc.result()
    assert r.output.text == "mine" and r.id == "c1" and not r.complete


# === OpenAI Responses ==========================================================================

TOOL_SEARCH_CALL = {
    "type": "tool_search_call",
    "id": "ts_fake_0001",
    "call_id": "call_ts_0001",
    "status": "completed",
    "execution": "client",
    "arguments": {"query": "spawn agent sub-agent", "limit": 8},
}
TOOL_SEARCH_OUTPUT = {
    "type": "tool_search_output",
    "id": "tso_01a21782-6bbd-7e02-835c-7e20cb70797c",
    "call_id": "call_ts_0001",
    "status": "completed",
    "execution": "client",
    "tools": [{"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn_agent"}]}],
}
CUSTOM_CALL = {
    "type": "custom_tool_call",
    "id": "ctc_0001",
    "call_id": "call_patch_0001",
    "name": "apply_patch",
    "input": "*** Begin Patch\n*** Update File: a.py\n@@\n-x = 1\n+x = 2\n*** End Patch\n",
    "status": "completed",
}
CUSTOM_OUTPUT = {"type": "custom_tool_call_output", "id": "ctco_0001", "call_id": "call_patch_0001", "output": "Success. Updated a.py"}
WEB_SEARCH = {"type": "web_search_call", "id": "ws_0001", "status": "completed", "action": {"type": "search", "query": "codex cli"}}
SPAWN_OUTPUT = '{"agent_id":"01a21782-6bf2-7991-acee-53cf539adfba","nickname":"Erdos"}'


def codex_conversation() -> list[dict[str, Any]]:
    return [
        P.codex_message("user", "AW_AGENT delegate this to a subagent", "msg_01a21782-6b90-7161-8f9b-cd02c4243691"),
        TOOL_SEARCH_CALL,
        TOOL_SEARCH_OUTPUT,
        *P.echo_items(P.RESPONSES_PARALLEL_OUTPUT),
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_K2mJx7Hq0001", "output": "ok"},
        {"type": "function_call_output", "id": "fco_2", "call_id": "call_K2mJx7Hq0002", "output": SPAWN_OUTPUT},
        CUSTOM_CALL,
        CUSTOM_OUTPUT,
        WEB_SEARCH,
        {"type": "message", "id": "msg_a1", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
        P.codex_message("user", "<subagent_notification>\n{}\n</subagent_notification>", "msg_n1"),
    ]


def test_responses_request_codex() -> None:
    call = P.parse_request(P.RESPONSES_PATH, P.codex_request(codex_conversation()))
    assert call.api == "openai-responses" and call.model == P.CODEX_MODEL and call.stream and call.side is None
    # No `instructions`: the leading developer items are the system prompt.
    assert call.system == P.CODEX_BASE_PROMPT + "\n" + P.CODEX_SKILLS
    assert [m.role for m in call.messages] == [
        "user",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    env, prompt, search, found, turn, outputs, patch, patched, answer, note = call.messages
    assert env == Message("user", P.CODEX_ENV)
    assert prompt == Message("user", "AW_AGENT delegate this to a subagent")
    assert search == Message(
        "assistant", tool_calls=[ToolCall("call_ts_0001", "tool_search", '{"query":"spawn agent sub-agent","limit":8}', "tool_search")]
    )
    assert found.tool_results[0].call_id == "call_ts_0001"
    assert orjson.loads(found.tool_results[0].content) == TOOL_SEARCH_OUTPUT["tools"]
    # Reasoning + message + two function calls of one output: ONE assistant message.
    assert turn.text == "Running the build while a helper reads the logs — ✓."
    assert turn.reasoning == "**Planning** run the build and spawn a helper."
    assert turn.tool_calls == [
        ToolCall("call_K2mJx7Hq0001", "exec_command", '{"cmd": "make -j8 && echo ok"}', "function"),
        ToolCall(
            "call_K2mJx7Hq0002", "multi_agent_v1.spawn_agent", '{"message": "Read build.log and summarise the warnings."}', "function"
        ),
    ]
    # Consecutive outputs: ONE tool message.
    assert outputs == Message("tool", tool_results=[ToolResult("call_K2mJx7Hq0001", "ok"), ToolResult("call_K2mJx7Hq0002", SPAWN_OUTPUT)])
    assert patch.tool_calls == [ToolCall("call_patch_0001", "apply_patch", CUSTOM_CALL["input"], "custom")]
    assert patched.tool_results == [ToolResult("call_patch_0001", "Success. Updated a.py")]
    # A server-side web search and the answer after it are one assistant output.
    assert answer == Message(
        "assistant", "Done.", tool_calls=[ToolCall("ws_0001", "web_search", '{"type":"search","query":"codex cli"}', "server")]
    )
    assert note.role == "user" and note.text.startswith("<subagent_notification>")

    assert [t.name for t in call.tools] == ["exec_command", "apply_patch", "tool_search", "web_search"]
    assert call.tools[0].parameters == P.CODEX_TOOLS[0]["parameters"]
    assert call.fields["prompt_cache_key"] == P.CLIENT_METADATA["session_id"]
    assert call.fields["client_metadata"] == P.CLIENT_METADATA
    assert call.fields["reasoning"] == {"effort": "medium"}
    assert call.fields["text"] == {"verbosity": "low"}
    assert not {"input", "tools", "model", "stream", "instructions"} & call.fields.keys()


def test_responses_request_sdk_shapes() -> None:
    string = P.parse_request("/v1/responses", {"model": "gpt-x", "input": "hi"})
    assert string.messages == [Message("user", "hi")] and string.system == "" and not string.stream
    body = {
        "model": "gpt-4.1-mini",
        "instructions": "You answer weather questions.",
        "previous_response_id": "resp_prev",
        "input": [
            {"role": "developer", "content": "Use metric."},
            {"role": "user", "content": [{"type": "input_text", "text": "Paris?"}, {"type": "input_image", "image_url": "data:..."}]},
            {"role": "assistant", "content": "Checking."},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "21C"}]},
        ],
    }
    call = P.parse_request("/responses", body)
    assert call.system == "You answer weather questions.\nUse metric."
    assert call.messages == [
        Message("user", "Paris?"),
        Message("assistant", "Checking.", tool_calls=[ToolCall("c1", "get_weather", '{"city":"Paris"}')]),
        Message("tool", tool_results=[ToolResult("c1", "21C")]),
    ]
    assert call.fields["previous_response_id"] == "resp_prev"
    assert P.parse_request("/v1/responses", {"model": "gpt-x", "previous_response_id": "r"}).messages == []


@pytest.mark.parametrize("path", ["/v1/responses/input_tokens", "/v1/responses/input_tokens?api-version=preview"])
def test_responses_input_tokens_is_a_side_request(path: str) -> None:
    assert P.parse_request(path, {"model": "gpt-x", "input": "hi"}).side == "count-tokens"


def test_responses_unknown_items_add_no_message() -> None:
    items = [
        {"role": "user", "content": "hi"},
        {"type": "item_reference", "id": "msg_prev"},
        {"type": "compaction", "id": "cmp_1", "encrypted_content": "gAAAA"},
        {"role": "user", "content": "again"},
    ]
    call = P.parse_request("/v1/responses", {"input": items})
    assert call.messages == [Message("user", "hi"), Message("user", "again")]


@pytest.mark.parametrize(
    "body",
    [
        {"input": {"role": "user", "content": "hi"}},
        {"input": 42},
        {"input": None},
        {"input": ["hi"]},
        {"input": [{"type": "message", "content": "no role"}]},
        {"input": [{"content": "no role, no type"}]},
    ],
)
def test_responses_malformed_request(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedBody):
        P.parse_request(P.RESPONSES_PATH, body)


RESPONSES_USAGE = Usage(input_tokens=27000, output_tokens=410, cache_read_tokens=26112, reasoning_tokens=256)

RESPONSES_BODIES = {
    "text": P.responses_body(
        [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hello from Codex — ünïcödé 🎉", "annotations": []}],
            }
        ]
    ),
    "parallel": P.responses_body(P.RESPONSES_PARALLEL_OUTPUT),
    "tool_search": P.responses_body([TOOL_SEARCH_CALL]),
    "custom_tool": P.responses_body([CUSTOM_CALL]),
    "web_search": P.responses_body(
        [
            WEB_SEARCH,
            {
                "type": "message",
                "id": "msg_2",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Found it.", "annotations": []}],
            },
        ]
    ),
    "incomplete": P.responses_body(
        [{"type": "reasoning", "id": "rs_9", "summary": [{"type": "summary_text", "text": "Long thought"}]}],
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
    ),
    "failed": P.responses_body([], status="failed", usage={"input_tokens": 10, "output_tokens": 0})
    | {"error": {"code": "server_error", "message": "The model failed to generate a response."}},
}


def test_responses_json_response() -> None:
    r = P.parse_json_response(P.RESPONSES_PATH, RESPONSES_BODIES["parallel"])
    assert r.id == "resp_68a1f0c2b3d4e5f6" and r.model == P.CODEX_MODEL
    assert r.stop_reason == "completed" and r.complete and r.error is None
    assert r.usage == RESPONSES_USAGE
    assert r.output.text == "Running the build while a helper reads the logs — ✓."
    assert r.output.reasoning == "**Planning** run the build and spawn a helper."
    assert [(c.id, c.name) for c in r.output.tool_calls] == [
        ("call_K2mJx7Hq0001", "exec_command"),
        ("call_K2mJx7Hq0002", "multi_agent_v1.spawn_agent"),
    ]

    custom = P.parse_json_response(P.RESPONSES_PATH, RESPONSES_BODIES["custom_tool"])
    assert custom.output.tool_calls == [ToolCall("call_patch_0001", "apply_patch", CUSTOM_CALL["input"], "custom")]
    search = P.parse_json_response(P.RESPONSES_PATH, RESPONSES_BODIES["tool_search"])
    assert search.output.tool_calls[0].parsed_arguments() == {"query": "spawn agent sub-agent", "limit": 8}

    incomplete = P.parse_json_response(P.RESPONSES_PATH, RESPONSES_BODIES["incomplete"])
    assert incomplete.stop_reason == "incomplete: max_output_tokens" and incomplete.output == Message("assistant", reasoning="Long thought")

    failed = P.parse_json_response(P.RESPONSES_PATH, RESPONSES_BODIES["failed"])
    assert failed.error == "server_error: The model failed to generate a response." and failed.stop_reason == "failed"
    assert failed.output is None and failed.usage == Usage(input_tokens=10, output_tokens=0)


def test_responses_json_errors() -> None:
    body = {"error": {"message": "Invalid 'input[3].call_id'", "type": "invalid_request_error", "param": "input", "code": None}}
    assert P.parse_json_response(P.RESPONSES_PATH, body) == Response(
        error="invalid_request_error: Invalid 'input[3].call_id'", complete=True
    )
    with pytest.raises(MalformedBody):
        P.parse_json_response(P.RESPONSES_PATH, "oops")


@pytest.mark.parametrize("name", list(RESPONSES_BODIES))
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_responses_stream_equals_json_at_every_split(name: str, eol: str) -> None:
    body = RESPONSES_BODIES[name]
    expected = P.parse_json_response(P.RESPONSES_PATH, body)
    data = P.sse(P.responses_events(body), eol)
    assert_split_invariant(P.RESPONSES_PATH, data, expected, every=eol == "\n")


def test_responses_stream_cut_before_completed_keeps_items() -> None:
    body = RESPONSES_BODIES["parallel"]
    events = P.responses_events(body)
    r = P.stream_response(P.RESPONSES_PATH, P.sse(events[:-1]))  # everything but response.completed
    full = P.parse_json_response(P.RESPONSES_PATH, body)
    assert r.complete is False and r.id == full.id and r.model == full.model
    assert r.output == full.output
    assert r.usage == Usage() and r.stop_reason == "in_progress"


def test_responses_stream_cut_mid_arguments() -> None:
    events = P.responses_events(RESPONSES_BODIES["parallel"], n=4)
    last_delta = max(i for i, (name, _) in enumerate(events) if name == "response.function_call_arguments.delta")
    r = P.stream_response(P.RESPONSES_PATH, P.sse(events[:last_delta]))  # the last argument piece is missing
    assert r.complete is False
    first, second = r.output.tool_calls
    assert first.arguments == '{"cmd": "make -j8 && echo ok"}'
    full = P.RESPONSES_PARALLEL_OUTPUT[3]["arguments"]
    assert second.name == "multi_agent_v1.spawn_agent" and full.startswith(second.arguments) and second.arguments != full
    assert second.parsed_arguments() == {"input": second.arguments}


def test_responses_stream_cut_at_every_point() -> None:
    body = RESPONSES_BODIES["parallel"]
    data = P.sse(P.responses_events(body))
    final = P.parse_json_response(P.RESPONSES_PATH, body)
    for n, r in stream_prefixes(P.RESPONSES_PATH, data, step=7):
        assert r.complete == (n >= terminal_event_end(data))
        if r.output:
            assert final.output.text.startswith(r.output.text)
            assert final.output.reasoning.startswith(r.output.reasoning)


def test_responses_stream_deltas_without_added_items() -> None:
    # Some servers send deltas without output_item.added: the text must not be lost (nor crash).
    events = [
        ("response.output_text.delta", {"type": "response.output_text.delta", "output_index": 0, "delta": "Hel"}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "output_index": 0, "delta": "lo"}),
        ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": '{"a"'}),
        ("response.reasoning_summary_text.delta", {"type": "response.reasoning_summary_text.delta", "output_index": 2, "delta": "hm"}),
    ]
    r = P.stream_response(P.RESPONSES_PATH, P.sse(events))
    assert r.output.text == "Hello" and r.output.reasoning == "hm"
    assert r.output.tool_calls[0].arguments == '{"a"' and not r.complete


def test_responses_stream_failed_and_error_events() -> None:
    failed = P.stream_response(P.RESPONSES_PATH, P.sse(P.responses_events(RESPONSES_BODIES["failed"])))
    assert failed.error == "server_error: The model failed to generate a response."
    assert failed.complete is True and failed.stop_reason == "failed"

    events = P.responses_events(RESPONSES_BODIES["text"])[:5]
    events.append(
        ("error", {"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached", "param": None, "sequence_number": 5})
    )
    r = P.stream_response(P.RESPONSES_PATH, P.sse(events))
    assert r.error == "rate_limit_exceeded: Rate limit reached"
    assert r.complete is False and r.id == "resp_68a1f0c2b3d4e5f6"
    assert r.output.text and "Hello from Codex — ünïcödé 🎉".startswith(r.output.text)

    nested = P.stream_response(
        P.RESPONSES_PATH, P.sse([("error", {"type": "error", "error": {"type": "server_error", "message": "boom"}})])
    )
    assert nested.error == "server_error: boom" and nested.output is None


def test_responses_stream_incomplete_event() -> None:
    r = P.stream_response(P.RESPONSES_PATH, P.sse(P.responses_events(RESPONSES_BODIES["incomplete"])))
    assert r.complete and r.stop_reason == "incomplete: max_output_tokens" and r.output.reasoning == "Long thought"


def test_responses_stream_completed_with_empty_output_uses_streamed_items() -> None:
    body = RESPONSES_BODIES["parallel"]
    events = P.responses_events(body)
    events[-1][1]["response"] = body | {"output": []}
    r = P.stream_response(P.RESPONSES_PATH, P.sse(events))
    assert r.complete and r.output == P.parse_json_response(P.RESPONSES_PATH, body).output and r.usage == RESPONSES_USAGE


# === echo consistency: a response and its echo in the next request thread together =============


def echo_cases() -> list[tuple[str, str, bytes, dict[str, Any], Any]]:
    """(name, path, SSE stream, JSON response, next request body) for each API."""
    cases = []
    for name, message in ANTHROPIC_MESSAGES.items():
        content = [dict(b) for b in message["content"]]
        if content:
            content[-1]["cache_control"] = {"type": "ephemeral"}  # Claude Code marks the last block
        results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "ok"} for b in content if b["type"] == "tool_use"]
        follow = [{"role": "user", "content": results}] if results else [P.claude_user("next")]
        messages = [P.claude_user("go"), {"role": "system", "content": "Agent types"}, {"role": "assistant", "content": content}, *follow]
        cases.append(
            (f"anthropic-{name}", P.ANTHROPIC_PATH, P.sse(P.anthropic_events(message)), message, (P.claude_code_request(messages), 2))
        )
    for name, completion in CHAT_COMPLETIONS.items():
        echoed = dict(completion["choices"][0]["message"])  # as the SDK dumps it: content None, refusal None
        results = [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in echoed.get("tool_calls") or []]
        body = {
            "model": P.CHAT_MODEL,
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "go"}, echoed, *results],
        }
        cases.append((f"chat-{name}", P.CHAT_PATH, P.sse(P.chat_events(completion)), completion, (body, 1)))
    for name, response in RESPONSES_BODIES.items():
        if not response["output"]:
            continue
        outputs = [
            {"type": "function_call_output", "id": f"fco_{i}", "call_id": item["call_id"], "output": "ok"}
            for i, item in enumerate(response["output"])
            if item["type"] == "function_call"
        ]
        items = [P.codex_message("user", "go", "msg_u"), *P.echo_items(response["output"]), *outputs]
        cases.append((f"responses-{name}", P.RESPONSES_PATH, P.sse(P.responses_events(response)), response, (P.codex_request(items), 2)))
    return cases


ECHO_CASES = echo_cases()


@pytest.mark.parametrize("name, path, stream, whole, request_body", ECHO_CASES, ids=[c[0] for c in ECHO_CASES])
def test_response_fingerprint_equals_its_echo(
    name: str, path: str, stream: bytes, whole: Any, request_body: tuple[dict[str, Any], int]
) -> None:
    body, position = request_body
    call = P.parse_request(path, body)
    echoed = call.messages[position]
    assert echoed.role == "assistant"
    for response in (P.parse_json_response(path, whole), P.stream_response(path, stream)):
        assert response.output is not None
        assert response.output.fingerprint() == echoed.fingerprint()
        # Only reasoning may differ (clients drop or encrypt it), and it is not fingerprinted.
        assert response.output.text == echoed.text and response.output.tool_calls == echoed.tool_calls
    if len(call.messages) > position + 1:
        after = call.messages[position + 1]
        assert after.role in ("user", "tool") and after.fingerprint() != echoed.fingerprint()


def test_responses_echo_groups_one_output_and_one_batch_of_outputs() -> None:
    items = [P.codex_message("user", "go", "msg_u"), *P.echo_items(P.RESPONSES_PARALLEL_OUTPUT)]
    items += [{"type": "function_call_output", "call_id": c, "output": "ok"} for c in ("call_K2mJx7Hq0001", "call_K2mJx7Hq0002")]
    call = P.parse_request(P.RESPONSES_PATH, P.codex_request(items))
    assert [m.role for m in call.messages] == ["user", "user", "assistant", "tool"]
    assert len(call.messages[2].tool_calls) == 2 and len(call.messages[3].tool_results) == 2


def test_fingerprint_tells_different_turns_apart() -> None:
    base = Message("assistant", "text", tool_calls=[ToolCall("call_1", "f", "{}")])
    assert base.fingerprint() == Message("assistant", "text", "other reasoning", [ToolCall("call_1", "f", '{"x":1}')]).fingerprint()
    for other in (
        Message("user", "text", tool_calls=[ToolCall("call_1", "f")]),
        Message("assistant", "text!", tool_calls=[ToolCall("call_1", "f")]),
        Message("assistant", "text", tool_calls=[ToolCall("call_2", "f")]),
        Message("assistant", "text", tool_calls=[ToolCall("call_1", "g")]),
        Message("assistant", "text"),
        Message("assistant", "text", tool_results=[ToolResult("call_1", "f")]),
    ):
        assert other.fingerprint() != base.fingerprint()


# === recorded real traffic =====================================================================


def load(name: str) -> tuple[list[Any], dict[str, Any]]:
    with (P.FIXTURES / f"{name}.mitm").open("rb") as f:
        flows = list(FlowReader(f).stream())
    truth = json.loads((P.FIXTURES / f"{name}.truth.json").read_text())
    return flows, truth


def parse_flow(flow: Any) -> tuple[Call, Response]:
    path = flow.request.path
    call = P.new_call(path)
    codec = codec_for(flow.request.method, path)
    codec.parse_request(orjson.loads(flow.request.content), call)
    body = decode_body(flow.response.raw_content, flow.response.headers.get("content-encoding"))
    if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        response = P.stream_response(path, body)
    else:
        response = codec.parse_response(orjson.loads(body))
    return call, response


RECORDINGS = [
    "real/cc_b_tool",
    "real/cc_c_subagent",
    "real/cx_b_tool",
    "real/cx_c_subagent",
    "real/sdk_python",
    "idless/oa_a_two_turns",
    "idless/oa_b_agents_as_tools",
]


def tool_name(call: ToolCall) -> str:
    return "tool_search_call" if call.kind == "tool_search" else call.name.rsplit(".", 1)[-1]


@pytest.mark.parametrize("name", RECORDINGS)
def test_recorded_flows_parse(name: str) -> None:
    flows, truth = load(name)
    labels = {f["index"]: f for f in truth["flows"]}
    parsed = 0
    for index, flow in enumerate(flows):
        codec = codec_for(flow.request.method, flow.request.path)
        if flow.request.method != "POST":
            assert codec is None  # the HEAD probe is not an LLM call
            continue
        call, response = parse_flow(flow)
        parsed += 1
        assert call.model and call.messages and call.side is None
        assert response.complete and response.error is None and response.id and response.model
        assert response.usage.input_tokens and response.usage.output_tokens
        assert response.output is not None and response.output.role == "assistant"
        expected = (labels[index].get("response") or {}).get("tool_calls")
        if expected is not None:
            assert [tool_name(c) for c in response.output.tool_calls] == expected
        if "stop_reason" in (labels[index].get("response") or {}):
            assert response.stop_reason == labels[index]["response"]["stop_reason"]
        if call.api != "openai-chat":
            assert call.tools or name.startswith("real/sdk")
    assert parsed == truth["summary"]["llm_calls"]


@pytest.mark.parametrize("name", [r for r in RECORDINGS if not r.endswith("sdk_python")])
def test_recorded_next_request_extends_previous_request_plus_response(name: str) -> None:
    # Threading by prefix: request N+1 of an agent = request N's messages + response N's output + new ones.
    flows, truth = load(name)
    by_agent: dict[str, list[int]] = {}
    for label in truth["flows"]:
        if label["kind"] == "agent":
            by_agent.setdefault(label["agent_id"], []).append(label["index"])
    checked = 0
    for indexes in by_agent.values():
        for earlier, later in zip(indexes, indexes[1:]):
            call, response = parse_flow(flows[earlier])
            next_call, _ = parse_flow(flows[later])
            thread = fingerprints(call.messages) + [response.output.fingerprint()]
            assert fingerprints(next_call.messages)[: len(thread)] == thread, (earlier, later)
            assert next_call.system == call.system
            checked += 1
    assert checked >= 1


def test_claude_subagent_prompt_comes_from_the_agent_tool_call() -> None:
    flows, truth = load("real/cc_c_subagent")
    main_call, main_response = parse_flow(flows[1])
    sub_call, sub_response = parse_flow(flows[2])
    assert main_call.system.startswith("x-anthropic-billing-header:") and "cc_is_subagent=true" not in main_call.system
    assert "cc_is_subagent=true;" in sub_call.system.split("\n", 1)[0]
    assert main_call.fields["thinking"] == {"type": "adaptive"} and sub_call.fields["thinking"] == {"type": "disabled"}
    assert json.loads(main_call.fields["metadata"]["user_id"])["session_id"] == truth["flows"][1]["root_session_id"]
    (agent,) = main_response.output.tool_calls
    assert agent.name == "Agent" and agent.id == "toolu_fake_00010"
    arguments = agent.parsed_arguments()
    assert arguments["subagent_type"] == "general-purpose"
    first_user = next(m for m in sub_call.messages if m.role == "user")
    assert first_user.text.startswith("<system-reminder>") and first_user.text.endswith(arguments["prompt"])
    assert [m.role for m in main_call.messages] == ["user", "system"]  # a mid-conversation system entry
    # The parent's tool_result for that call names the subagent.
    last_call, _ = parse_flow(flows[4])
    (result,) = last_call.messages[-1].tool_results
    assert result.call_id == agent.id and f"agentId: {truth['flows'][2]['agent_id']}" in result.content
    assert main_response.usage == Usage(input_tokens=100, output_tokens=20, cache_read_tokens=0, cache_write_tokens=0)


def test_codex_subagent_spawn_call() -> None:
    flows, truth = load("real/cx_c_subagent")
    first_call, first = parse_flow(flows[0])
    assert first_call.system.startswith("You are Codex") and "<skills_instructions>" in first_call.system
    assert [m.role for m in first_call.messages] == ["user", "user"]
    assert first.output.tool_calls[0].kind == "tool_search"
    assert {"tool_search", "web_search", "apply_patch", "exec_command"} <= {t.name for t in first_call.tools}

    _, spawn = parse_flow(flows[1])
    (call,) = spawn.output.tool_calls
    assert call.name == "multi_agent_v1.spawn_agent" and call.kind == "function"
    message = call.parsed_arguments()["message"]
    sub_call, _ = parse_flow(flows[3])
    assert sub_call.messages[-1] == Message("user", message)
    assert sub_call.fields["client_metadata"]["session_id"] == truth["flows"][3]["root_session_id"]
    # The parent's next request carries the spawn result naming the child thread.
    parent_call, _ = parse_flow(flows[2])
    assert parent_call.messages[-1].tool_results[0].call_id == call.id
    assert json.loads(parent_call.messages[-1].tool_results[0].content)["agent_id"] == truth["flows"][3]["agent_id"]
    assert spawn.usage == Usage(input_tokens=100, output_tokens=20, cache_read_tokens=0, reasoning_tokens=0)
    # The final parent request ends with the user-role subagent notification.
    last_call, _ = parse_flow(flows[5])
    assert last_call.messages[-1].role == "user" and last_call.messages[-1].text.startswith("<subagent_notification>")


def test_recorded_streams_are_split_invariant() -> None:
    rng = random.Random(5)
    for name in ("real/cc_c_subagent", "real/cx_c_subagent"):
        flows, _ = load(name)
        for flow in flows:
            if flow.request.method != "POST":
                continue
            path, data = flow.request.path, flow.response.raw_content
            whole = P.stream_response(path, data)
            for _ in range(20):
                assert P.stream_response(path, data, P.random_chunks(data, rng, max_size=64)) == whole
