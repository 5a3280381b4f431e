"""A local imitation of the OpenAI, Anthropic and Gemini LLM APIs, for demos and tests.

`DemoUpstream` serves, on 127.0.0.1, JSON or streamed (SSE) replies shaped exactly like the
real APIs': OpenAI Chat Completions (`/v1/chat/completions`), OpenAI Responses
(`/v1/responses`), Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`), the Gemini
API (`…/models/{model}:generateContent`, `:streamGenerateContent` as SSE with `?alt=sse` or else
as one JSON array written an element at a time, `:countTokens`; AI Studio or Vertex AI paths), plus
`HEAD /`, `GET /` and `GET /v1/models`. The `/v1` prefix is optional for the OpenAI paths.
`GET /v1/responses` with `Upgrade: websocket` is the Responses API over a WebSocket, as Codex
uses it with OpenAI's own provider: each `response.create` message gets the same events, one
JSON message each.
Every request is recorded in `DemoUpstream.requests`. Ids and token counts are derived from
the request body, and `created` timestamps are the server's start time, so the same request
always gets the same reply.

    python -m agent_lineage.demo.upstream --port 8765

Scripts
-------
What the "model" answers is written in the prompt itself:

    [[script: STEP ; STEP ; ...]]

    tool NAME {json object}          one tool call
    tools NAME {json} NAME {json}    parallel tool calls in one response
    say TEXT                         a final text answer
    think TEXT                       a reasoning / thinking block before the next step's output

TEXT runs to the next `;` or `]]`, or is a JSON string literal ("...") when it must hold those.
Tool arguments are JSON, so a child agent's script can be nested inside one, quotes escaped:

    [[script: tool bash {"command": "ls"} ;
              tool delegate {"task": "[[script: tool bash {\\"command\\": \\"wc -l README.md\\"} ; say 42]]"} ;
              say All done.]]

The script comes from the last fresh user message (a prompt, not tool results) that contains
one; `<system-reminder>` blocks are ignored. The step played is the number of assistant
replies that follow that message in the conversation (an assistant message, or a run of
consecutive Responses output items, is one reply), so each continuation that carries the tool
results gets the next step. When the steps run out the reply is "Done.". A second user turn
with its own script starts over at its first step; without any script the reply is
"Hello from the demo upstream.". Responses requests with `previous_response_id` are resolved
against the conversations this upstream has answered.

A tool argument may refer to what earlier tool calls of the same turn returned:

    "$outputs.KEY"                   (a whole JSON string value) becomes the list of the KEY
                                     values of every tool result of this turn that is a JSON object
    "$outputs.KEY[N]"                becomes the Nth (from 0) of them

so Codex can wait for the subagents it spawned, whose ids only its `spawn_agent` results know:

    [[script: tool tool_search {"query": "spawn agent"} ;
              tools spawn_agent {"message": "[[script: say one]]"} spawn_agent {"message": "[[script: say two]]"} ;
              tool wait_agent {"targets": ["$outputs.agent_id[0]"]} ;
              tool wait_agent {"targets": ["$outputs.agent_id[1]"]} ;
              say Both done.]]

(`wait_agent` returns when the first of its targets finishes: wait for each child in turn, or the
parent may finish, and `codex exec` exit, while a child still runs.)

Driving real coding agents
--------------------------
Scripts drive the real CLIs too (tests/test_agents.py): the upstream answers with the output
items those CLIs accept, chosen from the tools the request declares (Responses): a call of a
tool declared `{"type": "tool_search"}` is a `tool_search_call` item (Codex's deferred tool
discovery; its arguments are an object), a `custom` tool a `custom_tool_call` (its input text
is the script's `{"input": "..."}`), and a function declared inside a `namespace` (as Codex's
`tool_search_output` returns `spawn_agent` / `wait_agent` in `multi_agent_v1`) a `function_call`
carrying that `namespace`. Claude Code's tools need nothing special: `tool Bash {"command": ...}`,
`tool Read {"file_path": ...}`, `tool Agent {"description": ..., "prompt": "[[script: ...]]",
"subagent_type": "general-purpose"}` (a subagent's script is in its prompt, which is its first
user message; `tools Agent {...} Agent {...}` runs two in parallel).

Side requests are answered as the real APIs would, whatever script their prompt quotes:

- a request for structured output (Anthropic `output_config.format`, Responses `text.format`,
  Chat `response_format`, of type `json_schema`: Claude Code's and Codex's title requests) gets
  a JSON text matching the schema (its strings are the first words of the prompt's first line,
  without markup or script);
- an Anthropic text reply longer than the request's `max_tokens` (Claude Code's `max_tokens: 1`
  "test" quota probe) is cut to that many tokens with `stop_reason: "max_tokens"`;
- `HEAD /` and `GET /` answer 200, `GET /v1/models` lists the demo models, and
  `/v1/messages/count_tokens` counts.

Failure injection
-----------------
Controls are read from the last user-side message of the request (the latest prompt, or the
tool results that continue a turn), outside its script, so a child's controls nested in a
tool argument never act on the parent:

    [[status:503]]                   answer that HTTP status (4xx/5xx) with a provider-shaped error
    [[cut:N]]                        send N SSE events (non-streamed: N body bytes), then drop the
                                     connection without finishing the body
    [[delay:first=0.5,chunk=0.05]]   seconds before the first event / between events (either key
                                     may be left out); overrides the constructor's delays

Token usage: prompt tokens T = ceil(body bytes / 4); cached C = 0 on a conversation's first
request, else 3/4 of T rounded down to a multiple of 64. Anthropic splits T into
cache_read_input_tokens = C, cache_creation_input_tokens = (T - C) rounded down to 64, and
input_tokens = the rest. Output tokens = ceil(chars / 4) of text, tool arguments and thinking.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

DEFAULT_TEXT = "Hello from the demo upstream."
EXHAUSTED_TEXT = "Done."
DEFAULT_MODEL = "demo-model"
MODELS = ("demo-model", "demo-model-small")

CHAT = "openai-chat"
RESPONSES = "openai-responses"
MESSAGES = "anthropic-messages"
GEMINI = "gemini"

_LLM_PATHS = {
    "/v1/chat/completions": CHAT,
    "/chat/completions": CHAT,
    "/v1/responses": RESPONSES,
    "/responses": RESPONSES,
    "/v1/messages": MESSAGES,
}
# Gemini: AI Studio (/v1beta/models/M:method, /v1/models/M:method) and Vertex AI
# (/v1/projects/P/locations/L/publishers/google/models/M:method).
_GEMINI_PATH = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|countTokens)$")
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_PIECE = 12  # characters per streamed text or argument delta


# --- scripts -------------------------------------------------------------------------------


class ScriptError(ValueError):
    """A malformed `[[script: ...]]` or control marker; answered with HTTP 400."""


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    name: str
    arguments: str  # JSON object text, as a model would emit it


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted assistant reply: a text answer or tool calls, maybe after some thinking."""

    text: str = ""
    tool_calls: tuple[ScriptedCall, ...] = ()
    thinking: str = ""
    limited: bool = False  # the text was cut at the request's max_tokens


