"""Codex's Responses-over-WebSocket mode through a real mitmdump: each `response.create` is a Call.

A local WebSocket upstream speaks the protocol (the demo upstream's Responses brain behind
`websockets`); a client imitating Codex sends `response.create` messages with Codex's headers.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import orjson
import pytest
from websockets.sync.client import connect
from websockets.sync.server import serve

from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.offline import read_flows, replay
from agent_lineage.pipeline import CallLog, Pipeline

pytestmark = pytest.mark.e2e

SESSION = "01a21782-6b17-78f2-8fa9-367637f342d3"
CHILD = "01a21782-6bf2-7991-acee-53cf539adfba"
PROMPT = 'List the files. [[script: tool exec_command {"cmd": "ls"} ; say Two files.]]'


class WebSocketUpstream:
    """A Responses WebSocket server on 127.0.0.1, recording each handshake's headers."""

    def __init__(self) -> None:
        self.brain = DemoUpstream()
        self.event_delay = 0.0
        self.handshakes: list[dict[str, str]] = []
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, connection) -> None:
        self.handshakes.append({k.lower(): v for k, v in connection.request.headers.raw_items()})
        for raw in connection:
            message = json.loads(raw)
            if message.get("type") != "response.create":
                continue
            for event in self.brain.websocket_events({k: v for k, v in message.items() if k != "type"}):
                time.sleep(self.event_delay)
                connection.send(json.dumps(event))

    def close(self) -> None:
        self.server.shutdown()
        self.brain.stop()


@pytest.fixture
def ws_upstream():
    upstream = WebSocketUpstream()
    yield upstream
    upstream.close()


def codex_headers(thread: str, parent: str | None = None) -> dict[str, str]:
    metadata = {"session_id": SESSION, "thread_id": thread, "turn_id": "turn-1", "root_turn_id": "turn-1"}
    headers = {
        "session-id": SESSION,
        "thread-id": thread,
        "x-codex-turn-metadata": json.dumps(metadata),
        "authorization": "Bearer sk-ws-secret",
    }
    if parent:
        headers["x-codex-parent-thread-id"] = parent
    return headers


def converse(url: str, headers: dict[str, str]) -> list[dict]:
    """Two `response.create`s on one connection, the second chained by previous_response_id."""
    finals = []
    with connect(url, additional_headers=headers) as ws:
        request = {
            "type": "response.create",
            "model": "demo-model",
            "stream": True,
            "store": False,
            "input": [{"role": "user", "content": PROMPT}],
        }
        for _ in range(2):
            ws.send(json.dumps(request))
            while (event := json.loads(ws.recv()))["type"] != "response.completed":
                pass
            final = event["response"]
            finals.append(final)
            calls = [item for item in final["output"] if item["type"] == "function_call"]
            request = {
                "type": "response.create",
                "model": "demo-model",
                "previous_response_id": final["id"],
                "input": [{"type": "function_call_output", "call_id": c["call_id"], "output": "a.txt\nb.txt"} for c in calls],
            }
    return finals


def test_codex_websocket_mode_is_recorded_and_its_upgrade_stamped(mitmdump_factory, ws_upstream, tmp_path: Path, no_proxy_env):
    proxy = mitmdump_factory(
        f"reverse:http://127.0.0.1:{ws_upstream.port}",
        "--set",
        f"lineage_calls_log={tmp_path / 'calls.jsonl'}",
        "-w",
        str(tmp_path / "flows.mitm"),
    )
    url = f"ws://127.0.0.1:{proxy.port}/backend-api/codex/responses"
    finals = converse(url, codex_headers(SESSION))
    converse(url, codex_headers(CHILD, parent=SESSION))
    assert finals[1]["output"][-1]["content"][0]["text"] == "Two files."

    # Only the upgrade carries headers: stamped with the harness lineage, as Dynamo derives it.
    main, child = ws_upstream.handshakes
    assert main["x-dynamo-session-id"] == SESSION and "x-dynamo-parent-session-id" not in main
    assert child["x-dynamo-session-id"] == CHILD and child["x-dynamo-parent-session-id"] == SESSION

    proxy.stop()
    calls = [orjson.loads(line) for line in (tmp_path / "calls.jsonl").read_bytes().splitlines()]
    assert [c["api"] for c in calls] == ["openai-responses"] * 4
    assert [c["scope"]["agent_id"] for c in calls] == [SESSION, SESSION, CHILD, CHILD]
    assert [c["scope"]["parent_id"] for c in calls] == [None, None, SESSION, SESSION]
    first, second = calls[:2]
    assert [t["name"] for t in first["response"]["output"]["tool_calls"]] == ["exec_command"]
    assert second["response"]["output"]["text"] == "Two files."
    assert second["new_messages"][0]["tool_results"][0]["content"] == "a.txt\nb.txt"
    assert first["response"]["complete"] and first["response"]["usage"]["input_tokens"] > 0
    assert first["t_start"] <= first["t_first_byte"] <= first["t_end"]

    # The saved flows (the WebSocket messages included) give the same Calls offline.
    log = CallLog(tmp_path / "offline.jsonl")
    replay(read_flows(tmp_path / "flows.mitm"), Pipeline(sinks=[log]))
    log.close()
    assert [orjson.loads(line) for line in (tmp_path / "offline.jsonl").read_bytes().splitlines()] == calls
    assert b"sk-ws-secret" not in (tmp_path / "flows.mitm").read_bytes()


def test_a_connection_cut_mid_response_is_recorded(mitmdump_factory, ws_upstream, tmp_path: Path, no_proxy_env):
    ws_upstream.event_delay = 0.1
    proxy = mitmdump_factory(f"reverse:http://127.0.0.1:{ws_upstream.port}", "--set", f"lineage_calls_log={tmp_path / 'calls.jsonl'}")
    url = f"ws://127.0.0.1:{proxy.port}/backend-api/codex/responses"
    with connect(url, additional_headers=codex_headers(SESSION)) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "demo-model", "input": [{"role": "user", "content": PROMPT}]}))
        ws.recv()  # response.created, then the client goes away
    proxy.stop()
    [call] = [orjson.loads(line) for line in (tmp_path / "calls.jsonl").read_bytes().splitlines()]
    assert call["error"] and call["response"]["complete"] is False
