"""Provider-neutral records of LLM traffic: what the codecs produce and the core consumes.

Plain dataclasses, no mitmproxy: the live addon and the offline reader both build them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

# Header values and query parameters that must never be kept (and so never reach disk).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie", "x-goog-api-key"})
SECRET_QUERY_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "access_token", "token"})
REDACTED = "<redacted>"


def endpoint(path: str) -> str:
    """A request path without its query string and trailing slash: what an API route is matched on."""
    return path.split("?", 1)[0].rstrip("/")


@dataclass(slots=True)
class Exchange:
    """One HTTP request/response pair as plain data (a live or a saved flow)."""

    id: str
    method: str
    path: str  # path with query, as sent
    request_headers: dict[str, str]  # lower-cased names; secret values removed
    request_body: bytes | None
    t_request: float  # request start (epoch seconds)
    client: str = ""  # who sent it: peer address host (no port) + user agent
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes | None = None  # as on the wire (may be compressed)
    t_first_byte: float | None = None
    t_end: float | None = None
    error: str | None = None


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = ""  # the provider's JSON text (Anthropic input is serialised)
    kind: str = "function"  # function | custom | tool_search | server

    def parsed_arguments(self) -> dict[str, Any]:
        """Arguments as a JSON object; `{}` when empty, and `{"input": text}` when not an object."""
        if not self.arguments:
            return {}
        try:
            value = orjson.loads(self.arguments)
        except orjson.JSONDecodeError:
            return {"input": self.arguments}
        return value if isinstance(value, dict) else {"input": value}


@dataclass(slots=True)
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False


@dataclass(slots=True)
class Message:
    """One conversation entry. Consecutive provider items of one assistant output are one Message."""

    role: str  # system | developer | user | assistant | tool
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)

    def fingerprint(self) -> bytes:
        """Stable digest of what identifies this entry when a client sends it back.

        Reasoning is left out: clients drop or encrypt it when they resend history.
        """
        h = hashlib.blake2b(digest_size=16)
        h.update(self.role.encode())
        h.update(b"\0")
        h.update(self.text.encode("utf-8", "surrogatepass"))
        for c in self.tool_calls:
            h.update(b"\1" + c.id.encode() + b"\0" + c.name.encode())
        for r in self.tool_results:
            h.update(b"\2" + r.call_id.encode() + b"\0" + r.content.encode("utf-8", "surrogatepass"))
        return h.digest()


@dataclass(slots=True)
class ToolDef:
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class Usage:
    input_tokens: int | None = None  # all input tokens, cached included
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(slots=True)
class Response:
    """What a codec reads from a response body (JSON or reassembled SSE)."""

    id: str | None = None
    model: str | None = None
    output: Message | None = None
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    error: str | None = None  # error object or failure event in the body
    complete: bool = False  # the body reached its terminal event / parsed whole


@dataclass(slots=True, kw_only=True)
class Scope:
    """Where one call belongs. Ids are already safe for headers and file names."""

    session_id: str  # the root session (one trajectory)
    agent_id: str  # the agent scope that made the request: x-dynamo-session-id
    parent_id: str | None = None  # the immediately enclosing agent: x-dynamo-parent-session-id
    depth: int = 0  # 0 for the root agent
    turn: int = 0  # 1-based user turn of the root session (0: before its first turn)
    new_turn: bool = False
    side: str | None = None  # side request kind; side requests are not agent steps
    client_name: str | None = None  # harness client (claude-code, codex, ...) if recognised
    delegated_by: str | None = None  # the parent's tool call that started this agent (first call only)
    delegations: dict[str, str] = field(default_factory=dict)  # tool call id -> child agent learnt now
    evidence: dict[str, str] = field(default_factory=dict)
    # A side request that names no session (an id-less quota probe): a session start of its host
    # claims it; until then its ids are placeholders and nothing is stamped.
    pending: bool = False


@dataclass(slots=True)
class Call:
    """One LLM request and, once it ends, its response. Built by a codec, scoped by the tracker."""

    exchange_id: str
    api: str  # openai-chat | openai-responses | anthropic-messages | gemini
    path: str
    client: str
    headers: dict[str, str]
    t_start: float
    model: str | None = None
    stream: bool = False
    system: str = ""
    messages: list[Message] = field(default_factory=list)
    tools: list[ToolDef] = field(default_factory=list)
    # Request body fields the scope rules read (metadata, prompt_cache_key, max_tokens, ...).
    fields: dict[str, Any] = field(default_factory=dict)
    side: str | None = None  # why this is a side request (token count, title, probe), if it is one
    # Response side, filled when the exchange ends.
    status: int | None = None
    response: Response = field(default_factory=Response)
    error: str | None = None  # transport or HTTP error
    t_first_byte: float | None = None
    t_end: float | None = None
    # Filled by the scope tracker.
    new_messages: list[Message] = field(default_factory=list)
    scope: Scope | None = None