@dataclass(frozen=True, slots=True)
class Controls:
    status: int | None = None
    cut: int | None = None
    first_byte_delay: float | None = None
    chunk_delay: float | None = None


@dataclass(frozen=True, slots=True)
class Script:
    steps: list[Reply]
    start: int  # span of the marker in the text it was found in
    end: int


_SCRIPT_OPEN = "[[script:"
_WORD = re.compile(r"[a-z]+")
_TOOL_NAME = re.compile(r"[A-Za-z_][\w.:-]*")
_STATUS = re.compile(r"\[\[status:([45]\d\d)\]\]")
_CUT = re.compile(r"\[\[cut:(\d+)\]\]")
_DELAY = re.compile(r"\[\[delay:([^\]]*)\]\]")
_MARKUP = re.compile(r"<[^<>\n]{1,80}>")  # tags such as <session> around a quoted prompt
_SYSTEM_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)


def find_script(text: str) -> Script | None:
    """The first `[[script: ...]]` in text, parsed; None when there is none."""
    start = text.find(_SCRIPT_OPEN)
    if start < 0:
        return None
    reader = _ScriptReader(text, start + len(_SCRIPT_OPEN))
    steps = reader.read_steps()
    return Script(steps, start, reader.pos)


class _ScriptReader:
    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def read_steps(self) -> list[Reply]:
        steps: list[Reply] = []
        thinking = ""
        while True:
            word = self._expect(_WORD, "a step (tool, tools, say, think)")
            if word == "think":
                if thinking:
                    raise ScriptError("two think steps in a row")
                thinking = self._text()
            elif word == "say":
                steps.append(Reply(text=self._text(), thinking=thinking))
                thinking = ""
            elif word in ("tool", "tools"):
                calls = [self._call()]
                while word == "tools" and not self._at_separator():
                    calls.append(self._call())
                steps.append(Reply(tool_calls=tuple(calls), thinking=thinking))
                thinking = ""
            else:
                raise ScriptError(f"unknown step {word!r}")
            if self._take(";"):
                continue
            if self._take("]]"):
                break
            raise ScriptError(f"expected ';' or ']]' at offset {self.pos}")
        if thinking:
            raise ScriptError("think must be followed by a step")
        return steps

    def _skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _take(self, token: str) -> bool:
        self._skip_space()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def _at_separator(self) -> bool:
        self._skip_space()
        return self.text.startswith((";", "]]"), self.pos) or self.pos >= len(self.text)

    def _expect(self, pattern: re.Pattern[str], what: str) -> str:
        self._skip_space()
        if not (m := pattern.match(self.text, self.pos)):
            raise ScriptError(f"expected {what} at offset {self.pos}")
        self.pos = m.end()
        return m.group()

    def _json(self) -> Any:
        self._skip_space()
        try:
            value, self.pos = json.JSONDecoder().raw_decode(self.text, self.pos)
        except ValueError as e:
            raise ScriptError(f"bad JSON at offset {self.pos}: {e}") from None
        return value

    def _text(self) -> str:
        self._skip_space()
        if self.text.startswith('"', self.pos):
            value = self._json()
        else:
            ends = [i for i in (self.text.find(";", self.pos), self.text.find("]]", self.pos)) if i >= 0]
            if not ends:
                raise ScriptError("unterminated script")
            value, self.pos = self.text[self.pos : min(ends)].strip(), min(ends)
        if not isinstance(value, str) or not value:
            raise ScriptError(f"expected a text at offset {self.pos}")
        return value

    def _call(self) -> ScriptedCall:
        name = self._expect(_TOOL_NAME, "a tool name")
        arguments = self._json()
        if not isinstance(arguments, dict):
            raise ScriptError(f"arguments of {name} must be a JSON object")
        return ScriptedCall(name, json.dumps(arguments, separators=(",", ":")))


def find_controls(text: str) -> Controls:
    """The failure-injection markers in text (a user-side message with its script cut out)."""
    status = _STATUS.search(text)
    cut = _CUT.search(text)
    delays: dict[str, float] = {}
    if m := _DELAY.search(text):
        for item in filter(None, m.group(1).replace(" ", "").split(",")):
            key, _, value = item.partition("=")
            try:
                delays[key] = float(value)
            except ValueError:
                raise ScriptError(f"bad delay {item!r}") from None
        if unknown := delays.keys() - {"first", "chunk"}:
            raise ScriptError(f"unknown delay keys {sorted(unknown)}")
    return Controls(
        status=int(status.group(1)) if status else None,
        cut=int(cut.group(1)) if cut else None,
        first_byte_delay=delays.get("first"),
        chunk_delay=delays.get("chunk"),
    )


