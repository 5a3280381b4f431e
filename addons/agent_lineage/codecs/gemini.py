"""Google Gemini API: generateContent, streamGenerateContent and countTokens.

Paths (the model is in the path, not the body), on any host:
- Google AI Studio: `/v1beta/models/{model}:generateContent`, `/v1/models/{model}:...`
- Vertex AI: `/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:...`
`streamGenerateContent?alt=sse` streams server-sent events, one GenerateContentResponse per
event; without `alt=sse` the stream is one JSON array of those responses (read whole at its end).
The API key travels as the `x-goog-api-key` header or the `key=` query parameter: both are
secrets (model.py), never kept.

Quirks handled here:
- Field names may be camelCase or snake_case (the REST API accepts both); camelCase wins.
- `systemInstruction` is a Content (or a bare string); the conversation is `contents`, with
  roles `user` and `model` (`function` in old clients, for function responses).
- A part with `thought: true` is thinking text; `thoughtSignature` parts carry nothing readable.
- Usage: `promptTokenCount` includes `cachedContentTokenCount`; `candidatesTokenCount` leaves out
  `thoughtsTokenCount`, so the output is their sum.

Call ids. The model's function calls carry no ids, and a client may invent its own when it
sends them back (Gemini CLI writes `{name}_{timestamp}_{n}` into the history): so every call's id
is derived from what the client resends unchanged, `gemini-` + a digest of its name, its
arguments (canonical JSON) and how many calls of the same name come before it in the same model
message; an `id` in the body is never used as the call's id. A function response answers a call
of the nearest earlier model message that has calls: the one whose body `id` it repeats, else,
by name and order, the k-th response named N answers that message's k-th call named N. The
answer and the request that resends it so get the same ids, and each call pairs with its
result across requests and in the trajectory.
"""

from __future__ import annotations

import hashlib
import re
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
    event_object,
    ident,
    items,
    json_text,
    keep_fields,
    optional_string,
    require_list,
    serialisable,
    string,
)

_PATH = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|countTokens)$")
ROLES = {"user": "user", "model": "assistant", "function": "user", "tool": "user", "system": "system"}


class Gemini(Codec):
    api = "gemini"

    def matches(self, path: str) -> bool:
        return _PATH.search(path) is not None

    def parse_request(self, body: dict[str, Any], call: Call) -> None:
        match = _PATH.search(endpoint(call.path))
        method = match.group("method") if match else "generateContent"
        call.model = match.group("model") if match else None
        call.stream = method == "streamGenerateContent"
        if method == "countTokens":
            call.side = "count-tokens"
            # countTokens takes `contents`, or a whole `generateContentRequest`.
            inner = _get(body, "generateContentRequest")
            if isinstance(inner, dict):
                body = inner
            elif "contents" not in body:
                body = {**body, "contents": []}
        if isinstance(_get(body, "model"), str):  # countTokens' inner request names the model
            call.model = _get(body, "model").rsplit("/", 1)[-1]
        call.system = _content_text(_get(body, "systemInstruction"))
        call.messages = contents_messages(require_list(body, "contents"))
        call.tools = [
            ToolDef(
                string(d.get("name")),
                string(d.get("description")),
                serialisable(_get(d, "parametersJsonSchema") or _get(d, "parameters")),
            )
            for tool in items(_get(body, "tools"))
            if isinstance(tool, dict)
            for d in items(_get(tool, "functionDeclarations"))
            if isinstance(d, dict)
        ]
        config = _get(body, "generationConfig")
        if isinstance(config, dict):
            # The scope rules read the shared names: a token limit and structured output.
            if (limit := as_int(_get(config, "maxOutputTokens"))) is not None:
                call.fields["max_tokens"] = limit
            schema = _get(config, "responseJsonSchema") or _get(config, "responseSchema")
            if schema is not None or _get(config, "responseMimeType") == "application/json":
                call.fields["response_format"] = {"type": "json_schema", "schema": serialisable(schema)}
        keep_fields(body, call, ("generationConfig", "toolConfig", "cachedContent", "labels"))

    def parse_response(self, body: Any) -> Response:
        # A non-SSE stream is a JSON array of chunks: fold them as the event stream would be.
        chunks = body if isinstance(body, list) else [body]
        if not chunks or not all(isinstance(c, dict) for c in chunks):
            raise MalformedBody("response is not a JSON object or an array of them")
        if len(chunks) == 1 and "totalTokens" in chunks[0] and "candidates" not in chunks[0]:  # countTokens
            return Response(usage=Usage(input_tokens=as_int(chunks[0]["totalTokens"])), complete=True)
        stream = _Stream()
        for chunk in chunks:
            stream.chunk(chunk)
        response = stream.result()
        if not isinstance(body, list):
            response.complete = True
        return response

    def stream_accumulator(self) -> StreamAccumulator:
        return _Stream()


