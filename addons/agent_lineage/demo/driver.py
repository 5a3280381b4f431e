"""A scripted agent that talks to an LLM API the way a bare SDK app does.

It sends no session or identity headers (only content-type and its User-Agent), resends
the whole history on every request, and parses JSON and SSE replies itself. Its prompts
carry `[[script: ...]]` markers (see `upstream`), so against the demo upstream, directly
or through the proxy, every run plays the same session:

    turn 1   main agent: bash `ls`, then delegate a task to a subagent, then answers
             subagent (a new conversation whose first user message is the task text):
                      thinks, runs bash `wc -l README.md`, then answers
    turn 2   main agent: a new prompt in the same conversation, answered directly

That is 6 requests per session: 3 main-agent requests in turn 1, 2 subagent requests, 1 in turn 2.

    python -m agent_lineage.demo.driver http://127.0.0.1:8080 [--no-stream] [--api openai-chat]
"""

from __future__ import annotations

import argparse
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPResponse, HTTPSConnection
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "agent-lineage-demo/0.1"
APIS = ("openai-chat", "openai-responses", "anthropic-messages")
MODEL = "demo-model"
REQUESTS_PER_SESSION = 6

MAIN_SYSTEM = "You are the demo coding agent. Use the tools; delegate side tasks to a helper."
SUBAGENT_SYSTEM = "You are a demo helper agent. Do the task you are given and report briefly."
SUBAGENT_PROMPT = (
    "Count the lines of README.md. "
    '[[script: think Counting lines is a job for wc. ; tool bash {"command": "wc -l README.md"} ; '
    "say README.md has 42 lines.]]"
)
FIRST_PROMPT = (
    "What is in this project, and how long is its README? "
    '[[script: tool bash {"command": "ls"} ; '
    f"tool delegate {json.dumps({'task': SUBAGENT_PROMPT})} ; "
    "say The project holds README.md (42 lines) and src/.]]"
)
SECOND_PROMPT = "Thanks! Where does the code live? [[script: say The code lives in src/.]]"

# The tools' fake results: a deterministic stand-in for running them.
BASH_OUTPUTS = {"ls": "README.md\nsrc\n", "wc -l README.md": "42 README.md\n"}
BASH_TOOL = {
    "name": "bash",
    "description": "Run a shell command and return its output.",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}