# --- reading conversations -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    """One conversation entry as the script player sees it."""

    side: str  # "user" (a prompt or tool results), "assistant", or "" (system, developer, ...)
    text: str = ""
    fresh: bool = False  # a user prompt, not tool results


def _text(content: Any) -> str:
    """The text of a message content in any of the three APIs' shapes (tool results included)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(part) for part in content)
    if isinstance(content, dict):
        return content["text"] if isinstance(content.get("text"), str) else _text(content.get("content"))
    return ""


def _user(content: Any, fresh: bool) -> _Entry:
    return _Entry("user", _SYSTEM_REMINDER.sub("", _text(content)), fresh)


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _chat_entries(request: dict) -> list[_Entry]:
    entries = []
    for message in _dicts(request.get("messages")):
        match message.get("role"):
            case "user":
                entries.append(_user(message.get("content"), fresh=True))
            case "tool" | "function":
                entries.append(_user(message.get("content"), fresh=False))
            case "assistant":
                entries.append(_Entry("assistant"))
            case _:
                entries.append(_Entry(""))
    return entries


def _responses_items(request: dict) -> list[dict]:
    """The request's input as a list of items (a string input is one user message)."""
    value = request.get("input")
    return [{"role": "user", "content": value}] if isinstance(value, str) else _dicts(value)


def _responses_entries(items: list[dict]) -> list[_Entry]:
    entries = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role == "user":
                entries.append(_user(item.get("content"), fresh=True))
            else:
                entries.append(_Entry("assistant" if role == "assistant" else ""))
        elif kind.endswith("_output"):  # function_call_output, custom_tool_call_output, ...
            entries.append(_user(item.get("output"), fresh=False))
        elif kind.endswith("_call") or kind == "reasoning":
            entries.append(_Entry("assistant"))
        else:
            entries.append(_Entry(""))
    return entries


def _messages_entries(request: dict) -> list[_Entry]:
    entries = []
    for message in _dicts(request.get("messages")):
        match message.get("role"):
            case "user":
                content = message.get("content")
                results = any(block.get("type") == "tool_result" for block in _dicts(content))
                entries.append(_user(content, fresh=not results))
            case "assistant":
                entries.append(_Entry("assistant"))
            case _:  # Claude Code may put role "system" entries mid-conversation
                entries.append(_Entry(""))
    return entries


def _gemini_entries(request: dict) -> list[_Entry]:
    """Gemini `contents`: a user content of function responses continues a turn (its text is
    the responses' JSON, for `$outputs`); `model` contents are the assistant's."""
    entries = []
    for content in _dicts(request.get("contents")):
        parts = _dicts(content.get("parts"))
        if content.get("role") == "model":
            entries.append(_Entry("assistant"))
            continue
        found = [p.get("functionResponse") or p.get("function_response") for p in parts]
        responses: list[dict] = [r for r in found if isinstance(r, dict)]
        if responses:
            outputs = [r.get("response") for r in responses]
            texts = [o["output"] if isinstance(o, dict) and isinstance(o.get("output"), str) else json.dumps(o) for o in outputs]
            entries += [_Entry("user", text, fresh=False) for text in texts]
        else:
            text = "\n".join(p["text"] for p in parts if isinstance(p.get("text"), str))
            entries.append(_user(text, fresh=True))
    return entries


def _plan_reply(entries: list[_Entry]) -> tuple[Reply, Controls]:
    """The scripted reply to a conversation, and the controls of its last user-side message."""
    reply = Reply(text=DEFAULT_TEXT)
    for i in reversed(range(len(entries))):
        entry = entries[i]
        if entry.side == "user" and entry.fresh and (script := find_script(entry.text)):
            step = _replies(entries[i + 1 :])
            reply = script.steps[step] if step < len(script.steps) else Reply(text=EXHAUSTED_TEXT)
            reply = _fill_outputs(reply, entries[i + 1 :])
            break
    last_user = next((e for e in reversed(entries) if e.side == "user"), None)
    if last_user is None:
        return reply, Controls()
    text = last_user.text
    if script := find_script(text):
        text = text[: script.start] + text[script.end :]
    return reply, find_controls(text)


_OUTPUTS_REF = re.compile(r"\$outputs\.([\w-]+)(?:\[(\d+)\])?")


def _fill_outputs(reply: Reply, turn: list[_Entry]) -> Reply:
    """Replace `"$outputs.KEY"` argument values by the KEY values of this turn's JSON tool results."""
    if not any("$outputs." in call.arguments for call in reply.tool_calls):
        return reply
    results = []
    for entry in turn:
        if entry.side == "user" and not entry.fresh:
            with contextlib.suppress(ValueError):
                results.append(json.loads(entry.text))

    def fill(value: Any) -> Any:
        if isinstance(value, str) and (m := _OUTPUTS_REF.fullmatch(value)):
            found = [r[m.group(1)] for r in results if isinstance(r, dict) and m.group(1) in r]
            if m.group(2) is None:
                return found
            if int(m.group(2)) >= len(found):
                raise ScriptError(f"{value}: only {len(found)} tool results of this turn have {m.group(1)!r}")
            return found[int(m.group(2))]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    calls = tuple(ScriptedCall(c.name, json.dumps(fill(json.loads(c.arguments)), separators=(",", ":"))) for c in reply.tool_calls)
    return Reply(text=reply.text, tool_calls=calls, thinking=reply.thinking)