def _get(raw: dict[str, Any], camel: str) -> Any:
    """A field by its camelCase name, or its snake_case spelling."""
    if camel in raw:
        return raw[camel]
    return raw.get(re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower())


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = content.get("parts")
    if not isinstance(content, list):
        return ""
    return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought"))


def call_id(name: str, args: Any, ordinal: int) -> str:
    """The id of a function call that has none: stable across the request that resends it."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(name.encode())
    digest.update(b"\0" + orjson.dumps(serialisable(args), option=orjson.OPT_SORT_KEYS) + b"\0" + str(ordinal).encode())
    return "gemini-" + digest.hexdigest()


def contents_messages(contents: list[Any]) -> list[Message]:
    """A `contents` list as Messages, function responses paired with the calls they answer."""
    messages: list[Message] = []
    # The calls of the nearest earlier model message that has any, and their ids by body `id`.
    open_calls: list[ToolCall] = []
    given: dict[str, str] = {}
    for raw in contents:
        if not isinstance(raw, dict):
            raise MalformedBody("a content is not an object")
        message, ids = _message(raw, open_calls, given)
        if message.tool_calls:
            open_calls, given = message.tool_calls, ids
        messages.append(message)
    return messages


def _message(raw: dict[str, Any], open_calls: list[ToolCall], given: dict[str, str]) -> tuple[Message, dict[str, str]]:
    """One content as a Message, and its calls' ids by the `id` the client gave them."""
    role = ROLES.get(string(raw.get("role")) or "user", "user")
    parts = raw.get("parts")
    if isinstance(parts, dict):
        parts = [parts]
    if not isinstance(parts, list):
        raise MalformedBody("a content has no parts list")
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    results: list[ToolResult] = []
    answered: dict[str, int] = {}  # function name -> responses to it so far in this message
    ids: dict[str, str] = {}
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            (reasoning if part.get("thought") is True else texts).append(part["text"])
        elif isinstance(function_call := _get(part, "functionCall"), dict):
            calls.append(_tool_call(function_call, calls))
            if isinstance(function_call.get("id"), str):
                ids[function_call["id"]] = calls[-1].id
        elif isinstance(function_response := _get(part, "functionResponse"), dict):
            results.append(_tool_result(function_response, open_calls, given, answered))
        elif isinstance(_get(part, "inlineData"), dict) or isinstance(_get(part, "fileData"), dict):
            texts.append("[file]")
        elif isinstance(code := _get(part, "executableCode"), dict):
            texts.append(string(code.get("code")))
        elif isinstance(outcome := _get(part, "codeExecutionResult"), dict):
            texts.append(string(outcome.get("output")))
    return Message(role, "\n".join(texts), "\n".join(reasoning), calls, results), ids


def _tool_call(raw: dict[str, Any], earlier: list[ToolCall]) -> ToolCall:
    name = string(raw.get("name"))
    args = raw.get("args") or {}
    ordinal = sum(1 for c in earlier if c.name == name)
    return ToolCall(call_id(name, args, ordinal), name, json_text(args))