DELEGATE_TOOL = {
    "name": "delegate",
    "description": "Hand a task to a helper agent and return its final answer.",
    "parameters": {"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]},
}


class DemoError(RuntimeError):
    """The API answered with an error, or a stream ended before its final event."""


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What one demo session did."""

    api: str
    stream: bool
    requests: int
    answers: tuple[str, ...]  # the main agent's final text in each user turn
    subagent_answers: tuple[str, ...]  # each subagent's final text, in delegation order


@dataclass(frozen=True, slots=True)
class _ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Reply:
    """An assistant reply: the history entries to send back, and what the agent acts on."""

    history: list[dict]
    text: str
    tool_calls: list[_ToolCall]


def read_sse(lines: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream; an unterminated last event is dropped."""
    event = ""
    data: list[str] = []
    for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


class _Http:
    """One keep-alive connection, as an SDK client keeps."""

    def __init__(self, base_url: str, timeout: float) -> None:
        url = urlsplit(base_url)
        connection = HTTPSConnection if url.scheme == "https" else HTTPConnection
        self.connection = connection(url.hostname or "127.0.0.1", url.port, timeout=timeout)
        self.prefix = url.path.rstrip("/")
        self.requests = 0

    def post(self, path: str, body: dict) -> HTTPResponse:
        data = json.dumps(body).encode()
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        self.connection.request("POST", self.prefix + path, data, headers)
        self.requests += 1
        response = self.connection.getresponse()
        if response.status != 200:
            raise DemoError(f"POST {path}: HTTP {response.status}: {response.read()[:500]!r}")
        return response

    def close(self) -> None:
        self.connection.close()


class _Conversation(ABC):
    """One agent's conversation in one wire API; subclasses know the API's shapes."""

    path: str

    def __init__(self, system: str, tools: list[dict], stream: bool) -> None:
        self.system = system
        self.tools = tools
        self.stream = stream
        self.history: list[dict] = []

    def ask(self, http: _Http) -> _Reply:
        response = http.post(self.path, self.body())
        if self.stream:
            reply = self.read_events(read_sse(response))
            response.read()  # the end of the chunked body, so the connection can be reused
        else:
            reply = self.read_json(json.loads(response.read()))
        self.history += reply.history
        return reply

    @abstractmethod
    def add_user(self, text: str) -> None: ...

    @abstractmethod
    def add_tool_results(self, results: list[tuple[str, str]]) -> None: ...

    @abstractmethod
    def body(self) -> dict: ...

    @abstractmethod
    def read_json(self, payload: dict) -> _Reply: ...

    @abstractmethod
    def read_events(self, events: Iterator[tuple[str, str]]) -> _Reply: ...


class _ChatConversation(_Conversation):
    path = "/v1/chat/completions"

    def add_user(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})

    def add_tool_results(self, results: list[tuple[str, str]]) -> None:
        self.history += [{"role": "tool", "tool_call_id": call_id, "content": output} for call_id, output in results]

    def body(self) -> dict:
        body = {
            "model": MODEL,
            "messages": [{"role": "system", "content": self.system}, *self.history],
            "tools": [{"type": "function", "function": tool} for tool in self.tools],
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def read_json(self, payload: dict) -> _Reply:
        message = payload["choices"][0]["message"]
        return self._reply(message.get("content"), message.get("tool_calls") or [])

    def read_events(self, events: Iterator[tuple[str, str]]) -> _Reply:
        content: str | None = None
        calls: dict[int, dict] = {}
        for _, data in events:
            if data == "[DONE]":
                return self._reply(content, [calls[i] for i in sorted(calls)])
            for choice in json.loads(data)["choices"]:
                delta = choice["delta"]
                if delta.get("content") is not None:
                    content = (content or "") + delta["content"]
                for part in delta.get("tool_calls") or []:
                    # The first delta of a call carries its id and name, later ones argument fragments.
                    call = calls.setdefault(part["index"], {"id": part.get("id"), "function": {"arguments": ""}})
                    function = part.get("function", {})
                    if "name" in function:
                        call["function"]["name"] = function["name"]
                    call["function"]["arguments"] += function.get("arguments") or ""
        raise DemoError("chat stream ended before [DONE]")

    @staticmethod
    def _reply(content: str | None, tool_calls: list[dict]) -> _Reply:
        # Sent back the way SDK apps do: role, content and tool calls only.
        message: dict[str, Any] = {"role": "assistant", "content": content}
        calls = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
            }
            for c in tool_calls
        ]
        if calls:
            message["tool_calls"] = calls
        parsed = [_ToolCall(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"] or "{}")) for c in calls]
        return _Reply([message], content or "", parsed)


class _ResponsesConversation(_Conversation):
    path = "/v1/responses"

    def add_user(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})

    def add_tool_results(self, results: list[tuple[str, str]]) -> None:
        self.history += [{"type": "function_call_output", "call_id": call_id, "output": output} for call_id, output in results]

    def body(self) -> dict:
        tools = [{"type": "function", **tool} for tool in self.tools]
        return {
            "model": MODEL,
            "instructions": self.system,
            "input": self.history,
            "tools": tools,
            "stream": self.stream,
        }

    def read_json(self, payload: dict) -> _Reply:
        return self._reply(payload["output"])

    def read_events(self, events: Iterator[tuple[str, str]]) -> _Reply:
        items: dict[int, dict] = {}
        for kind, data in events:
            event = json.loads(data)
            if kind == "response.output_item.done":
                items[event["output_index"]] = event["item"]
            elif kind == "response.completed":
                return self._reply([items[i] for i in sorted(items)])
            elif kind in ("response.failed", "response.incomplete", "error"):
                raise DemoError(f"responses stream failed: {data[:500]}")
        raise DemoError("responses stream ended before response.completed")

    @staticmethod
    def _reply(output: list[dict]) -> _Reply:
        text = "".join(
            part["text"] for item in output if item["type"] == "message" for part in item["content"] if part["type"] == "output_text"
        )
        calls = [
            _ToolCall(item["call_id"], item["name"], json.loads(item["arguments"] or "{}"))
            for item in output
            if item["type"] == "function_call"
        ]
        return _Reply(output, text, calls)


class _MessagesConversation(_Conversation):
    path = "/v1/messages"

    def add_user(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})

    def add_tool_results(self, results: list[tuple[str, str]]) -> None:
        # All results of one assistant message go back in one user message.
        blocks = [{"type": "tool_result", "tool_use_id": call_id, "content": output} for call_id, output in results]
        self.history.append({"role": "user", "content": blocks})

    def body(self) -> dict:
        tools = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in self.tools]
        return {
            "model": MODEL,
            "max_tokens": 1024,
            "system": self.system,
            "messages": self.history,
            "tools": tools,
            "stream": self.stream,
        }

    def read_json(self, payload: dict) -> _Reply:
        return self._reply(payload["content"])

    def read_events(self, events: Iterator[tuple[str, str]]) -> _Reply:
        blocks: dict[int, dict] = {}
        partial_json: dict[int, str] = {}
        for kind, data in events:
            event = json.loads(data)
            match kind:
                case "content_block_start":
                    blocks[event["index"]] = dict(event["content_block"])
                case "content_block_delta":
                    block, delta = blocks[event["index"]], event["delta"]
                    match delta["type"]:
                        case "text_delta":
                            block["text"] += delta["text"]
                        case "thinking_delta":
                            block["thinking"] += delta["thinking"]
                        case "signature_delta":
                            block["signature"] = delta["signature"]
                        case "input_json_delta":
                            partial_json[event["index"]] = partial_json.get(event["index"], "") + delta["partial_json"]
                case "content_block_stop" if blocks[event["index"]]["type"] == "tool_use":
                    blocks[event["index"]]["input"] = json.loads(partial_json.get(event["index"]) or "{}")
                case "message_stop":
                    return self._reply([blocks[i] for i in sorted(blocks)])
                case "error":
                    raise DemoError(f"messages stream failed: {data[:500]}")
        raise DemoError("messages stream ended before message_stop")

    @staticmethod
    def _reply(content: list[dict]) -> _Reply:
        text = "".join(block["text"] for block in content if block["type"] == "text")
        calls = [_ToolCall(block["id"], block["name"], block["input"]) for block in content if block["type"] == "tool_use"]
        return _Reply([{"role": "assistant", "content": content}], text, calls)