def _schema_instance(schema: Any, words: str) -> Any:
    """A small value that satisfies a JSON schema (the subset structured-output requests use)."""
    if not isinstance(schema, dict):
        return words
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _schema_instance(schema[key][0], words)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        kind = kind.lower()  # Gemini's schemas spell types in capitals (OBJECT, STRING)
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        return {name: _schema_instance(sub, words) for name, sub in properties.items()}
    if kind == "array":
        return []
    return {"integer": 0, "number": 0, "boolean": False, "null": None}.get(str(kind), words)


def _output_schema(api: str, request: dict) -> Any:
    """The JSON schema a structured-output request asks the reply to follow, or None."""
    if api == MESSAGES:
        config = request.get("output_config")
        fmt = config.get("format") if isinstance(config, dict) else None
    elif api == RESPONSES:
        text = request.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    elif api == GEMINI:
        config = request.get("generationConfig") or request.get("generation_config") or {}
        if not isinstance(config, dict) or config.get("responseMimeType") != "application/json":
            return None
        return config.get("responseJsonSchema") or config.get("responseSchema") or {"type": "object"}
    else:
        fmt = request.get("response_format")
        if isinstance(fmt, dict) and isinstance(fmt.get("json_schema"), dict):
            fmt = {"type": fmt.get("type"), "schema": fmt["json_schema"].get("schema")}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("schema") or {"type": "object"}
    return None


def _side_reply(api: str, request: dict, entries: list[_Entry], reply: Reply) -> Reply:
    """What a side request gets instead of the script: structured output, or a token-limited text."""
    schema = _output_schema(api, request)
    if schema is not None:
        prompt = next((e.text for e in reversed(entries) if e.side == "user" and e.fresh and e.text.strip()), "")
        if script := find_script(prompt):
            prompt = prompt[: script.start] + prompt[script.end :]
        prompt = _MARKUP.sub(" ", prompt)
        line = next((line for line in prompt.splitlines() if line.strip()), "")
        words = " ".join(line.split()[:8]) or "Demo session"
        return Reply(text=json.dumps(_schema_instance(schema, words), separators=(",", ":")))
    limit = request.get("max_tokens")
    if api == MESSAGES and type(limit) is int and limit > 0 and not reply.tool_calls:
        if _tokens(len(reply.text)) + _tokens(len(reply.thinking)) > limit:
            return Reply(text=reply.text[: 4 * limit], limited=True)
    return reply


def _declared_tools(request: dict, items: list[dict]) -> dict[str, dict]:
    """Responses tools by name (by type when nameless), from `tools` and the `tool_search_output`
    items of the conversation, with the namespace each is declared in."""
    declared: dict[str, dict] = {}

    def walk(tools: Any, namespace: str | None) -> None:
        for tool in _dicts(tools):
            kind = tool.get("type")
            if kind == "namespace" and isinstance(tool.get("name"), str):
                walk(tool.get("tools"), tool["name"])
            elif isinstance(key := tool.get("name") or kind, str):
                declared[key] = {"type": kind, "namespace": namespace, "execution": tool.get("execution")}

    walk(request.get("tools"), None)
    for item in items:
        if item.get("type") == "tool_search_output":
            walk(item.get("tools"), None)
    return declared


def _replies(entries: list[_Entry]) -> int:
    """Assistant replies among entries: each run of assistant entries after a user entry is one."""
    count, previous = 0, "user"
    for entry in entries:
        if entry.side == "assistant" and previous != "assistant":
            count += 1
        if entry.side:
            previous = entry.side
    return count


# --- rendering replies -----------------------------------------------------------------------


def _tokens(size: int) -> int:
    return (size + 3) // 4


def _pieces(text: str) -> list[str]:
    return [text[i : i + _PIECE] for i in range(0, len(text), _PIECE)]


@dataclass(frozen=True, slots=True)
class _Answer:
    """A reply plus what every rendering of it needs: model, ids and token counts."""

    reply: Reply
    request: dict
    seed: str  # hex digest of the request body: every id derives from it
    prompt_tokens: int
    cached_tokens: int
    created: int = field(default_factory=lambda: int(time.time()))  # the server's start: replies repeat
    declared: dict[str, dict] = field(default_factory=dict)  # Responses: tool declarations by name

    @property
    def model(self) -> str:
        model = self.request.get("model")
        return model if isinstance(model, str) and model else DEFAULT_MODEL

    def id(self, prefix: str, *parts: object) -> str:
        digest = hashlib.sha256(":".join([self.seed, prefix, *map(str, parts)]).encode()).hexdigest()
        return prefix + digest[:24]

    @property
    def output_tokens(self) -> int:
        reply = self.reply
        arguments = sum(_tokens(len(c.arguments)) for c in reply.tool_calls)
        return max(1, _tokens(len(reply.text)) + arguments + self.reasoning_tokens)

    @property
    def reasoning_tokens(self) -> int:
        return _tokens(len(self.reply.thinking))


def _sse(data: dict | str, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


# OpenAI Chat Completions


def _chat_usage(a: _Answer) -> dict:
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.prompt_tokens + a.output_tokens,
        "prompt_tokens_details": {"cached_tokens": a.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": a.reasoning_tokens},
    }


def _chat_tool_calls(a: _Answer) -> list[dict]:
    return [
        {"id": a.id("call_", i), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for i, c in enumerate(a.reply.tool_calls)
    ]


def _chat_finish_reason(a: _Answer) -> str:
    return "tool_calls" if a.reply.tool_calls else "stop"


def _chat_completion(a: _Answer) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": a.reply.text or None, "refusal": None}
    if a.reply.thinking:  # the field vLLM and other OpenAI-compatible servers use
        message["reasoning_content"] = a.reply.thinking
    if a.reply.tool_calls:
        message["tool_calls"] = _chat_tool_calls(a)
    return {
        "id": a.id("chatcmpl-"),
        "object": "chat.completion",
        "created": a.created,
        "model": a.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _chat_finish_reason(a)}],
        "usage": _chat_usage(a),
        "system_fingerprint": "fp_demo",
    }


