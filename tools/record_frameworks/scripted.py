"""A scripted OpenAI-compatible server on 127.0.0.1 (Chat Completions, Responses), for recording frameworks.

Each recording app passes a `respond(chat) -> Reply` function that decides, from the request's
content alone (which agent's system prompt, which tool results are already there), what the
"model" answers: the same request always gets the same answer, so a recording can be re-made.
Ids are unique per response (a counter) and sent back in an `x-request-id` header, as OpenAI
does: the truth rows name the response they got, so flows and rows pair exactly.
Replies are JSON or, when the request asks `stream: true`, server-sent events shaped like
OpenAI's (text deltas, tool-call deltas, a usage chunk when `stream_options.include_usage`).
Responses requests are read as the same Chat for the script; a `previous_response_id` continues
the conversation this server stored for that response (an unknown one is a 400, as OpenAI's).

Standard library only: it runs inside each framework's throwaway venv.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


def say(text: str) -> Reply:
    return Reply(text=text)


def call(name: str, **arguments: Any) -> Reply:
    return Reply(tool_calls=(ToolCall(name, arguments),))


def calls(*pairs: tuple[str, dict[str, Any]]) -> Reply:
    return Reply(tool_calls=tuple(ToolCall(name, arguments) for name, arguments in pairs))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


@dataclass
class Chat:
    """The parts of a Chat Completions request a script looks at."""

    body: dict[str, Any]
    system: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, body: dict[str, Any]) -> Chat:
        messages = body.get("messages") or []
        system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        return cls(body, system, [m for m in messages if m.get("role") not in ("system", "developer")])

    @property
    def tools(self) -> list[str]:
        return [t.get("function", {}).get("name", "") for t in self.body.get("tools") or []]

    @property
    def user_texts(self) -> list[str]:
        return [_text(m.get("content")) for m in self.messages if m.get("role") == "user"]

    @property
    def last_user(self) -> str:
        texts = self.user_texts
        return texts[-1] if texts else ""

    @property
    def tool_results(self) -> list[str]:
        return [_text(m.get("content")) for m in self.messages if m.get("role") == "tool"]

    def tool_results_since_last_user(self) -> list[str]:
        found: list[str] = []
        for m in self.messages:
            if m.get("role") == "user":
                found = []
            elif m.get("role") == "tool":
                found.append(_text(m.get("content")))
        return found

    def assistant_replies_since_last_user(self) -> int:
        count = 0
        for m in self.messages:
            if m.get("role") == "user":
                count = 0
            elif m.get("role") == "assistant":
                count += 1
        return count

    def everything(self) -> str:
        return self.system + "\n" + "\n".join(_text(m.get("content")) for m in self.messages)


Respond = Callable[[Chat], Reply]


def _completion(reply: Reply, model: str, rid: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{rid[:8]}_{i}", "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for i, c in enumerate(reply.tool_calls)
        ]
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": 1764806400,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": _usage(reply),
    }


def _usage(reply: Reply) -> dict[str, int]:
    out = max(1, len(reply.text.split()) + 8 * len(reply.tool_calls))
    return {"prompt_tokens": 100, "completion_tokens": out, "total_tokens": 100 + out}


def _chunks(reply: Reply, model: str, rid: str, usage: bool) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion.chunk",
            "created": 1764806400,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    words = reply.text.split(" ") if reply.text else []
    for i, word in enumerate(words):
        out.append(chunk({"content": word if i == 0 else " " + word}))
    for i, c in enumerate(reply.tool_calls):
        arguments = json.dumps(c.arguments)
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {"index": i, "id": f"call_{rid[:8]}_{i}", "type": "function", "function": {"name": c.name, "arguments": ""}}
                    ]
                }
            )
        )
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    out.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if usage:
        out.append(
            {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion.chunk",
                "created": 1764806400,
                "model": model,
                "choices": [],
                "usage": _usage(reply),
            }
        )
    return out


# -- Responses API ------------------------------------------------------------------------------


def _chat_messages(items: Any) -> list[dict[str, Any]]:
    """Responses input items as Chat Completions messages, for the script to read."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items or []:
        kind = item.get("type", "message")
        if kind == "message" or "role" in item:
            messages.append({"role": item["role"], "content": item.get("content")})
        elif kind == "function_call":
            call_ = {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item.get("arguments", "")}}
            if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                messages[-1]["tool_calls"].append(call_)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call_]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item.get("output", "")})
    return messages


def _output_items(reply: Reply, rid: str) -> list[dict[str, Any]]:
    if reply.tool_calls:
        return [
            {
                "type": "function_call",
                "id": f"fc_{rid}_{i}",
                "call_id": f"call_{rid}_{i}",
                "name": c.name,
                "arguments": json.dumps(c.arguments),
                "status": "completed",
            }
            for i, c in enumerate(reply.tool_calls)
        ]
    return [
        {
            "type": "message",
            "id": f"msg_{rid}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
        }
    ]


