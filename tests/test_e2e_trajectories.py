"""Trajectories written by a real mitmdump: equal to offline conversion, and crash-safe."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from agent_lineage.cli import main as cli
from agent_lineage.demo.driver import REQUESTS_PER_SESSION, run_demo
from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.validate import validate_trajectory

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def upstream():
    with DemoUpstream() as server:
        yield server


def trajectories(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("trajectory-*.json"))}


@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
def test_live_trajectories_equal_the_offline_conversion_byte_for_byte(mitmdump_factory, upstream, tmp_path, no_proxy_env, stream):
    live = tmp_path / "live"
    proxy = mitmdump_factory(f"reverse:{upstream.base_url}", "--set", f"lineage_dir={live}", "-w", str(tmp_path / "flows.mitm"))
    summaries = run_demo(proxy.url, stream=stream)
    assert [s.requests for s in summaries] == [REQUESTS_PER_SESSION] * 3
    proxy.stop()

    offline = tmp_path / "offline"
    assert cli(["convert", str(tmp_path / "flows.mitm"), "-o", str(offline)]) == 0
    written = trajectories(live)
    assert len(written) == 3  # one session per wire API, each with its subagent
    assert trajectories(offline) == written  # nothing normalised: no wall-clock field is written
    for name, data in written.items():
        document = orjson.loads(data)
        assert validate_trajectory(document) == [], name
        assert len(document["subagent_trajectories"]) == 1


def test_kill_9_mid_stream_leaves_valid_files_with_every_earlier_call(mitmdump_factory, upstream, tmp_path, no_proxy_env):
    traces = tmp_path / "traces"
    proxy = mitmdump_factory(f"reverse:{upstream.base_url}", "--set", f"lineage_dir={traces}", "--set", "lineage_write_interval=0.2")
    client = httpx.Client(base_url=proxy.url, timeout=30)
    history: list[dict] = [
        {"role": "user", "content": 'Go. [[script: tool bash {"command": "ls"} ; tool bash {"command": "pwd"} ; say done]]'}
    ]
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    for n in range(2):  # two completed calls of one conversation
        reply = client.post("/v1/chat/completions", json={"model": "demo-model", "messages": history, "tools": tools}).json()
        message = reply["choices"][0]["message"]
        history += [message, {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": f"out {n}"}]
    time.sleep(0.2 + 0.5)  # older than the write interval, with room for the write itself

    slow = [{"role": "user", "content": "Write slowly. [[script: say one two three four five six seven eight]] [[delay:chunk=0.5]]"}]
    streaming = threading.Event()

    def stream_slowly() -> None:
        with (
            httpx.Client(base_url=proxy.url, timeout=30) as c,
            c.stream("POST", "/v1/chat/completions", json={"model": "demo-model", "messages": slow, "stream": True}) as response,
        ):
            try:
                for _ in response.iter_raw():
                    streaming.set()
            except httpx.HTTPError:
                pass  # the proxy died under it

    reader = threading.Thread(target=stream_slowly)
    reader.start()
    assert streaming.wait(10)
    proxy.stop(kill=True)  # SIGKILL, mid-stream
    reader.join(10)

    files = sorted(traces.glob("trajectory-*.json"))
    assert files, "nothing was written before the kill"
    documents = [json.loads(f.read_bytes()) for f in files]
    assert all(validate_trajectory(d) == [] for d in documents)
    [conversation] = [d for d in documents if any(s.get("tool_calls") for s in d["steps"])]
    agent_steps = [s for s in conversation["steps"] if s["source"] == "agent"]
    assert len(agent_steps) == 2  # both completed calls, the second with its tool call
    assert agent_steps[0]["observation"]["results"][0]["content"] == "out 0"