_CONVERSATIONS: dict[str, type[_Conversation]] = {
    "openai-chat": _ChatConversation,
    "openai-responses": _ResponsesConversation,
    "anthropic-messages": _MessagesConversation,
}


@dataclass
class _Session:
    """One agent session against one API: the main agent, and the subagents it delegates to."""

    http: _Http
    api: str
    stream: bool
    subagent_answers: list[str] = field(default_factory=list)

    def run_turn(self, conversation: _Conversation, prompt: str) -> str:
        """Add a user prompt and loop until the model answers without tool calls; return its text."""
        conversation.add_user(prompt)
        while True:
            reply = conversation.ask(self.http)
            if not reply.tool_calls:
                return reply.text
            conversation.add_tool_results([(call.id, self.run_tool(call)) for call in reply.tool_calls])

    def run_tool(self, call: _ToolCall) -> str:
        if call.name == "delegate":
            subagent = _CONVERSATIONS[self.api](SUBAGENT_SYSTEM, [BASH_TOOL], self.stream)
            answer = self.run_turn(subagent, call.arguments["task"])
            self.subagent_answers.append(answer)
            return answer
        if call.name == "bash":
            command = call.arguments.get("command", "")
            return BASH_OUTPUTS.get(command, f"bash: {command}: command not found\n")
        return f"unknown tool {call.name}"


def run_demo_session(base_url: str, api: str, *, stream: bool = True, timeout: float = 30.0) -> DemoSummary:
    """Play the scripted two-turn session with one subagent against base_url (the server root)."""
    if api not in _CONVERSATIONS:
        raise ValueError(f"unknown api {api!r}; expected one of {', '.join(APIS)}")
    http = _Http(base_url, timeout)
    try:
        session = _Session(http, api, stream)
        main = _CONVERSATIONS[api](MAIN_SYSTEM, [BASH_TOOL, DELEGATE_TOOL], stream)
        answers = (session.run_turn(main, FIRST_PROMPT), session.run_turn(main, SECOND_PROMPT))
    finally:
        http.close()
    return DemoSummary(api, stream, http.requests, answers, tuple(session.subagent_answers))


def run_demo(base_url: str, stream: bool = True) -> list[DemoSummary]:
    """One demo session per API, one after the other."""
    return [run_demo_session(base_url, api, stream=stream) for api in APIS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Play the scripted demo agent session against an LLM API.")
    parser.add_argument("base_url", help="server root, e.g. http://127.0.0.1:8080 (the proxy or the demo upstream)")
    parser.add_argument("--api", choices=APIS, action="append", help="API to play (repeatable; default: all)")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="ask for JSON instead of SSE")
    args = parser.parse_args(argv)
    for api in args.api or APIS:
        summary = run_demo_session(args.base_url, api, stream=args.stream)
        print(f"{summary.api}: {summary.requests} requests")
        print(f"  subagents: {list(summary.subagent_answers)}")
        print(f"  answers: {list(summary.answers)}")


if __name__ == "__main__":
    main()
