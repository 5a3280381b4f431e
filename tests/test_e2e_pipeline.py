"""End to end: official SDK clients -> real `mitmdump -s addons/lineage.py` -> local upstream.

Checks that clients receive exactly the upstream's bytes, that the recorded Calls are right, and
that the same flows saved with `-w` and read offline give identical Calls.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest

from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.offline import read_flows, replay
from agent_lineage.pipeline import CallLog, Pipeline

pytestmark = pytest.mark.e2e

SCRIPT = '[[script: tools lookup {"city": "Paris"} lookup {"city": "Rome"} ; think weighing both ; say Paris is warmer.]]'
PROMPT = f"Compare the weather. {SCRIPT}"


@pytest.fixture(scope="module")
def upstream():
    with DemoUpstream() as server:
        yield server


@pytest.fixture
def proxy(mitmdump_factory, upstream, tmp_path, no_proxy_env):
    upstream.clear()
    return mitmdump_factory(
        f"reverse:{upstream.base_url}",
        "--set",
        f"lineage_calls_log={tmp_path / 'calls.jsonl'}",
        "--set",
        f"lineage_dir={tmp_path / 'traces'}",
        "-w",
        str(tmp_path / "flows.mitm"),
    )


def recorded_calls(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def offline_calls(flows_file: Path, tmp_path: Path) -> list[dict]:
    out = tmp_path / "offline-calls.jsonl"
    log = CallLog(out)
    replay(read_flows(flows_file), Pipeline(sinks=[log]))
    log.close()
    return recorded_calls(out)


def openai_client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-test-not-a-secret", max_retries=0)


def anthropic_client(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="sk-test-not-a-secret", max_retries=0)


def chat_turn(client: openai.OpenAI, stream: bool) -> tuple[list[dict], list[dict]]:
    """Two calls of one conversation: parallel tool calls, then the final answer."""
    messages: list[dict] = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    replies = []
    for _ in range(2):
        if stream:
            text, calls = "", {}
            with client.chat.completions.create(
                model="demo-model", messages=messages, tools=tools, stream=True, stream_options={"include_usage": True}
            ) as events:
                for chunk in events:
                    for choice in chunk.choices:
                        text += choice.delta.content or ""
                        for piece in choice.delta.tool_calls or []:
                            entry = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                            entry["id"] = piece.id or entry["id"]
                            entry["name"] = (piece.function.name or entry["name"]) if piece.function else entry["name"]
                            entry["arguments"] += (piece.function.arguments or "") if piece.function else ""
            tool_calls = [calls[i] for i in sorted(calls)]
        else:
            completion = client.chat.completions.create(model="demo-model", messages=messages, tools=tools)
            text = completion.choices[0].message.content or ""
            tool_calls = [
                {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                for c in completion.choices[0].message.tool_calls or []
            ]
        replies.append({"text": text, "tool_calls": tool_calls})
        assistant = {"role": "assistant", "content": text or None}
        if tool_calls:
            assistant["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in tool_calls
            ]
        messages.append(assistant)
        for c in tool_calls:
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": f"{json.loads(c['arguments'])['city']}: 21C"})
    return replies, messages


def responses_turn(client: openai.OpenAI, stream: bool) -> list[dict]:
    items: list = [{"role": "user", "content": PROMPT}]
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    replies = []
    for _ in range(2):
        if stream:
            with client.responses.stream(model="demo-model", input=items, tools=tools, instructions="You are terse.") as events:
                for _event in events:
                    pass
                response = events.get_final_response()
        else:
            response = client.responses.create(model="demo-model", input=items, tools=tools, instructions="You are terse.")
        calls = [i for i in response.output if i.type == "function_call"]
        replies.append({"text": response.output_text, "tool_calls": [(c.name, json.loads(c.arguments)) for c in calls]})
        items += [i.model_dump(exclude_none=True) for i in response.output]
        items += [{"type": "function_call_output", "call_id": c.call_id, "output": "21C"} for c in calls]
    return replies


def messages_turn(client: anthropic.Anthropic, stream: bool) -> list[dict]:
    messages: list = [{"role": "user", "content": PROMPT}]
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    replies = []
    for _ in range(2):
        if stream:
            with client.messages.stream(
                model="demo-model", max_tokens=512, system="You are terse.", messages=messages, tools=tools
            ) as events:
                message = events.get_final_message()
        else:
            message = client.messages.create(model="demo-model", max_tokens=512, system="You are terse.", messages=messages, tools=tools)
        uses = [b for b in message.content if b.type == "tool_use"]
        replies.append(
            {"text": "".join(b.text for b in message.content if b.type == "text"), "tool_calls": [(u.name, u.input) for u in uses]}
        )
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]})
        if uses:
            messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "21C"} for u in uses]})
    return replies


def assert_calls_right(calls: list[dict], api: str, stream: bool) -> None:
    assert [c["api"] for c in calls] == [api, api]
    first, second = calls
    assert first["stream"] is second["stream"] is stream
    assert first["system"] == "You are terse."
    assert [m["role"] for m in first["messages"]] == ["user"]
    assert [t["name"] for t in first["response"]["output"]["tool_calls"]] == ["lookup", "lookup"]
    assert [json.loads(t["arguments"]) for t in first["response"]["output"]["tool_calls"]] == [{"city": "Paris"}, {"city": "Rome"}]
    assert second["response"]["output"]["text"] == "Paris is warmer."
    results = [r for m in second["new_messages"] for r in m["tool_results"]]
    assert [r["call_id"] for r in results] == [t["id"] for t in first["response"]["output"]["tool_calls"]]
    for call in calls:
        assert call["status"] == 200 and call["error"] is None and call["response"]["complete"] is True
        usage = call["response"]["usage"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and usage["cache_read_tokens"] is not None
        assert call["t_start"] <= call["t_first_byte"] <= call["t_end"]
    if api != "openai-chat":  # the demo model thinks only where the API carries reasoning
        assert second["response"]["output"]["reasoning"] == "weighing both"
    # One conversation: one agent, the continuation stays in the turn.
    assert first["scope"]["agent_id"] == second["scope"]["agent_id"]
    assert (first["scope"]["new_turn"], second["scope"]["new_turn"]) == (True, False)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", ["openai-chat", "openai-responses", "anthropic-messages"])
def test_sdk_clients_through_mitmdump(proxy, upstream, tmp_path, api, stream):
    if api == "openai-chat":
        replies, _ = chat_turn(openai_client(proxy), stream)
    elif api == "openai-responses":
        replies = responses_turn(openai_client(proxy), stream)
    else:
        replies = messages_turn(anthropic_client(proxy), stream)
    assert replies[1]["text"] == "Paris is warmer."
    assert len(replies[0]["tool_calls"]) == 2

    # The upstream saw our lineage on every request, the same session for the conversation.
    sessions = [r.header("x-dynamo-session-id") for r in upstream.requests]
    assert len(sessions) == 2 and sessions[0] == sessions[1] and sessions[0].startswith("sess-")
    assert all(r.header("x-dynamo-parent-session-id") is None for r in upstream.requests)

    proxy.stop()
    calls = recorded_calls(tmp_path / "calls.jsonl")
    assert_calls_right(calls, api, stream)
    assert calls[0]["scope"]["agent_id"] == sessions[0]
    # Saved with -w and read offline: the same Calls.
    assert offline_calls(tmp_path / "flows.mitm", tmp_path) == calls
    # No secret on disk (the flows file keeps its keys blanked too).
    for path in (tmp_path / "calls.jsonl", tmp_path / "flows.mitm"):
        assert b"sk-test-not-a-secret" not in path.read_bytes()


PACED = f"{PROMPT} [[delay:chunk=0.01]]"  # events far enough apart that TCP does not merge them
REQUESTS = {
    "chat": ("/v1/chat/completions", {"model": "demo-model", "messages": [{"role": "user", "content": PACED}]}),
    "responses": ("/v1/responses", {"model": "demo-model", "input": PACED}),
    "messages": ("/v1/messages", {"model": "demo-model", "max_tokens": 64, "messages": [{"role": "user", "content": PACED}]}),
}


class CannedUpstream:
    """Serves fixed response bytes in fixed chunks, so exactly what the upstream sent is known."""

    def __init__(self, content_type: str, chunks: list[bytes]) -> None:
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                self.send_response(200)
                self.send_header("content-type", canned.content_type)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for chunk in canned.chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    time.sleep(0.01)
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args) -> None:
                pass

        self.content_type, self.chunks = content_type, chunks
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_client_receives_exactly_the_upstream_bytes(mitmdump_factory, upstream, kind, stream, no_proxy_env):
    path, body = REQUESTS[kind]
    body = {**body, "stream": stream}

    def fetch(base: str) -> tuple[list[bytes], str]:
        with httpx.Client(base_url=base, timeout=10) as client:
            with client.stream("POST", path, json=body, headers={"accept-encoding": "identity"}) as response:
                return list(response.iter_raw()), response.headers["content-type"]

    # Real replies of the demo upstream, served again as fixed bytes behind the proxy.
    chunks, content_type = fetch(upstream.base_url)
    canned = CannedUpstream(content_type, chunks)
    proxy = mitmdump_factory(f"reverse:{canned.url}")
    proxied_chunks, proxied_type = fetch(proxy.url)
    assert b"".join(proxied_chunks) == b"".join(chunks) and proxied_type == content_type
    if stream:
        assert len(proxied_chunks) > 1  # arrived as a stream, not in one piece
    canned.server.shutdown()


def test_upstream_failures_are_recorded_not_lost(proxy, upstream, tmp_path):
    client = httpx.Client(base_url=proxy.url, timeout=10)
    failing = client.post(
        "/v1/chat/completions", json={"model": "demo-model", "messages": [{"role": "user", "content": "x [[status:503]]"}]}
    )
    assert failing.status_code == 503
    cut_body = {"model": "demo-model", "stream": True, "max_tokens": 64, "messages": [{"role": "user", "content": f"{PROMPT} [[cut:4]]"}]}
    with pytest.raises(httpx.HTTPError):
        with client.stream("POST", "/v1/messages", json=cut_body) as response:
            for _ in response.iter_raw():
                pass
    fine = client.post("/v1/responses", json={"model": "demo-model", "input": "still serving?"})
    assert fine.status_code == 200
    proxy.stop()
    by_api = {c["api"]: c for c in recorded_calls(tmp_path / "calls.jsonl")}
    assert by_api["openai-chat"]["status"] == 503 and by_api["openai-chat"]["error"].startswith("HTTP 503")
    cut = by_api["anthropic-messages"]
    assert cut["error"] and cut["response"]["complete"] is False and cut["response"]["id"]
    assert by_api["openai-responses"]["error"] is None
    assert offline_calls(tmp_path / "flows.mitm", tmp_path) == recorded_calls(tmp_path / "calls.jsonl")