def _chat_events(a: _Answer) -> list[bytes]:
    options = a.request.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    chunk_id = a.id("chatcmpl-")

    def chunk(delta: dict | None, finish_reason: str | None = None, usage: dict | None = None) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        body: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": a.created,
            "model": a.model,
            "system_fingerprint": "fp_demo",
            "choices": choices,
        }
        if include_usage:  # OpenAI then sends "usage": null on every chunk but the last
            body["usage"] = usage
        return _sse(body)

    events = [chunk({"role": "assistant", "content": "" if a.reply.text else None, "refusal": None})]
    events += [chunk({"reasoning_content": p}) for p in _pieces(a.reply.thinking)]
    events += [chunk({"content": p}) for p in _pieces(a.reply.text)]
    for i, call in enumerate(_chat_tool_calls(a)):
        function = call["function"]
        head = {
            "index": i,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in _pieces(function["arguments"])]
    events.append(chunk({}, _chat_finish_reason(a)))
    if include_usage:
        events.append(chunk(None, usage=_chat_usage(a)))
    events.append(_sse("[DONE]"))
    return events


# OpenAI Responses


def _response_output(a: _Answer) -> list[dict]:
    reply, items = a.reply, list[dict[str, Any]]()
    if reply.thinking:
        items.append({"type": "reasoning", "id": a.id("rs_"), "summary": [{"type": "summary_text", "text": reply.thinking}]})
    if reply.text:
        content = [{"type": "output_text", "text": reply.text, "annotations": []}]
        items.append({"type": "message", "id": a.id("msg_"), "role": "assistant", "status": "completed", "content": content})
    for i, c in enumerate(reply.tool_calls):
        declared = a.declared.get(c.name, {})
        if declared.get("type") == "tool_search":  # Codex's deferred tool discovery
            items.append(
                {
                    "type": "tool_search_call",
                    "id": a.id("ts_", i),
                    "call_id": a.id("call_", i),
                    "execution": declared.get("execution") or "client",
                    "status": "completed",
                    "arguments": json.loads(c.arguments),
                }
            )
        elif declared.get("type") == "custom":  # a freeform tool: its input is text
            text = json.loads(c.arguments).get("input", "")
            items.append(
                {
                    "type": "custom_tool_call",
                    "id": a.id("ctc_", i),
                    "call_id": a.id("call_", i),
                    "name": c.name,
                    "input": text if isinstance(text, str) else json.dumps(text),
                    "status": "completed",
                }
            )
        else:
            item = {
                "type": "function_call",
                "id": a.id("fc_", i),
                "call_id": a.id("call_", i),
                "name": c.name,
                "arguments": c.arguments,
                "status": "completed",
            }
            if declared.get("namespace"):
                item["namespace"] = declared["namespace"]
            items.append(item)
    return items


def _response(a: _Answer, status: str, output: list[dict], usage: dict | None) -> dict:
    request = a.request
    return {
        "id": a.id("resp_"),
        "object": "response",
        "created_at": a.created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "model": a.model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "store": request.get("store", True),
        "metadata": {},
        "usage": usage,
    }


def _responses_usage(a: _Answer) -> dict:
    return {
        "input_tokens": a.prompt_tokens,
        "input_tokens_details": {"cached_tokens": a.cached_tokens},
        "output_tokens": a.output_tokens,
        "output_tokens_details": {"reasoning_tokens": a.reasoning_tokens},
        "total_tokens": a.prompt_tokens + a.output_tokens,
    }


def _response_object(a: _Answer) -> dict:
    return _response(a, "completed", _response_output(a), _responses_usage(a))


def _responses_events(a: _Answer) -> list[bytes]:
    return [_sse(event, event["type"]) for event in _responses_event_objects(a)]


def _responses_event_objects(a: _Answer) -> list[dict]:
    events: list[tuple[str, dict]] = [
        ("response.created", {"response": _response(a, "in_progress", [], None)}),
        ("response.in_progress", {"response": _response(a, "in_progress", [], None)}),
    ]
    for index, item in enumerate(_response_output(a)):
        at = {"item_id": item["id"], "output_index": index}
        match item["type"]:
            case "reasoning":
                text = item["summary"][0]["text"]
                part: dict[str, Any] = {"type": "summary_text", "text": ""}
                events.append(("response.output_item.added", {"output_index": index, "item": item | {"summary": []}}))
                events.append(("response.reasoning_summary_part.added", at | {"summary_index": 0, "part": part}))
                events += [("response.reasoning_summary_text.delta", at | {"summary_index": 0, "delta": p}) for p in _pieces(text)]
                events.append(("response.reasoning_summary_text.done", at | {"summary_index": 0, "text": text}))
                events.append(("response.reasoning_summary_part.done", at | {"summary_index": 0, "part": part | {"text": text}}))
            case "message":
                text = item["content"][0]["text"]
                part = {"type": "output_text", "text": "", "annotations": []}
                at |= {"content_index": 0}
                added = item | {"status": "in_progress", "content": []}
                events.append(("response.output_item.added", {"output_index": index, "item": added}))
                events.append(("response.content_part.added", at | {"part": part}))
                events += [("response.output_text.delta", at | {"delta": p, "logprobs": []}) for p in _pieces(text)]
                events.append(("response.output_text.done", at | {"text": text, "logprobs": []}))
                events.append(("response.content_part.done", at | {"part": part | {"text": text}}))
            case "function_call":
                added = item | {"arguments": "", "status": "in_progress"}
                events.append(("response.output_item.added", {"output_index": index, "item": added}))
                events += [("response.function_call_arguments.delta", at | {"delta": p}) for p in _pieces(item["arguments"])]
                events.append(("response.function_call_arguments.done", at | {"arguments": item["arguments"]}))
            case "custom_tool_call":
                added = item | {"input": "", "status": "in_progress"}
                events.append(("response.output_item.added", {"output_index": index, "item": added}))
                events += [("response.custom_tool_call_input.delta", at | {"delta": p}) for p in _pieces(item["input"])]
                events.append(("response.custom_tool_call_input.done", at | {"input": item["input"]}))
            case "tool_search_call":  # arrives whole: added, then done
                added = item | {"status": "in_progress"}
                events.append(("response.output_item.added", {"output_index": index, "item": added}))
        events.append(("response.output_item.done", {"output_index": index, "item": item}))
    events.append(("response.completed", {"response": _response_object(a)}))
    return [{"type": kind, "sequence_number": n} | data for n, (kind, data) in enumerate(events)]


