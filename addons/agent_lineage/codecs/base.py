"""What every wire-API codec provides, and helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import orjson

from ..model import Call, Message, Response, ToolCall, ToolResult
from ..sse import Event


class MalformedBody(ValueError):
    """A body that claims to be this API but does not have its shape."""


class StreamAccumulator(ABC):
    """Rebuilds a Response from SSE events, tolerating a stream cut at any point. `result()` may
    be called again after more events (or none)."""

    @abstractmethod
    def event(self, event: Event) -> None: ...

    @abstractmethod
    def result(self) -> Response: ...

    @property
    @abstractmethod
    def finished(self) -> bool:
        """The terminal event has arrived: the client has the whole answer."""


class Codec(ABC):
    api: ClassVar[str]

    @abstractmethod
    def matches(self, path: str) -> bool:
        """Whether a request path (no query string) belongs to this API."""

    @abstractmethod
    def parse_request(self, body: dict[str, Any], call: Call) -> None:
        """Fill the request half of `call` from a decoded JSON body; MalformedBody if it is not this API."""

    @abstractmethod
    def parse_response(self, body: Any) -> Response:
        """Read a whole (non-streamed) JSON response body."""

    @abstractmethod
    def stream_accumulator(self) -> StreamAccumulator: ...


def event_object(event: Event) -> dict[str, Any] | None:
    """An SSE event's data as a JSON object; None for anything else (keep-alives, garbage)."""
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def keep_fields(body: dict[str, Any], call: Call, keys: tuple[str, ...]) -> None:
    """Copy the body fields the scope rules read (ids, limits, output format) into `call.fields`."""
    for key in keys:
        if key in body:
            call.fields[key] = body[key]


def response_object(body: Any, success_key: str) -> tuple[dict[str, Any], Response | None]:
    """A JSON response body as an object, and the error Response when it is an error body
    (an `error` without the API's `success_key`)."""
    if not isinstance(body, dict):
        raise MalformedBody("response is not a JSON object")
    if "error" in body and success_key not in body:
        return body, Response(error=error_text(body["error"]), complete=True)
    return body, None


def text_of(content: Any, text_types: tuple[str, ...] = ("text", "input_text", "output_text")) -> str:
    """The text of a content field that is a string or a list of typed parts, parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                if part.get("type") in text_types and isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    parts.append(part["refusal"])
        return "\n".join(parts)
    return ""


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def add_ints(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def error_text(error: Any) -> str:
    """A one-line description of a provider error object."""
    if isinstance(error, dict):
        kind = error.get("type") or error.get("code") or "error"
        message = error.get("message") or ""
        return f"{kind}: {message}" if message else str(kind)
    return str(error)


def require_list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list):
        raise MalformedBody(f"`{key}` must be a list, got {type(value).__name__}")
    return value


def assistant_message(
    text: str, reasoning: str, tool_calls: list[ToolCall], tool_results: list[ToolResult] | None = None
) -> Message | None:
    """The model's output as a Message; `tool_results` are server-side tool results inside it (Anthropic)."""
    if not (text or reasoning or tool_calls or tool_results):
        return None
    return Message("assistant", text=text, reasoning=reasoning, tool_calls=tool_calls, tool_results=tool_results or [])