def _tool_result(raw: dict[str, Any], open_calls: list[ToolCall], given: dict[str, str], answered: dict[str, int]) -> ToolResult:
    name = string(raw.get("name"))
    if isinstance(raw.get("id"), str) and raw["id"] in given:
        identifier = given[raw["id"]]
    else:
        ordinal = answered.get(name, 0)
        answered[name] = ordinal + 1
        candidates = [c for c in open_calls if c.name == name]
        identifier = candidates[ordinal].id if ordinal < len(candidates) else f"gemini-unmatched-{name}-{ordinal}"
    response = raw.get("response")
    is_error = isinstance(response, dict) and "error" in response and "output" not in response
    if isinstance(response, dict) and set(response) in ({"output"}, {"error"}) and isinstance(next(iter(response.values())), str):
        content = next(iter(response.values()))  # the common {"output": text} wrapper
    else:
        content = json_text(response) if response is not None else ""
    return ToolResult(identifier, content, is_error)


def _usage(raw: Any, usage: Usage) -> Usage:
    if not isinstance(raw, dict):
        return usage
    prompt = as_int(_get(raw, "promptTokenCount"))
    tool_prompt = as_int(_get(raw, "toolUsePromptTokenCount"))
    candidates = as_int(_get(raw, "candidatesTokenCount"))
    thoughts = as_int(_get(raw, "thoughtsTokenCount"))
    cached = as_int(_get(raw, "cachedContentTokenCount"))
    if prompt is not None or tool_prompt is not None:
        usage.input_tokens = add_ints(prompt, tool_prompt)
    if candidates is not None or thoughts is not None:
        usage.output_tokens = add_ints(candidates, thoughts)
    if thoughts is not None:
        usage.reasoning_tokens = thoughts
    if cached is not None:
        usage.cache_read_tokens = cached
    elif prompt is not None:  # proto3 JSON leaves out zero counts
        usage.cache_read_tokens = usage.cache_read_tokens or 0
    return usage


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        kind = ident(error.get("status")) or ident(error.get("code")) or "error"
        message = string(error.get("message"))
        return f"{kind}: {message}" if message else kind
    return error if isinstance(error, str) else json_text(error)


class _Stream(StreamAccumulator):
    """Folds GenerateContentResponse chunks: text and thinking arrive in pieces, function calls
    whole, usage is restated by later chunks, and a `finishReason` ends the answer."""

    def __init__(self) -> None:
        self.response = Response()
        self.parts: list[dict[str, Any]] = []

    def event(self, event: Event) -> None:
        data = event_object(event)
        if data is not None:
            self.chunk(data)

    def chunk(self, data: dict[str, Any]) -> None:
        if "error" in data and "candidates" not in data:
            self.response.error = _error_text(data["error"])
            self.response.complete = True
            return
        self.response.id = optional_string(_get(data, "responseId")) or self.response.id
        self.response.model = optional_string(_get(data, "modelVersion")) or self.response.model
        self.response.usage = _usage(_get(data, "usageMetadata"), self.response.usage)
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            feedback = _get(data, "promptFeedback")
            if isinstance(feedback, dict) and ident(_get(feedback, "blockReason")):
                self.response.stop_reason = ident(_get(feedback, "blockReason"))
                self.response.complete = True
            return
        candidate = candidates[0]  # clients ask for one candidate
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict):
                self.parts.append(part)
        if reason := ident(_get(candidate, "finishReason")):
            self.response.stop_reason = reason
            self.response.complete = True

    @property
    def finished(self) -> bool:
        return self.response.complete

    def result(self) -> Response:
        message, _ = _message({"role": "model", "parts": _merged(self.parts)}, [], {})
        self.response.output = assistant_message(message.text, message.reasoning, message.tool_calls)
        return self.response


def _merged(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive text pieces of one kind (thought or not) joined into one part, so a streamed
    answer reads as the whole one (whose text the client resends as one part)."""
    merged: list[dict[str, Any]] = []
    for part in parts:
        text = part.get("text")
        if (
            isinstance(text, str)
            and merged
            and isinstance(merged[-1].get("text"), str)
            and bool(merged[-1].get("thought")) == bool(part.get("thought"))
        ):
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + text}
        elif isinstance(text, str):
            merged.append(dict(part))
        elif set(part) != {"thoughtSignature"} and set(part) != {"thought_signature"}:
            merged.append(part)
    return merged