# Anthropic Messages


def _anthropic_usage(a: _Answer) -> dict:
    created = (a.prompt_tokens - a.cached_tokens) // 64 * 64
    return {
        "input_tokens": a.prompt_tokens - a.cached_tokens - created,
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": a.cached_tokens,
        "output_tokens": a.output_tokens,
    }


def _signature(a: _Answer) -> str:
    return base64.b64encode(hashlib.sha256(f"{a.seed}:signature".encode()).digest()).decode()


def _message_content(a: _Answer) -> list[dict]:
    reply, blocks = a.reply, []
    if reply.thinking:
        blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": _signature(a)})
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    for i, c in enumerate(reply.tool_calls):
        blocks.append({"type": "tool_use", "id": a.id("toolu_", i), "name": c.name, "input": json.loads(c.arguments)})
    return blocks


def _message(a: _Answer, content: list[dict], stop_reason: str | None, usage: dict) -> dict:
    return {
        "id": a.id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _stop_reason(a: _Answer) -> str:
    return "tool_use" if a.reply.tool_calls else "max_tokens" if a.reply.limited else "end_turn"


def _message_object(a: _Answer) -> dict:
    return _message(a, _message_content(a), _stop_reason(a), _anthropic_usage(a))


def _messages_events(a: _Answer) -> list[bytes]:
    start_usage = _anthropic_usage(a) | {"output_tokens": 1}
    events: list[dict] = [
        {"type": "message_start", "message": _message(a, [], None, start_usage)},
        {"type": "ping"},
    ]
    for index, block in enumerate(_message_content(a)):
        deltas: list[dict]
        match block["type"]:
            case "thinking":
                start = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            case "text":
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
            case _:  # tool_use: the input arrives as fragments of its JSON text
                start = block | {"input": {}}
                arguments = json.dumps(block["input"], separators=(",", ":"))
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(arguments)]
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(a), "stop_sequence": None},
            "usage": {"output_tokens": a.output_tokens},
        }
    )
    events.append({"type": "message_stop"})
    return [_sse(e, e["type"]) for e in events]


# Gemini


def _gemini_usage(a: _Answer) -> dict:
    usage = {
        "promptTokenCount": a.prompt_tokens,
        "candidatesTokenCount": a.output_tokens - a.reasoning_tokens,
        "totalTokenCount": a.prompt_tokens + a.output_tokens,
    }
    if a.cached_tokens:
        usage["cachedContentTokenCount"] = a.cached_tokens
    if a.reasoning_tokens:
        usage["thoughtsTokenCount"] = a.reasoning_tokens
    return usage


def _gemini_parts(a: _Answer) -> list[dict]:
    parts: list[dict] = []
    if a.reply.thinking:
        parts.append({"text": a.reply.thinking, "thought": True})
    if a.reply.text:
        parts.append({"text": a.reply.text})
    parts += [{"functionCall": {"name": c.name, "args": json.loads(c.arguments)}} for c in a.reply.tool_calls]
    return parts


def _gemini_chunk(a: _Answer, parts: list[dict], finished: bool) -> dict:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finished:
        candidate["finishReason"] = "MAX_TOKENS" if a.reply.limited else "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": _gemini_usage(a),
        "modelVersion": a.model,
        "responseId": a.id("gr_"),
    }


def _gemini_response(a: _Answer) -> dict:
    return _gemini_chunk(a, _gemini_parts(a), finished=True)


def _gemini_chunks(a: _Answer) -> list[dict]:
    """The streamed answer: text in pieces, each function call whole, the last chunk finishing."""
    pieces: list[dict] = []
    for part in _gemini_parts(a):
        if "text" in part:
            pieces += [{**part, "text": p} for p in _pieces(part["text"])]
        else:
            pieces.append(part)
    chunks = [_gemini_chunk(a, [p], finished=False) for p in pieces]
    last = chunks.pop() if chunks else _gemini_chunk(a, [], finished=False)
    last["candidates"][0]["finishReason"] = "MAX_TOKENS" if a.reply.limited else "STOP"
    return chunks + [last]


def _gemini_events(a: _Answer) -> list[bytes]:
    return [f"data: {json.dumps(c, separators=(',', ':'))}\r\n\r\n".encode() for c in _gemini_chunks(a)]


def _gemini_array(a: _Answer) -> list[bytes]:
    """streamGenerateContent without `alt=sse`: one JSON array, written an element at a time."""
    chunks = [json.dumps(c, indent=2).encode() for c in _gemini_chunks(a)]
    return [(b"[" if i == 0 else b",\r\n") + c for i, c in enumerate(chunks)] + [b"]"]


