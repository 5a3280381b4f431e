"""OpenAI Responses API: POST /v1/responses or /responses (JSON or SSE).

Quirks handled here:
- `input` is a string or a list of items; the system prompt is `instructions` plus any leading
  `developer` / `system` items (Codex sends no `instructions`).
- One model output is several items (reasoning, message, function calls): consecutive
  assistant-side items form one Message, and consecutive tool outputs form one Message, so a
  response and its echo in the next request's `input` compare equal.
- Codex defers tools behind a client-side `tool_search` (`tool_search_call` /
  `tool_search_output` items) and sends custom (freeform) tool calls.
- A stream ends with `response.completed`, `response.incomplete` or `response.failed`, each
  carrying the whole response; items are also rebuilt from `output_item.done` and deltas so a
  stream cut part-way keeps what arrived.
"""

from __future__ import annotations

from typing import Any

from ..model import Call, Message, Response, ToolCall, ToolDef, ToolResult, Usage, endpoint
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
    response_object,
    serialisable,
    string,
    text_of,
)

CALL_ITEMS = {
    "function_call": "function",
    "custom_tool_call": "custom",
    "tool_search_call": "tool_search",
    "local_shell_call": "local_shell",
    "shell_call": "shell",
    "apply_patch_call": "apply_patch",
    "computer_call": "computer",
    "mcp_call": "mcp",
}
SERVER_ITEMS = ("web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call")
# Request fields the scope rules and side-request rules read.
RESPONSES_FIELDS = (
    "previous_response_id",
    "prompt_cache_key",
    "client_metadata",
    "metadata",
    "text",
    "max_output_tokens",
    "tool_choice",
    "conversation",
    "reasoning",
)
OUTPUT_ITEMS = (
    "function_call_output",
    "custom_tool_call_output",
    "tool_search_output",
    "local_shell_call_output",
    "shell_call_output",
    "apply_patch_call_output",
    "computer_call_output",
)


class OpenAIResponses(Codec):
    api = "openai-responses"

    def matches(self, path: str) -> bool:
        return path.endswith("/responses") or path.endswith("/responses/input_tokens")

    def parse_request(self, body: dict[str, Any], call: Call) -> None:
        if endpoint(call.path).endswith("/input_tokens"):
            call.side = "count-tokens"
        elif body.get("generate") is False:  # Codex warms the prompt cache without generating
            call.side = "prefill"
        call.model = body.get("model") if isinstance(body.get("model"), str) else None
        call.stream = body.get("stream") is True
        raw_input = body.get("input", [])
        if isinstance(raw_input, str):
            raw_input = [{"role": "user", "content": raw_input}]
        if not isinstance(raw_input, list):
            raise MalformedBody("`input` must be a string or a list")
        system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
        start = 0
        for item in raw_input:
            if not (isinstance(item, dict) and item.get("role") in ("system", "developer")):
                break
            system.append(text_of(item.get("content")))
            start += 1
        call.system = "\n".join(system)
        call.messages = items_to_messages(raw_input[start:])
        call.tools = [_tool(t) for t in items(body.get("tools")) if isinstance(t, dict)]
        keep_fields(body, call, RESPONSES_FIELDS)

    def parse_response(self, body: Any) -> Response:
        body, error = response_object(body, "output")
        return error if error is not None else _response(body, complete=True)

    def stream_accumulator(self) -> StreamAccumulator:
        return _Stream()


def items_to_messages(items: list[Any]) -> list[Message]:
    """Input or output items as Messages, grouping one model output and one batch of tool outputs."""
    messages: list[Message] = []
    for item in items:
        if not isinstance(item, dict):
            raise MalformedBody("an input item is not an object")
        kind = string(item.get("type")) or "message"
        role = item.get("role")
        if kind == "message" and role != "assistant":
            if not isinstance(role, str):
                raise MalformedBody("a message item has no role")
            messages.append(Message(role, text_of(item.get("content"))))
            continue
        if kind in OUTPUT_ITEMS:
            target = _open_group(messages, "tool")
            target.tool_results.append(ToolResult(ident(item.get("call_id")) or ident(item.get("id")), _output_text(item)))
            continue
        if kind == "message":
            target = _open_group(messages, "assistant")
            target.text = _join(target.text, text_of(item.get("content")))
        elif kind == "reasoning":
            target = _open_group(messages, "assistant")
            summary = item.get("summary") or []
            target.reasoning = _join(
                target.reasoning, text_of(summary, ("summary_text",)) or text_of(item.get("content"), ("reasoning_text",))
            )
        elif kind in CALL_ITEMS:
            _open_group(messages, "assistant").tool_calls.append(_call(item, CALL_ITEMS[kind]))
        elif kind in SERVER_ITEMS:
            _open_group(messages, "assistant").tool_calls.append(
                ToolCall(ident(item.get("id")), kind.removesuffix("_call"), json_text(item.get("action") or {}), "server")
            )
        # Other item kinds (item_reference, compaction, ...) carry nothing we compare or report:
        # they open no Message (an empty assistant entry would thread like any other).
    return messages


def _open_group(messages: list[Message], role: str) -> Message:
    if messages and messages[-1].role == role:
        return messages[-1]
    messages.append(Message(role))
    return messages[-1]


def _join(a: str, b: str) -> str:
    return f"{a}\n{b}" if a and b else a or b


