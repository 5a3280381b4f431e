"""`agent-lineage replay`: the canonical request key, the replay upstream, and SDK apps re-run
through mitmdump + the addon against a capture with no demo upstream (same trajectory under
`agent-lineage diff`), and a changed prompt that misses loudly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from agent_lineage.cli import main as cli
from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.offline import read_flows
from agent_lineage.replay import Capture, ReplayServer
from agent_lineage.replay_key import first_difference, request_key
from conftest import FIXTURES, free_port, wait_for_port
from sdk_apps import APPS, run_app

PYTEST_TMP = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\"\s\\]+")


def key(body: dict, path: str = "/v1/messages"):
    return request_key("POST", path, orjson.dumps(body))


# --- the key ---------------------------------------------------------------------------------


def test_ids_become_numbered_placeholders_so_two_runs_with_other_ids_share_a_key():
    def run(session: str, call: str) -> dict:
        return {
            "metadata": {"user_id": f"user_{session}"},
            "messages": [
                {"role": "user", "content": f"session {session}"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": call, "name": "bash", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call, "content": f"ran in {session}"}]},
            ],
        }

    a = key(run("5b1e0f1c-8d4e-4c55-9f55-0d1f7b2c1a10", "toolu_01ABCdefGHIjklMNOpqrSTU"))
    b = key(run("0c6f1c7e-1111-4222-8333-944455556666", "toolu_01ZYXwvuTSRqpoNMLkjiHGF"))
    assert a.digest == b.digest
    assert a.ids == ("5b1e0f1c-8d4e-4c55-9f55-0d1f7b2c1a10", "toolu_01ABCdefGHIjklMNOpqrSTU")
    # The same id quoted in two places is one placeholder: swapping which id goes where is a change.
    swapped = run("5b1e0f1c-8d4e-4c55-9f55-0d1f7b2c1a10", "toolu_01ABCdefGHIjklMNOpqrSTU")
    swapped["messages"][2]["content"][0]["content"] = "ran in toolu_01ABCdefGHIjklMNOpqrSTU"
    assert key(swapped).digest != a.digest


def test_dates_in_system_prompts_and_reminders_cache_control_and_user_id_are_left_out():
    def body(day: str, clock: str, cached: bool, user: str) -> dict:
        text = {"type": "text", "text": f"<system-reminder>Today is {day}, {clock}.</system-reminder>Fix the bug."}
        if cached:
            text["cache_control"] = {"type": "ephemeral"}
        return {
            "system": [{"type": "text", "text": f"You are Claude. Today's date: {day}."}],
            "messages": [{"role": "user", "content": [text]}],
            "metadata": {"user_id": user},
        }

    a = key(body("2026-12-04", "18:41:07", True, "alice"))
    assert a.digest == key(body("2027-01-31", "09:02", False, "bob")).digest
    # A date in the user's own words is content.
    plain = {"messages": [{"role": "user", "content": "Release on 2026-12-04."}]}
    assert key(plain).digest != key({"messages": [{"role": "user", "content": "Release on 2026-12-05."}]}).digest


def test_codex_command_output_timings_and_random_nicknames_are_left_out():
    def body(wall: str, chunk: str, nickname: str) -> dict:
        output = f"Chunk ID: {chunk}\nWall time: {wall} seconds\nProcess exited with code 0\nOutput:\ntool-ok\n"
        spawned = json.dumps({"agent_id": "01a217ed-d2a3-7ff3-b1fa-29e28b4f3edc", "nickname": nickname})
        return {"input": [{"type": "function_call_output", "output": output}, {"type": "function_call_output", "output": spawned}]}

    assert key(body("0.0012", "c84dbd", "Russell"), "/v1/responses").digest == key(body("1.5000", "0a0b0c", "Ohm"), "/v1/responses").digest


def test_claude_subagent_durations_and_the_order_of_tool_declarations_are_left_out():
    def body(duration: int, names: list[str]) -> dict:
        result = f"Child done.\nagentId: a8ba010e5aa0bac85\n<usage>subagent_tokens: 11821\ntool_uses: 1\nduration_ms: {duration}</usage>"
        tools = [{"type": "function", "name": n, "parameters": {}} for n in names]
        return {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": result}]}], "tools": tools}

    assert key(body(435, ["spawn_agent", "close_agent"])).digest == key(body(418, ["close_agent", "spawn_agent"])).digest
    notification = "<task-notification><usage><tool_uses>1</tool_uses><duration_ms>{}</duration_ms></usage></task-notification>"
    assert (
        key({"messages": [{"role": "user", "content": notification.format(795)}]}).digest
        == key({"messages": [{"role": "user", "content": notification.format(402)}]}).digest
    )
    assert key(body(435, ["spawn_agent"])).digest != key(body(435, ["close_agent"])).digest


def test_first_difference_names_the_field_path():
    a = key({"messages": [{"role": "user", "content": "one"}], "model": "m"})
    b = key({"messages": [{"role": "user", "content": "two"}], "model": "m"})
    assert first_difference(a.canonical, b.canonical) == ("body.messages[0].content", "one", "two")
    c = key({"messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "more"}], "model": "m"})
    assert first_difference(a.canonical, c.canonical)[0] == "body.messages[1]"


@pytest.mark.parametrize("scenario", ["tool_loop", "nested"])
def test_codex_sessions_recorded_in_two_runs_have_the_same_keys(scenario):
    """Two real Codex runs of one scenario (reverse and forward mode, separate processes, other
    ids, dates, nicknames and temporary directories): every request of one has its key in the other."""
    keys = {}
    for mode in ("reverse", "forward"):
        flows = read_flows(FIXTURES / "agents" / f"codex_{scenario}_{mode}" / "flows.mitm")
        keys[mode] = [request_key(f.request.method, f.request.path, f.request.raw_content, [PYTEST_TMP]) for f in flows]
    assert sorted(k.digest for k in keys["reverse"]) == sorted(k.digest for k in keys["forward"])
    assert {k.ids for k in keys["reverse"]}.isdisjoint({k.ids for k in keys["forward"]})  # the ids did differ


# --- the server ------------------------------------------------------------------------------


@pytest.fixture
def demo():
    with DemoUpstream() as server:
        yield server


def chat(text: str, stream: bool = False) -> dict:
    return {"model": "demo-model", "messages": [{"role": "user", "content": text}], "stream": stream}


def test_record_then_replay_serves_the_recorded_answers_and_misses_loudly(demo, tmp_path, no_proxy_env, caplog):
    flows = tmp_path / "recorded.mitm"
    with ReplayServer(Capture([]), mode="record", upstream=demo.base_url, record_to=flows) as recorder:
        live_json = httpx.post(
            recorder.url + "/v1/chat/completions", json=chat("hi [[script: say Hello.]]"), headers={"authorization": "Bearer sk-secret"}
        )
        live_sse = httpx.post(recorder.url + "/v1/chat/completions", json=chat("hi [[script: say Hello.]]", stream=True))
        httpx.head(recorder.url + "/")
    assert recorder.stats.forwarded == 3
    assert b"sk-secret" not in flows.read_bytes()  # no secret on disk
    demo_requests = len(demo.requests)

    with ReplayServer(Capture.from_files([flows])) as replay:
        replayed_json = httpx.post(replay.url + "/v1/chat/completions", json=chat("hi [[script: say Hello.]]"))
        with httpx.stream("POST", replay.url + "/v1/chat/completions", json=chat("hi [[script: say Hello.]]", stream=True)) as response:
            chunks = list(response.iter_raw())
            streamed_headers = response.headers
        head = httpx.head(replay.url + "/")
        miss = httpx.post(replay.url + "/v1/chat/completions", json=chat("bye [[script: say Hello.]]"))
    assert len(demo.requests) == demo_requests  # nothing reached the upstream
    assert replayed_json.json() == live_json.json()
    assert b"".join(chunks) == live_sse.content
    assert len(chunks) == live_sse.content.count(b"\n\n") > 2  # one chunk per SSE event
    assert streamed_headers["content-type"].startswith("text/event-stream")
    assert head.status_code == 200
    assert miss.status_code == 404
    detail = miss.json()["replay_miss"]
    assert detail["field"] == "body.messages[0].content" and "bye" in detail["received"] and "hi" in detail["recorded"]
    assert detail["nearest"]["path"] == "/v1/chat/completions"
    assert "first difference at body.messages[0].content" in miss.json()["error"]["message"]
    assert replay.stats.served == 3 and replay.stats.missed == 1
    assert any("replay miss" in r.getMessage() for r in caplog.records)


def test_recorded_timing_waits_the_recorded_first_byte_and_streaming_time(tmp_path, no_proxy_env):
    flows = tmp_path / "recorded.mitm"
    with DemoUpstream(first_byte_delay=0.4, chunk_delay=0.1) as slow:
        with ReplayServer(Capture([]), mode="record", upstream=slow.base_url, record_to=flows) as recorder:
            httpx.post(recorder.url + "/v1/chat/completions", json=chat("hi [[script: say one two three]]", stream=True))
    capture = Capture.from_files([flows])
    [entry] = capture.recorded
    assert entry.first_byte + entry.duration >= 0.4 + 0.1  # the demo's delays, as recorded
    with ReplayServer(capture, timing="recorded") as replay:
        arrivals = []
        start = time.monotonic()
        with httpx.stream(
            "POST", replay.url + "/v1/chat/completions", json=chat("hi [[script: say one two three]]", stream=True)
        ) as response:
            for _ in response.iter_raw():
                arrivals.append(time.monotonic() - start)
    assert arrivals[0] >= entry.first_byte  # sleeps are lower bounds, whatever the machine's load
    assert arrivals[-1] >= entry.first_byte + entry.duration * 0.99


def test_live_ids_replace_the_recorded_ones_in_the_answer(demo, tmp_path, no_proxy_env):
    flows = tmp_path / "recorded.mitm"
    spawned = "5b1e0f1c-8d4e-4c55-9f55-0d1f7b2c1a10"
    script = f'[[script: tool wait {{"target": "{spawned}"}} ; say one ; say two]]'
    with ReplayServer(Capture([]), mode="record", upstream=demo.base_url, record_to=flows) as recorder:
        first = httpx.post(recorder.url + "/v1/chat/completions", json=chat(f"spawned {spawned} {script}")).json()
    capture = Capture.from_files([flows])
    live_id = "0c6f1c7e-1111-4222-8333-944455556666"
    with ReplayServer(capture) as replay:
        answer = httpx.post(replay.url + "/v1/chat/completions", json=chat(f"spawned {live_id} {script.replace(spawned, live_id)}")).json()
    # The recorded answer named the recorded id; the replay names the one the live client made.
    assert spawned in json.dumps(first) and live_id not in json.dumps(first)
    assert json.dumps(answer) == json.dumps(first).replace(spawned, live_id)


def test_hybrid_forwards_misses_records_them_and_answers_them_next_time(demo, tmp_path, no_proxy_env):
    flows, misses = tmp_path / "recorded.mitm", tmp_path / "misses.mitm"
    with ReplayServer(Capture([]), mode="record", upstream=demo.base_url, record_to=flows) as recorder:
        httpx.post(recorder.url + "/v1/chat/completions", json=chat("one [[script: say One.]]"))
    with ReplayServer(Capture.from_files([flows]), mode="hybrid", upstream=demo.base_url, record_to=misses) as hybrid:
        for text in ["one [[script: say One.]]", "two [[script: say Two.]]", "two [[script: say Two.]]"]:
            assert httpx.post(hybrid.url + "/v1/chat/completions", json=chat(text)).status_code == 200
    assert (hybrid.stats.served, hybrid.stats.forwarded, hybrid.stats.missed) == (2, 1, 0)
    [recorded] = read_flows(misses)
    assert b"two" in recorded.request.raw_content and b"Two." in recorded.response.raw_content


def test_the_command_prints_its_url_and_a_summary_and_fails_after_a_miss(demo, tmp_path, no_proxy_env):
    flows = tmp_path / "recorded.mitm"
    with ReplayServer(Capture([]), mode="record", upstream=demo.base_url, record_to=flows):
        pass
    assert cli(["replay", str(tmp_path / "absent.mitm")]) == 2
    assert cli(["replay", "--mode", "hybrid", str(flows)]) == 2  # no --upstream
    port = free_port()
    command = [sys.executable, "-m", "agent_lineage.cli", "replay", str(flows), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process)
        assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat("x")).status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    assert stdout.strip() == f"http://127.0.0.1:{port}"
    assert "replay miss: POST /v1/chat/completions" in stderr
    assert "served 0 (0 repeated), missed 1, forwarded 0" in stderr
    assert process.returncode == 1


# --- SDK apps end to end: record through the addon, re-run against the capture ----------------


def trajectory_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("trajectory-*.json"))


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
@pytest.mark.parametrize("app", APPS)
def test_sdk_app_rerun_against_the_capture_gives_the_same_trajectory(app, stream, mitmdump_factory, tmp_path, no_proxy_env, capsys):
    flows = tmp_path / "flows.mitm"
    with DemoUpstream() as demo:
        proxy = mitmdump_factory(f"reverse:{demo.base_url}", "--set", f"lineage_dir={tmp_path / 'golden'}", "-w", str(flows))
        assert run_app(app, proxy.url, stream, "Check the project.") == "All done."
        proxy.stop()
    [golden] = trajectory_files(tmp_path / "golden")

    # The demo upstream is gone: the capture answers, through the same proxy and addon.
    with ReplayServer(Capture.from_files([flows])) as replay:
        proxy = mitmdump_factory(f"reverse:{replay.url}", "--set", f"lineage_dir={tmp_path / 'again'}")
        assert run_app(app, proxy.url, stream, "Check the project.") == "All done."
        proxy.stop()
    assert (replay.stats.served, replay.stats.missed) == (2, 0)
    [again] = trajectory_files(tmp_path / "again")
    assert cli(["diff", str(golden), str(again)]) == 0

    if not stream:
        return  # the miss below is the same for JSON replies: once per app is enough
    # A changed prompt: a loud miss naming the field, the app fails, and the diff says what changed.
    with ReplayServer(Capture.from_files([flows])) as replay:
        proxy = mitmdump_factory(f"reverse:{replay.url}", "--set", f"lineage_dir={tmp_path / 'changed'}")
        error = anthropic_or_openai_error(app)
        with pytest.raises(error) as failed:
            run_app(app, proxy.url, stream, "Check the other project.")
        proxy.stop()
    assert failed.value.status_code == 404
    assert "first difference at body.messages" in str(failed.value) and "Check the other project." in str(failed.value)
    assert replay.stats.missed == 1
    [changed] = trajectory_files(tmp_path / "changed")
    capsys.readouterr()
    assert cli(["diff", str(golden), str(changed)]) == 1
    assert capsys.readouterr().out.strip()


def anthropic_or_openai_error(app: str) -> type[Exception]:
    import anthropic
    import openai

    return anthropic.NotFoundError if app == "anthropic" else openai.NotFoundError


def _chunk_sizes(url: str, path: str, body: bytes) -> list[int]:
    """The sizes of the HTTP chunks a server sends, read off the socket (clients merge them)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (path.encode(), len(body), body)
        )
        raw = b""
        while data := s.recv(65536):
            raw += data
    rest = raw.split(b"\r\n\r\n", 1)[1]
    sizes = []
    while rest:
        line, rest = rest.split(b"\r\n", 1)
        size = int(line, 16)
        if size == 0:
            break
        sizes.append(size)
        rest = rest[size + 2 :]
    return sizes


@pytest.mark.e2e
def test_a_stream_captured_through_the_addon_is_replayed_in_the_chunks_it_arrived_in(mitmdump_factory, tmp_path, no_proxy_env):
    flows = tmp_path / "flows.mitm"
    request = orjson.dumps(chat("hi [[script: say the quick brown fox jumps over the lazy dog]]", stream=True))
    with DemoUpstream(chunk_delay=0.05) as slow:
        proxy = mitmdump_factory(f"reverse:{slow.base_url}", "--set", "lineage_dir=", "-w", str(flows))
        live = _chunk_sizes(proxy.url, "/v1/chat/completions", request)
        proxy.stop()
    [entry] = Capture.from_files([flows]).recorded
    assert entry.chunks is not None and len(entry.chunks) > 3
    assert sum(size for size, _ in entry.chunks) == len(entry.body)
    assert [size for size, _ in entry.chunks] == live  # as the addon saw them pass
    with ReplayServer(Capture.from_files([flows])) as replay:
        assert _chunk_sizes(replay.url, "/v1/chat/completions", request) == live