_RENDER = {
    CHAT: (_chat_completion, _chat_events),
    RESPONSES: (_response_object, _responses_events),
    MESSAGES: (_message_object, _messages_events),
    GEMINI: (_gemini_response, _gemini_events),
}


def _error_body(api: str, status: int, message: str) -> dict:
    """An error in the provider's shape."""
    if api == MESSAGES:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if api == GEMINI:
        kind = _GEMINI_STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
        return {"error": {"code": status, "message": message, "status": kind}}
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _models(anthropic: bool) -> dict:
    if anthropic:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"} for m in MODELS]
        return {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "demo"} for m in MODELS]}


# --- HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str  # with query, as received
    headers: list[tuple[str, str]]
    body: bytes
    json: Any  # the parsed body, or None
    time: float  # when its headers were read (epoch seconds)

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # fifty clients connecting at once must not be reset

    def __init__(self, upstream: DemoUpstream, port: int) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    _seed: str  # hex digest of the request body, set per request
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streaming
    disable_nagle_algorithm = True  # each SSE event leaves at once, as its own small write
    server_version = "agent-lineage-demo/0.1"

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        received = time.time()
        body = self._read_body()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self._seed = hashlib.sha256(body).hexdigest()
        upstream = self.server.upstream
        upstream._record(RecordedRequest(self.command, self.path, self.headers.items(), body, parsed, received))

        path = urlsplit(self.path).path
        gemini = _GEMINI_PATH.search(path)
        api = MESSAGES if path.startswith("/v1/messages") else GEMINI if gemini else CHAT
        match (self.command, path):
            case ("GET", "/v1/responses" | "/responses") if "websocket" in self.headers.get("upgrade", "").lower():
                self._websocket()
            case ("GET" | "HEAD", "/"):
                self._send_json(200, {"status": "ok", "service": "agent-lineage demo upstream"})
            case ("GET", "/v1/models" | "/models"):
                self._send_json(200, _models(anthropic="anthropic-version" in self.headers))
            case ("POST", "/v1/messages/count_tokens") if isinstance(parsed, dict):
                self._send_json(200, {"input_tokens": _tokens(len(body))})
            case ("POST", "/v1/messages/count_tokens"):
                self._send_json(400, _error_body(api, 400, "malformed JSON body"))
            case ("POST", _) if path in _LLM_PATHS:
                self._answer(_LLM_PATHS[path], body, parsed)
            case ("POST", _) if gemini and gemini["method"] == "countTokens":
                self._send_json(200, {"totalTokens": _tokens(len(body))})
            case ("POST", _) if gemini and isinstance(parsed, dict):
                # The model is in the path; streaming is the method, SSE only with ?alt=sse.
                stream = None
                if gemini["method"] == "streamGenerateContent":
                    stream = "sse" if "alt=sse" in urlsplit(self.path).query else "array"
                self._answer(GEMINI, body, {**parsed, "model": gemini["model"]}, stream=stream)
            case ("POST", _) if gemini:
                self._send_json(400, _error_body(api, 400, "malformed JSON body: expected a JSON object"))
            case _:
                self._send_json(404, _error_body(api, 404, f"no route for {self.command} {path}"))

    def _websocket(self) -> None:
        """Codex's Responses-over-WebSocket: each `response.create` message is answered with the
        Responses events of the HTTP endpoint, one JSON text message each (RFC 6455, no extensions)."""
        key = self.headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        upstream = self.server.upstream
        try:
            while (message := _ws_read_message(self.rfile, self.wfile)) is not None:
                try:
                    request = json.loads(message)
                except ValueError:
                    continue
                if not isinstance(request, dict) or request.get("type") != "response.create":
                    continue
                fields = {k: v for k, v in request.items() if k != "type"}
                try:
                    events = upstream.websocket_events(fields)
                except ScriptError as e:
                    events = [{"type": "error", "code": "invalid_request", "message": f"bad demo script: {e}"}]
                for n, event in enumerate(events):
                    time.sleep(upstream.first_byte_delay if n == 0 else upstream.chunk_delay)
                    self.wfile.write(_ws_frame(0x1, json.dumps(event, separators=(",", ":")).encode()))
                    self.wfile.flush()
        except (ConnectionError, OSError):
            pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _answer(self, api: str, body: bytes, request: Any, stream: str | None = None) -> None:
        """Reply to one LLM request; `stream` is Gemini's ("sse", "array" or None), the other
        APIs say it in the body."""
        if not isinstance(request, dict):
            return self._send_json(400, _error_body(api, 400, "malformed JSON body: expected a JSON object"))
        upstream = self.server.upstream
        if api == RESPONSES:
            previous = request.get("previous_response_id")
            history = upstream._stored_response(previous) if previous else []
            if history is None:
                return self._send_json(400, _error_body(api, 400, f"previous response {previous!r} not found"))
            items = history + _responses_items(request)
            entries = _responses_entries(items)
        else:
            entries = {CHAT: _chat_entries, MESSAGES: _messages_entries, GEMINI: _gemini_entries}[api](request)
        try:
            reply, controls = _plan_reply(entries)
        except ScriptError as e:
            return self._send_json(400, _error_body(api, 400, f"bad demo script: {e}"))
        reply = _side_reply(api, request, entries, reply)
        if controls.status:
            return self._send_json(controls.status, _error_body(api, controls.status, f"injected HTTP {controls.status}"))

        prompt_tokens = _tokens(len(body))
        continuing = any(e.side == "assistant" for e in entries)
        cached = prompt_tokens * 3 // 4 // 64 * 64 if continuing else 0
        declared = _declared_tools(request, items) if api == RESPONSES else {}
        answer = _Answer(reply, request, self._seed, prompt_tokens, cached, upstream.started, declared)
        if api == RESPONSES:
            upstream._store_response(answer.id("resp_"), items + _response_output(answer))

        first_delay = upstream.first_byte_delay if controls.first_byte_delay is None else controls.first_byte_delay
        chunk_delay = upstream.chunk_delay if controls.chunk_delay is None else controls.chunk_delay
        render_json, render_events = _RENDER[api]
        if stream == "array":
            self._send_stream(_gemini_array(answer), first_delay, chunk_delay, controls.cut, "application/json")
        elif request.get("stream") is True or stream == "sse":
            self._send_stream(render_events(answer), first_delay, chunk_delay, controls.cut)
        else:
            time.sleep(first_delay)
            self._send_json(200, render_json(answer), cut=controls.cut)

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        request_id = "req_" + self._seed[:24]
        self.send_header("request-id", request_id)  # Anthropic's name
        self.send_header("x-request-id", request_id)  # OpenAI's name
        self.end_headers()

    def _send_json(self, status: int, payload: dict, cut: int | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self._start(status, {"content-type": "application/json", "content-length": str(len(data))})
        if self.command == "HEAD":
            return
        if cut is None:
            self.wfile.write(data)
            return
        self._abort(lambda: self.wfile.write(data[:cut]))

    def _send_stream(
        self,
        events: list[bytes],
        first_delay: float,
        chunk_delay: float,
        cut: int | None,
        content_type: str = "text/event-stream; charset=utf-8",
    ) -> None:
        self._start(
            200,
            {
                "content-type": content_type,
                "cache-control": "no-cache",
                "transfer-encoding": "chunked",
            },
        )

        def send(events: list[bytes]) -> None:
            for n, event in enumerate(events):
                time.sleep(first_delay if n == 0 else chunk_delay)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))  # one chunk per event

        if cut is not None:
            return self._abort(lambda: send(events[:cut]))
        try:
            send(events)
            self.wfile.write(b"0\r\n\r\n")
        except ConnectionError:  # the client went away mid-stream
            self.close_connection = True

    def _abort(self, write: Callable[[], object]) -> None:
        """Write part of a body, then drop the connection: the client sees a truncated response."""
        with contextlib.suppress(ConnectionError):
            write()
        self.close_connection = True


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


