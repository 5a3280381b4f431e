"""Anthropic Messages API: POST /v1/messages (JSON or SSE) and /v1/messages/count_tokens.

Quirks handled here:
- `system` is a string or a list of text blocks; Claude Code puts a billing line in block 0.
- `messages` may hold role `system` entries mid-conversation (a beta Claude Code uses).
- `usage.input_tokens` excludes cache reads and writes: the total input is the sum of all three.
- A streamed message ends with `message_stop`; usage arrives in `message_start` and is updated
  by `message_delta`.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..model import Call, Message, Response, ToolCall, ToolDef, ToolResult, Usage, endpoint
from ..sse import Event
from .base import (
    Codec,
    MalformedBody,
    StreamAccumulator,
    add_ints,
    as_int,
    assistant_message,
    error_text,
    event_object,
    ident,
    items,
    json_text,
    keep_fields,
    obj,
    optional_string,
    require_list,
    response_object,
    serialisable,
    string,
    text_of,
)

TOOL_CALL_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")
DELTA_FIELDS = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


class AnthropicMessages(Codec):
    api = "anthropic-messages"

    def matches(self, path: str) -> bool:
        # OpenAI's Assistants API also has `/threads/{id}/messages`: not an LLM call.
        return (path.endswith("/messages") or path.endswith("/messages/count_tokens")) and "/threads/" not in path

    def parse_request(self, body: dict[str, Any], call: Call) -> None:
        if endpoint(call.path).endswith("/count_tokens"):  # Claude Code adds ?beta=true
            call.side = "count-tokens"
        call.model = body.get("model") if isinstance(body.get("model"), str) else None
        call.stream = body.get("stream") is True
        call.system = text_of(body.get("system"))
        call.messages = [_message(m) for m in require_list(body, "messages")]
        call.tools = [
            ToolDef(string(t.get("name")) or string(t.get("type")), string(t.get("description")), serialisable(t.get("input_schema")))
            for t in items(body.get("tools"))
            if isinstance(t, dict)
        ]
        keep_fields(body, call, ("metadata", "max_tokens", "output_config", "thinking", "tool_choice"))

    def parse_response(self, body: Any) -> Response:
        body, error = response_object(body, "content")
        if error is not None:
            return error
        if "input_tokens" in body and "content" not in body:  # count_tokens
            return Response(usage=Usage(input_tokens=as_int(body["input_tokens"])), complete=True)
        message = _message({"role": "assistant", "content": body.get("content") or []})
        return Response(
            id=optional_string(body.get("id")),
            model=optional_string(body.get("model")),
            output=assistant_message(message.text, message.reasoning, message.tool_calls, message.tool_results),
            usage=_usage(body.get("usage")),
            stop_reason=optional_string(body.get("stop_reason")),
            complete=True,
        )

    def stream_accumulator(self) -> StreamAccumulator:
        return _Stream()


def _message(raw: Any) -> Message:
    if not isinstance(raw, dict):
        raise MalformedBody("a message is not an object")
    role = raw.get("role")
    if not isinstance(role, str):
        raise MalformedBody("a message has no role")
    content = raw.get("content")
    if not isinstance(content, list):
        return Message(role, text=text_of(content))
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    results: list[ToolResult] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = string(block.get("type"))
        if kind == "text":
            texts.append(string(block.get("text")))
        elif kind == "thinking":
            reasoning.append(string(block.get("thinking")))
        elif kind in TOOL_CALL_BLOCKS:
            calls.append(
                ToolCall(
                    ident(block.get("id")),
                    string(block.get("name")),
                    json_text(block.get("input") or {}),
                    "function" if kind == "tool_use" else "server",
                )
            )
        elif kind == "tool_result" or kind.endswith("_tool_result"):
            results.append(
                ToolResult(
                    ident(block.get("tool_use_id")),
                    _result_text(block.get("content")),
                    block.get("is_error") is True,
                )
            )
        elif kind in ("image", "document"):
            texts.append(f"[{kind}]")
    return Message(role, "\n".join(texts), "\n".join(reasoning), calls, results)


def _result_text(content: Any) -> str:
    if isinstance(content, list) and content and all(isinstance(b, dict) for b in content):
        if not any(b.get("type") == "text" for b in content):
            return json_text(content)
    return text_of(content)


def _usage(raw: Any, previous: Usage | None = None) -> Usage:
    usage = previous or Usage()
    if not isinstance(raw, dict):
        return usage
    fresh = as_int(raw.get("input_tokens"))
    read = as_int(raw.get("cache_read_input_tokens"))
    write = as_int(raw.get("cache_creation_input_tokens"))
    if read is not None:
        usage.cache_read_tokens = read
    if write is not None:
        usage.cache_write_tokens = write
    if fresh is not None:
        usage.input_tokens = add_ints(fresh, usage.cache_read_tokens, usage.cache_write_tokens)
    output = as_int(raw.get("output_tokens"))
    if output is not None:
        usage.output_tokens = output
    return usage


class _Stream(StreamAccumulator):
    def __init__(self) -> None:
        self.response = Response()
        self.blocks: dict[int, dict[str, Any]] = {}
        # Deltas are collected and joined once: appending to a string per delta is quadratic.
        self.pieces: dict[tuple[int, str], list[str]] = {}

    def event(self, event: Event) -> None:
        data = event_object(event)
        if data is None:
            return
        kind = string(data.get("type")) or event.event
        index = as_int(data.get("index"))
        if kind == "message_start":
            message = obj(data.get("message"))
            self.response.id = optional_string(message.get("id"))
            self.response.model = optional_string(message.get("model"))
            self.response.usage = _usage(message.get("usage"))
        elif kind == "content_block_start":
            block = dict(obj(data.get("content_block")))
            if block.get("type") in TOOL_CALL_BLOCKS:
                block["input"] = block.get("input") or {}
            self.blocks[len(self.blocks) if index is None else index] = block
        elif kind == "content_block_delta":
            self._delta(index or 0, obj(data.get("delta")))
        elif kind == "content_block_stop":
            self._finish_block(index or 0)
        elif kind == "message_delta":
            delta = obj(data.get("delta"))
            if string(delta.get("stop_reason")):
                self.response.stop_reason = delta["stop_reason"]
            self.response.usage = _usage(data.get("usage"), self.response.usage)
        elif kind == "message_stop":
            self.response.complete = True
        elif kind == "error":
            self.response.error = error_text(data.get("error"))

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        self.blocks.setdefault(index, {"type": "text", "text": ""})
        field = DELTA_FIELDS.get(string(delta.get("type")))
        if field is not None:
            self.pieces.setdefault((index, field), []).append(string(delta.get(field)))

    def _finish_block(self, index: int) -> None:
        block = self.blocks.get(index)
        for field in ("text", "thinking", "partial_json"):
            pieces = self.pieces.pop((index, field), None)
            if pieces is None or block is None:
                continue
            text = "".join(pieces)
            if field != "partial_json":
                block[field] = string(block.get(field)) + text
                continue
            try:
                block["input"] = orjson.loads(text) if text else {}
            except orjson.JSONDecodeError:
                block["input"] = {"input": text}  # cut mid-arguments: keep what arrived

    @property
    def finished(self) -> bool:
        return self.response.complete

    def result(self) -> Response:
        for index in {index for index, _ in self.pieces}:
            self._finish_block(index)
        content = [self.blocks[i] for i in sorted(self.blocks)]
        message = _message({"role": "assistant", "content": content})
        self.response.output = assistant_message(message.text, message.reasoning, message.tool_calls, message.tool_results)
        return self.response
