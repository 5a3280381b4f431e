"""What every wire-API codec provides, and helpers they share."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
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
            call.fields[key] = serialisable(body[key])


# Whatever a client sends must stay writable: orjson refuses integers beyond 64 bits and nesting
# deeper than 254 levels, which the standard parser (our fallback) accepts. A kept value sits a
# few levels down in a Call and in a trajectory, so it is clipped well below that.
MAX_KEPT_DEPTH = 64
CLIPPED = "<nested too deeply>"


def serialisable(value: Any, depth: int = 0) -> Any:
    """`value` if orjson can write it where we keep it; else a copy with big integers as text and
    anything nested deeper than MAX_KEPT_DEPTH replaced by CLIPPED."""
    if depth == 0 and (getattr(_chains, "body_fits", False) or _fits(value)):
        return value
    if depth >= MAX_KEPT_DEPTH:
        return CLIPPED
    if isinstance(value, dict):
        return {str(k): serialisable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [serialisable(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and as_int(value) is None:
        return str(value)
    return value


def _fits(value: Any) -> bool:
    """orjson writes `value` even MAX_KEPT_DEPTH levels down: one dump of it at the bottom of
    nested lists reaching orjson's nesting limit (254), cheaper than walking it in Python. The
    lists are built once per thread; only their innermost slot changes."""
    chain = getattr(_chains, "chain", None)
    if chain is None:
        innermost: list[Any] = [None]
        outermost = innermost
        for _ in range(254 - MAX_KEPT_DEPTH - 1):
            outermost = [outermost]
        chain = _chains.chain = (outermost, innermost)
    outermost, innermost = chain
    innermost[0] = value
    try:
        orjson.dumps(outermost)
    except TypeError:  # orjson.JSONEncodeError: too deep, an integer beyond 64 bits
        return False
    finally:
        innermost[0] = None  # hold no reference to the value
    return True


_chains = threading.local()


@contextmanager
def parsing(body: Any) -> Iterator[None]:
    """While a codec reads `body`: one check of the whole body instead of one per kept value
    (if the body fits MAX_KEPT_DEPTH levels down, so does every value inside it)."""
    _chains.body_fits = _fits(body)
    try:
        yield
    finally:
        _chains.body_fits = False


def json_text(value: Any) -> str:
    """A JSON value as compact JSON text (tool arguments and results that arrive as objects)."""
    return orjson.dumps(serialisable(value)).decode()


def string(value: Any) -> str:
    """A field that must be text: itself if it is a string, else empty."""
    return value if isinstance(value, str) else ""


def optional_string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def ident(value: Any) -> str:
    """An id field: a string as is, an integer as its digits, anything else empty."""
    if isinstance(value, str):
        return value
    return str(value) if as_int(value) is not None else ""


def obj(value: Any) -> dict[str, Any]:
    """A field that must be an object: itself, or empty when it is anything else."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    """A field that must be a list: itself, or empty when it is anything else."""
    return value if isinstance(value, list) else []


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
    """An integer field (token counts, indexes) that fits in 64 bits, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64:
        return value
    return None


def add_ints(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def error_text(error: Any) -> str:
    """A one-line description of a provider error object."""
    if isinstance(error, dict):
        kind = ident(error.get("type")) or ident(error.get("code")) or "error"
        message = string(error.get("message"))
        return f"{kind}: {message}" if message else kind
    return error if isinstance(error, str) else json_text(error)


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
