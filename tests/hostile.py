"""Hostile inputs for the property-based tests: valid seed traffic of each wire API, and
hypothesis strategies that mutate it (values of the wrong type, deep nesting, lone surrogates,
deleted fields, cut or flipped bytes, random chunking, wrong content types and encodings).

Profiles: `ci` (the default: a few seconds per test) and `thorough` (50 times the examples), chosen
with `HYPOTHESIS_PROFILE=thorough .venv-3.11/bin/python -m pytest tests/test_hostile_input.py`.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import payloads as P

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DEEP = "\x00deep:"  # a string value replaced by `n` nested arrays once serialised (json.dumps cannot nest that deep)

CHAT_REQUEST: dict[str, Any] = {
    "model": P.CHAT_MODEL,
    "stream": True,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Build it and read the logs."}]},
        P.CHAT_PARALLEL_MESSAGE,
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        {"role": "assistant", "function_call": {"name": "legacy", "arguments": "{}"}},
    ],
    "tools": P.CHAT_TOOLS,
    "metadata": {"user": "u1"},
    "stream_options": {"include_usage": True},
}
ANTHROPIC_REQUEST = P.claude_code_request([P.claude_user("Find the callers."), {"role": "assistant", "content": P.CLAUDE_PARALLEL_CONTENT}])
RESPONSES_REQUEST = P.codex_request(P.echo_items(P.RESPONSES_PARALLEL_OUTPUT))

GEMINI_PATH = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
GEMINI_REQUEST: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "You are an interactive CLI agent."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "List both dirs"}]},
        {"role": "model", "parts": [{"text": "Planning", "thought": True}, {"functionCall": {"name": "ls", "args": {"dir": "a"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "ls", "response": {"output": "a1 a2"}}}]},
    ],
    "tools": [{"functionDeclarations": [{"name": "ls", "description": "list", "parametersJsonSchema": {"type": "object"}}]}],
    "generationConfig": {"maxOutputTokens": 2048, "responseMimeType": "application/json"},
}
GEMINI_CHUNKS: list[dict[str, Any]] = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking ", "thought": True}]}}], "responseId": "r-1"},
    {
        "candidates": [
            {"content": {"role": "model", "parts": [{"functionCall": {"name": "ls", "args": {"dir": "b"}}}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 900, "candidatesTokenCount": 20},
        "modelVersion": "gemini-2.5-pro",
    },
]

# path -> (request body, JSON response body, SSE response bytes)
SEEDS: dict[str, tuple[dict[str, Any], Any, bytes]] = {
    P.CHAT_PATH: (
        CHAT_REQUEST,
        P.chat_completion(P.CHAT_PARALLEL_MESSAGE, finish_reason="tool_calls"),
        P.sse(P.chat_events(P.chat_completion(P.CHAT_PARALLEL_MESSAGE, finish_reason="tool_calls"))),
    ),
    P.ANTHROPIC_PATH: (
        ANTHROPIC_REQUEST,
        P.anthropic_message(P.CLAUDE_PARALLEL_CONTENT, stop_reason="tool_use"),
        P.sse(P.anthropic_events(P.anthropic_message(P.CLAUDE_PARALLEL_CONTENT, stop_reason="tool_use"))),
    ),
    P.RESPONSES_PATH: (
        RESPONSES_REQUEST,
        P.responses_body(P.RESPONSES_PARALLEL_OUTPUT),
        P.sse(P.responses_events(P.responses_body(P.RESPONSES_PARALLEL_OUTPUT))),
    ),
    GEMINI_PATH: (GEMINI_REQUEST, GEMINI_CHUNKS, P.sse((None, chunk) for chunk in GEMINI_CHUNKS)),
}
PATHS = sorted(SEEDS)

# --- values ------------------------------------------------------------------------------------

lone_surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
strings = st.one_of(st.text(max_size=20), lone_surrogates, st.just(""), st.text(min_size=1, max_size=3).map(lambda s: s * 3000))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64, max_value=2**70), st.floats(allow_nan=False), strings
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["type", "name", "text", "id", "role", "content", "x"]) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
deep_values = st.integers(min_value=200, max_value=5000).map(lambda n: f"{DEEP}{n}")
hostile_values = st.one_of(json_values, deep_values)


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indexes) into a JSON value, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, prefix + (index,))
    return found


def replaced(value: Any, path: tuple, new: Any, delete: bool = False) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        if delete and not rest:
            copy.pop(head, None)
        else:
            copy[head] = replaced(value[head], rest, new, delete)
        return copy
    copy = list(value)
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = replaced(value[head], rest, new, delete)
    return copy


@st.composite
def mutated_json(draw: st.DrawFn, seed: Any, max_mutations: int = 3) -> Any:
    """`seed` with a few subtrees replaced by hostile values or deleted."""
    value = seed
    for _ in range(draw(st.integers(1, max_mutations))):
        path = draw(st.sampled_from(paths_of(value)))
        if path and draw(st.integers(0, 4)) == 0:
            value = replaced(value, path, None, delete=True)
        else:
            value = replaced(value, path, draw(hostile_values))
    return value


def dumps(value: Any) -> bytes:
    """JSON text, with lone surrogates as escapes and DEEP markers expanded to nested arrays."""
    text = json.dumps(value, ensure_ascii=True)
    while DEEP.encode("unicode_escape").decode() in text:
        marker = DEEP.encode("unicode_escape").decode()
        start = text.index(marker) - 1  # the opening quote
        end = text.index('"', start + 1) + 1
        n = int(text[start + 1 + len(marker) : end - 1])
        text = text[:start] + "[" * n + "]" * n + text[end:]
    return text.encode()


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` cut, with bytes flipped, inserted (invalid UTF-8 among them) or dropped."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "drop", "cut"]))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\n\n", b"data: ", b"{", b'"']))
        elif op == "drop":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


def json_body(seed: Any) -> st.SearchStrategy[bytes]:
    """A hostile body derived from a JSON seed: mutated values, then maybe mutated bytes."""
    return mutated_json(seed).map(dumps).flatmap(lambda b: st.one_of(st.just(b), mutated_bytes(b)))


@st.composite
def sse_body(draw: st.DrawFn, seed: bytes) -> bytes:
    """A hostile event stream from a valid one: events with mutated data, then mutated bytes,
    sometimes one huge event."""
    lines = seed.split(b"\n")
    events = {i: orjson.loads(line[6:]) for i, line in enumerate(lines) if line.startswith(b"data: {")}
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.sampled_from(sorted(events)))
        event = events[i]
        lines[i] = b"data: " + dumps(draw(mutated_json(event, max_mutations=2)))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), b"data: " + b"x" * draw(st.sampled_from([10, 70_000, 2_000_000])))
    return draw(mutated_bytes(b"\n".join(lines))) if draw(st.booleans()) else b"\n".join(lines)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut into random consecutive chunks (joined back, they are `data`)."""
    if not data:
        return [data]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


content_types = st.sampled_from(
    ["application/json", "text/event-stream", "text/event-stream; charset=utf-8", "text/html", "", "application/octet-stream"]
)


@st.composite
def encoded(draw: st.DrawFn, data: bytes) -> tuple[bytes, str | None]:
    """`data` under a content-encoding: honestly compressed, corrupt, or lying about it."""
    encoding = draw(st.sampled_from([None, "identity", "gzip", "deflate", "br", "zstd", "bogus", "gzip, br"]))
    honest = draw(st.booleans())
    if not honest or encoding in (None, "identity", "bogus", "gzip, br"):
        return data, encoding
    if encoding == "gzip":
        compressor = zlib.compressobj(wbits=31)
        body = compressor.compress(data) + compressor.flush()
    elif encoding == "deflate":
        body = zlib.compress(data)
    elif encoding == "br":
        import brotli

        body = brotli.compress(data)
    else:
        body = _zstd_compress(data)
    return draw(st.one_of(st.just(body), mutated_bytes(body))), encoding


def _zstd_compress(data: bytes) -> bytes:
    try:
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found]

        return zstd.compress(data)