def _ws_read_message(rfile: Any, wfile: Any) -> bytes | None:
    """The next whole data message from the client (fragments joined, pings answered); None when
    the client closes or goes away."""
    parts: list[bytes] = []
    while True:
        head = rfile.read(2)
        if len(head) < 2:
            return None
        final, opcode, masked, n = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
        if n == 126:
            n = struct.unpack(">H", rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", rfile.read(8))[0]
        mask = rfile.read(4) if masked else b""
        data = rfile.read(n)
        if len(data) < n:
            return None
        if masked and n:
            key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            data = (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")
        if opcode == 0x8:  # close: answer it
            with contextlib.suppress(OSError):
                wfile.write(_ws_frame(0x8, data[:2]))
                wfile.flush()
            return None
        if opcode == 0x9:  # ping
            wfile.write(_ws_frame(0xA, data))
            wfile.flush()
            continue
        if opcode == 0xA:
            continue
        parts.append(data)
        if final:
            return b"".join(parts)


class DemoUpstream:
    """The demo LLM server: bound on construction, served from a background thread."""

    def __init__(self, port: int = 0, *, first_byte_delay: float = 0.0, chunk_delay: float = 0.0) -> None:
        self.first_byte_delay = first_byte_delay
        self.chunk_delay = chunk_delay
        self.started = int(time.time())  # every reply's `created`, so the same request gets the same bytes
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        # Responses conversations by response id (input and output items), for previous_response_id.
        self._responses: dict[str, list[dict]] = {}
        self._server = _Server(self, port)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The server root, without `/v1` (OpenAI SDKs want `base_url + "/v1"`, Anthropic's not)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._responses.clear()

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait
            name=f"demo-upstream:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def websocket_events(self, request: dict) -> list[dict]:
        """The Responses events answering one `response.create` of Codex's WebSocket mode (the
        message's request fields), resolving `previous_response_id` like the HTTP endpoint."""
        body = json.dumps(request, sort_keys=True).encode()
        previous = request.get("previous_response_id")
        history = self._stored_response(previous) if previous else []
        if history is None:
            return [{"type": "error", "code": "previous_response_not_found", "message": f"{previous!r} not found"}]
        items = history + _responses_items(request)
        entries = _responses_entries(items)
        reply, _ = _plan_reply(entries)
        reply = _side_reply(RESPONSES, request, entries, reply)
        if request.get("generate") is False:  # Codex warms the cache: a response with no output
            reply = Reply()
        prompt_tokens = _tokens(len(body))
        cached = prompt_tokens * 3 // 4 // 64 * 64 if any(e.side == "assistant" for e in entries) else 0
        declared = _declared_tools(request, items)
        answer = _Answer(reply, request, hashlib.sha256(body).hexdigest(), prompt_tokens, cached, self.started, declared)
        self._store_response(answer.id("resp_"), items + _response_output(answer))
        return _responses_event_objects(answer)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _store_response(self, response_id: str, items: list[dict]) -> None:
        with self._lock:
            self._responses[response_id] = items

    def _stored_response(self, response_id: str) -> list[dict] | None:
        with self._lock:
            return self._responses.get(response_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the agent-lineage demo LLM upstream on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    parser.add_argument("--first-byte-delay", type=float, default=0.0, help="seconds before the first SSE event")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between SSE events")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with DemoUpstream(args.port, first_byte_delay=args.first_byte_delay, chunk_delay=args.chunk_delay) as upstream:
        print(f"demo upstream listening on {upstream.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