def _call(item: dict[str, Any], kind: str) -> ToolCall:
    arguments = item.get("arguments", item.get("input", item.get("action", "")))
    if not isinstance(arguments, str):
        arguments = json_text(arguments)
    name = string(item.get("name")) or kind
    if string(item.get("namespace")):
        name = f"{item['namespace']}.{name}"
    return ToolCall(ident(item.get("call_id")) or ident(item.get("id")), name, arguments, kind)


def _output_text(item: dict[str, Any]) -> str:
    output = item.get("output")
    if output is None and "tools" in item:  # tool_search_output lists the tools it found
        return json_text(item["tools"])
    if isinstance(output, (str, list)):
        return text_of(output, ("input_text", "output_text", "text")) if isinstance(output, list) else output
    return json_text(output) if output is not None else ""


def _tool(raw: dict[str, Any]) -> ToolDef:
    return ToolDef(string(raw.get("name")) or string(raw.get("type")), string(raw.get("description")), serialisable(raw.get("parameters")))


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        output_tokens=as_int(raw.get("output_tokens")),
        cache_read_tokens=as_int(obj(raw.get("input_tokens_details")).get("cached_tokens")),
        reasoning_tokens=as_int(obj(raw.get("output_tokens_details")).get("reasoning_tokens")),
    )


def _stop_reason(body: dict[str, Any]) -> str | None:
    status = body.get("status")
    details = body.get("incomplete_details")
    if status == "incomplete" and isinstance(details, dict) and string(details.get("reason")):
        return f"incomplete: {details['reason']}"
    return status if isinstance(status, str) else None


def _response(body: dict[str, Any], complete: bool, output_items: list[Any] | None = None) -> Response:
    output = body.get("output") or output_items or []
    messages = items_to_messages([i for i in items(output) if isinstance(i, dict)])
    message = next((m for m in messages if m.role == "assistant"), None)
    return Response(
        id=optional_string(body.get("id")),
        model=optional_string(body.get("model")),
        output=assistant_message(message.text, message.reasoning, message.tool_calls) if message else None,
        usage=_usage(body.get("usage")),
        stop_reason=_stop_reason(body),
        error=error_text(body["error"]) if body.get("error") else None,
        complete=complete,
    )


DELTA_EVENTS = {
    "response.output_text.delta": ("text", "message"),
    "response.function_call_arguments.delta": ("arguments", "function_call"),
    "response.custom_tool_call_input.delta": ("arguments", "custom_tool_call"),
    "response.reasoning_summary_text.delta": ("reasoning", "reasoning"),
    "response.reasoning_text.delta": ("reasoning", "reasoning"),
}


class _Stream(StreamAccumulator):
    TERMINAL = ("response.completed", "response.incomplete", "response.failed")

    def __init__(self) -> None:
        self.header: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.items: dict[int, dict[str, Any]] = {}
        # Deltas by (output index, where they go), joined once at the end: appending to a
        # string per delta is quadratic. An item's `.done` event replaces them.
        self.pieces: dict[tuple[int, str], list[str]] = {}
        self.error: str | None = None

    def event(self, event: Event) -> None:
        data = event_object(event)
        if data is None:
            return
        kind = string(data.get("type")) or event.event
        if kind in self.TERMINAL:
            self.final = obj(data.get("response"))
        elif kind in ("response.created", "response.in_progress"):
            self.header = obj(data.get("response")) or self.header
        elif kind in ("response.output_item.added", "response.output_item.done"):
            if isinstance(data.get("item"), dict):
                index = as_int(data.get("output_index"))
                index = len(self.items) if index is None else index
                self.items[index] = dict(data["item"])
                if kind == "response.output_item.done":
                    for where in ("text", "arguments", "reasoning"):
                        self.pieces.pop((index, where), None)
        elif kind in DELTA_EVENTS:
            where, default_type = DELTA_EVENTS[kind]
            index = as_int(data.get("output_index")) or 0
            self.items.setdefault(index, {"type": default_type})
            self.pieces.setdefault((index, where), []).append(string(data.get("delta")))
        elif kind == "error":
            # {"type": "error", "code": ..., "message": ...}: the code names the error, not the type.
            self.error = error_text(data.get("error") or {k: v for k, v in data.items() if k != "type"})

    def _apply_deltas(self) -> None:
        """Put the deltas of items that never got their `.done` event into the items."""
        for (index, where), pieces in self.pieces.items():
            item, text = self.items[index], "".join(pieces)
            if where == "arguments":
                key = "input" if item.get("type") == "custom_tool_call" else "arguments"
                item[key] = string(item.get(key)) + text
                continue
            if where == "text":
                item.setdefault("role", "assistant")
            key = "content" if where == "text" else "summary"
            parts = item[key] = [p for p in items(item.get(key)) if isinstance(p, dict)]
            if not parts:
                parts.append({"type": "output_text" if where == "text" else "summary_text", "text": ""})
            parts[-1]["text"] = string(parts[-1].get("text")) + text
        self.pieces.clear()

    @property
    def finished(self) -> bool:
        return self.final is not None

    def result(self) -> Response:
        self._apply_deltas()
        items = [self.items[i] for i in sorted(self.items)]
        response = _response(self.final or self.header, self.final is not None, items)
        response.error = response.error or self.error
        return response