def _response(body: dict[str, Any], output: list[dict[str, Any]], reply: Reply, rid: str) -> dict[str, Any]:
    usage = _usage(reply)
    return {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": 1764806400,
        "status": "completed",
        "model": body.get("model", "scripted-model"),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": {},
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        },
    }


def _response_events(response: dict[str, Any]) -> bytes:
    def event(kind: str, **data: Any) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    started = {**response, "status": "in_progress", "output": [], "usage": None}
    out = [event("response.created", response=started, sequence_number=0)]
    for index, item in enumerate(response["output"]):
        out.append(event("response.output_item.added", output_index=index, item={**item, "status": "in_progress"}))
        if item["type"] == "message":
            text = item["content"][0]["text"]
            out.append(event("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0, delta=text))
            out.append(event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0, text=text))
        out.append(event("response.output_item.done", output_index=index, item=item))
    out.append(event("response.completed", response=response))
    return b"".join(out)


def output_as_input(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the input items a client would send back."""
    return [{"role": "assistant", "content": item["content"][0]["text"]} if item["type"] == "message" else item for item in output]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.request_id = None
        self._json(200, {"object": "list", "data": [{"id": "scripted-model", "object": "model", "owned_by": "scripted"}]})

    def do_POST(self) -> None:
        self.request_id = None  # one handler serves every request of a kept-alive connection
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.rstrip("/").endswith("/responses"):
            return self._responses(raw)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._json(404, {"error": {"message": f"not served: {self.path}", "type": "invalid_request_error"}})
        body = json.loads(raw)
        try:
            reply = self.server.respond(Chat.of(body))
        except Exception as e:  # a script bug: say so to the client, loudly
            self.server.errors.append(f"{type(e).__name__}: {e}")
            return self._json(500, {"error": {"message": f"script failed: {e}", "type": "server_error"}})
        model, rid = body.get("model", "scripted-model"), self.server.new_id(raw)
        self.request_id = f"req_{rid}"
        if not body.get("stream"):
            return self._json(200, _completion(reply, model, rid))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in _chunks(reply, model, rid, usage)) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("x-request-id", self.request_id)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(events)))
        self.end_headers()
        self.wfile.write(events)

    def _responses(self, raw: bytes) -> None:
        """The Responses API: `previous_response_id` continues a conversation this server stored."""
        body = json.loads(raw)
        earlier: list[dict[str, Any]] = []
        if body.get("previous_response_id"):
            earlier = self.server.stored.get(body["previous_response_id"])
            if earlier is None:
                return self._json(
                    400,
                    {"error": {"message": "previous response not found", "type": "invalid_request_error", "param": "previous_response_id"}},
                )
        instructions = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
        messages = [*instructions, *earlier, *_chat_messages(body.get("input"))]
        tools = [{"type": "function", "function": {"name": t.get("name", "")}} for t in body.get("tools") or []]
        try:
            reply = self.server.respond(Chat.of({"messages": messages, "tools": tools}))
        except Exception as e:  # a script bug: say so to the client, loudly
            self.server.errors.append(f"{type(e).__name__}: {e}")
            return self._json(500, {"error": {"message": f"script failed: {e}", "type": "server_error"}})
        rid = self.server.new_id(raw)
        self.request_id = f"req_{rid}"
        output = _output_items(reply, rid)
        response = _response(body, output, reply, rid)
        answered = [*earlier, *_chat_messages(body.get("input")), *_chat_messages(output_as_input(output))]
        self.server.stored[response["id"]] = answered
        if not body.get("stream"):
            return self._json(200, response)
        events = _response_events(response)
        self.send_response(200)
        self.send_header("x-request-id", self.request_id)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(events)))
        self.end_headers()
        self.wfile.write(events)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        if self.request_id:
            self.send_header("x-request-id", self.request_id)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, respond: Respond) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.respond = respond
        self.errors: list[str] = []
        self.stored: dict[str, list[dict[str, Any]]] = {}  # Responses: id -> the conversation it ended
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def new_id(self, body: bytes) -> str:
        """Unique per response, as the real API's ids are: two byte-identical requests (the same task
        delegated twice) get different tool-call ids, so their conversations go on differently."""
        with self._lock:
            n = next(self._count)
        return f"{n:04d}{hashlib.sha256(body).hexdigest()[:16]}"


class ScriptedUpstream:
    """The server, run in a daemon thread for the length of a `with` block."""

    def __init__(self, respond: Respond, port: int = 0) -> None:
        self._server = _Server(port, respond)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def errors(self) -> list[str]:
        return self._server.errors

    def __enter__(self) -> ScriptedUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
