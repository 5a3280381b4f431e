"""OpenAI Chat Completions: POST /v1/chat/completions or /chat/completions (JSON or SSE).

Quirks handled here:
- The system prompt is the leading `system` / `developer` messages; later ones stay in the list.
- Streamed tool calls arrive as deltas keyed by `index`: id and name first, arguments in pieces.
- Usage arrives in a last chunk with empty `choices` (only with `stream_options.include_usage`).
- OpenAI-compatible servers (vLLM, DeepSeek, Dynamo) return reasoning as `reasoning_content`
  or `reasoning`.
"""

from __future__ import annotations

from typing import Any

from ..model import Call, Message, Response, ToolCall, ToolDef, ToolResult, Usage
from ..sse import Event
from .base import (
    Codec,
    MalformedBody,
    StreamAccumulator,
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


class OpenAIChat(Codec):
    api = "openai-chat"

    def matches(self, path: str) -> bool:
        return path.endswith("/chat/completions")

    def parse_request(self, body: dict[str, Any], call: Call) -> None:
        call.model = body.get("model") if isinstance(body.get("model"), str) else None
        call.stream = body.get("stream") is True
        raw_messages = require_list(body, "messages")
        system: list[str] = []
        start = 0
        for raw in raw_messages:
            if not (isinstance(raw, dict) and raw.get("role") in ("system", "developer")):
                break
            system.append(text_of(raw.get("content")))
            start += 1
        call.system = "\n".join(system)
        call.messages = [_message(m) for m in raw_messages[start:]]
        call.tools = [_tool(t) for t in items(body.get("tools")) if isinstance(t, dict)]
        keep_fields(body, call, ("max_tokens", "max_completion_tokens", "tool_choice", "user", "metadata", "response_format"))

    def parse_response(self, body: Any) -> Response:
        body, error = response_object(body, "choices")
        if error is not None:
            return error
        choices = body.get("choices") or [{}]
        if not isinstance(choices, list):
            raise MalformedBody("`choices` is not a list")
        choice = obj(choices[0])
        message = obj(choice.get("message"))
        calls = [_tool_call(c) for c in items(message.get("tool_calls")) if isinstance(c, dict)]
        return Response(
            id=optional_string(body.get("id")),
            model=optional_string(body.get("model")),
            output=assistant_message(text_of(message.get("content")), _reasoning(message), calls),
            usage=_usage(body.get("usage")),
            stop_reason=optional_string(choice.get("finish_reason")),
            complete=True,
        )

    def stream_accumulator(self) -> StreamAccumulator:
        return _Stream()


def _message(raw: Any) -> Message:
    if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
        raise MalformedBody("a message is not an object with a role")
    role = raw["role"]
    if role == "tool":
        return Message("tool", tool_results=[ToolResult(ident(raw.get("tool_call_id")), text_of(raw.get("content")))])
    if role == "function":  # legacy functions API
        return Message("tool", tool_results=[ToolResult(string(raw.get("name")), text_of(raw.get("content")))])
    calls = [_tool_call(c) for c in items(raw.get("tool_calls")) if isinstance(c, dict)]
    if isinstance(raw.get("function_call"), dict):
        legacy = raw["function_call"]
        calls.append(ToolCall(string(legacy.get("name")), string(legacy.get("name")), _arguments(legacy.get("arguments", ""))))
    return Message(role, text_of(raw.get("content")), _reasoning(raw), calls)


def _reasoning(message: dict[str, Any]) -> str:
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else ""


def _tool_call(raw: dict[str, Any]) -> ToolCall:
    function = obj(raw.get("function") or raw.get("custom"))
    arguments = _arguments(function.get("arguments", function.get("input", "")))
    return ToolCall(ident(raw.get("id")), string(function.get("name")), arguments, string(raw.get("type")) or "function")


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json_text(value)


def _tool(raw: dict[str, Any]) -> ToolDef:
    function = raw.get("function") or raw.get("custom") or raw
    function = function if isinstance(function, dict) else raw
    return ToolDef(
        string(function.get("name")) or string(raw.get("type")),
        string(function.get("description")),
        serialisable(function.get("parameters")),
    )


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt_details = obj(raw.get("prompt_tokens_details"))
    completion_details = obj(raw.get("completion_tokens_details"))
    return Usage(
        input_tokens=as_int(raw.get("prompt_tokens")),
        output_tokens=as_int(raw.get("completion_tokens")),
        cache_read_tokens=as_int(prompt_details.get("cached_tokens")),
        reasoning_tokens=as_int(completion_details.get("reasoning_tokens")),
    )


class _Stream(StreamAccumulator):
    def __init__(self) -> None:
        self.response = Response()
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}

    def event(self, event: Event) -> None:
        if event.data.strip() == "[DONE]":
            self.response.complete = True
            return
        data = event_object(event)
        if data is None:
            return
        if "error" in data:
            self.response.error = error_text(data["error"])
            return
        self.response.id = self.response.id or optional_string(data.get("id"))
        self.response.model = self.response.model or optional_string(data.get("model"))
        if isinstance(data.get("usage"), dict):
            self.response.usage = _usage(data["usage"])
        for choice in items(data.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self._delta(obj(choice.get("delta")))
            if string(choice.get("finish_reason")):
                self.response.stop_reason = choice["finish_reason"]

    def _delta(self, delta: dict[str, Any]) -> None:
        if isinstance(delta.get("content"), str):
            self.text.append(delta["content"])
        reasoning = _reasoning(delta)
        if reasoning:
            self.reasoning.append(reasoning)
        for piece in items(delta.get("tool_calls")):
            if not isinstance(piece, dict):
                continue
            index = as_int(piece.get("index"))
            call = self.calls.setdefault(
                len(self.calls) if index is None else index, {"id": "", "name": "", "arguments": [], "type": "function"}
            )
            call["id"] = ident(piece.get("id")) or call["id"]
            call["type"] = string(piece.get("type")) or call["type"]
            function = obj(piece.get("function"))
            call["name"] = string(function.get("name")) or call["name"]
            if isinstance(function.get("arguments"), str):
                call["arguments"].append(function["arguments"])

    @property
    def finished(self) -> bool:
        return self.response.complete  # `[DONE]`

    def result(self) -> Response:
        calls = [ToolCall(c["id"], c["name"], "".join(c["arguments"]), c["type"]) for _, c in sorted(self.calls.items())]
        self.response.output = assistant_message("".join(self.text), "".join(self.reasoning), calls)
        if self.response.stop_reason and not self.response.complete:
            # Servers without `[DONE]` (and streams cut after the last choice) still finished the answer.
            self.response.complete = True
        return self.response
