"""The console line from a real mitmdump: the demo agent's sessions through the proxy, one line per
LLM request, with the scope each call was given; colour only on a terminal and never with NO_COLOR.
And a real mitmweb: each LLM flow's comment and marker, and the "LLM call" view it picks."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import orjson
import pytest
from mitmproxy.version import VERSION

from agent_lineage.console import short_id
from agent_lineage.demo.driver import APIS, run_demo_session
from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.offline import read_flows
from conftest import ADDON, free_port, wait_for_port
from test_console import ANSI, LINE

pytestmark = pytest.mark.e2e

# mitmproxy's own `[time] ` before each log line, coloured on a terminal.
LOG_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)*\[\d\d:\d\d:\d\d\.\d{3}\](?:\x1b\[[0-9;]*m)* ")
# The demo session (agent_lineage.demo.driver): turn 1 main, main, subagent, subagent, main; turn 2 main.
DEMO_SHAPE = [
    ("●", "1", 1, "SESSION"),
    (" ", "1", 1, None),
    ("↳", "1", 2, "SUBAGENT"),
    (" ", "1", 2, None),
    (" ", "1", 1, None),
    ("▶", "2", 1, "TURN"),
]


@pytest.fixture(scope="module")
def upstream():
    with DemoUpstream() as server:
        yield server


def console_lines(output: str) -> list[str]:
    return [LOG_PREFIX.sub("", line) for line in output.splitlines() if LOG_PREFIX.match(line) and LINE.match(LOG_PREFIX.sub("", line))]


def test_every_llm_request_of_a_session_gets_one_line_with_its_session_agent_and_turn(mitmdump_factory, upstream, tmp_path, no_proxy_env):
    calls_log = tmp_path / "calls.jsonl"
    proxy = mitmdump_factory(
        f"reverse:{upstream.base_url}",
        "--set", f"lineage_calls_log={calls_log}",
        "--set", "lineage_dir=",
    )  # fmt: skip
    requests = sum(run_demo_session(proxy.url, api).requests for api in APIS)
    proxy.stop()
    output = proxy.output()
    assert not ANSI.search(output)  # not a terminal: no colour
    lines = console_lines(output)
    calls = [orjson.loads(line) for line in calls_log.read_bytes().splitlines()]
    assert len(lines) == len(calls) == requests == 6 * len(APIS)
    for session in range(len(APIS)):
        shape = []
        for line, call in zip(lines[6 * session : 6 * session + 6], calls[6 * session : 6 * session + 6]):
            fields, scope = LINE.match(line), call["scope"]
            assert fields["session"] == short_id(scope["session_id"])
            assert fields["turn"] == str(scope["turn"])
            path = fields["path"].split(" › ")
            assert path[-1] == ("main" if scope["depth"] == 0 else short_id(scope["agent_id"]))
            assert fields["client"] == "agent-lineage-demo"
            assert fields["status"] == "200"
            shape.append((fields["mark"], fields["turn"], len(path), fields["event"]))
        assert shape == DEMO_SHAPE, lines[6 * session : 6 * session + 6]
    assert len({LINE.match(line)["session"] for line in lines}) == len(APIS)


def run_in_terminal(upstream, tmp_path, env: dict[str, str]) -> str:
    """mitmdump's output when it writes to a terminal (a pty), after one demo session."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mitmdump"),
        "-s", str(ADDON), "--mode", f"reverse:{upstream.base_url}", "--listen-host", "127.0.0.1", "--listen-port", str(port),
        "--set", f"confdir={tmp_path / 'conf'}", "--set", "flow_detail=0", "--set", "lineage_dir=",
    ]  # fmt: skip
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, cwd=tmp_path, env={**os.environ, **env})
    os.close(follower)
    chunks: list[bytes] = []

    def drain(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.05)
            if ready:
                try:
                    chunks.append(os.read(leader, 65536))
                except OSError:
                    return

    try:
        wait_for_port(port, process)
        drain(0.5)
        run_demo_session(f"http://127.0.0.1:{port}", APIS[0])
        drain(1.0)
    finally:
        process.terminate()
        process.wait(timeout=15)
        drain(0.2)
        os.close(leader)
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def test_colour_on_a_terminal_unless_no_color(upstream, tmp_path, no_proxy_env):
    def ours(output: str) -> list[str]:
        # mitmproxy ends every log line on a terminal with a reset of its own
        lines = [LOG_PREFIX.sub("", line).removesuffix("\x1b[0m") for line in output.splitlines()]
        return [line for line in lines if LINE.match(ANSI.sub("", line))]

    colored = ours(run_in_terminal(upstream, tmp_path, {"TERM": "xterm-256color"}))
    assert len(colored) == 6 and all(ANSI.search(line) for line in colored)
    assert "\x1b[1;7;32mNEW SESSION\x1b[0m" in colored[0]
    plain = ours(run_in_terminal(upstream, tmp_path, {"TERM": "xterm-256color", "NO_COLOR": "1"}))
    assert len(plain) == 6 and not any(ANSI.search(line) for line in plain)


def test_mitmweb_shows_the_comment_the_marker_and_the_llm_call_view(upstream, tmp_path, no_proxy_env):
    """What a mitmweb user sees, read through mitmweb's own JSON API."""
    port, web_port = free_port(), free_port()
    command = [
        str(Path(sys.executable).parent / "mitmweb"), "--no-web-open-browser", "-s", str(ADDON),
        "--mode", f"reverse:{upstream.base_url}", "--listen-host", "127.0.0.1", "--listen-port", str(port),
        "--set", f"web_port={web_port}", "--set", "web_host=127.0.0.1",
        "--set", f"confdir={tmp_path / 'conf'}", "--set", "lineage_dir=",
    ]  # fmt: skip
    token = ""
    if int(VERSION.split(".")[0]) >= 12:  # mitmweb 12 wants a password, given to the API as `token`
        token = "lineage-test"
        command += ["--set", f"web_password={token}"]
    with open(tmp_path / "mitmweb.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_for_port(port, process)
            wait_for_port(web_port, process)
            time.sleep(0.5)  # the script loads after the ports open
            run_demo_session(f"http://127.0.0.1:{port}", "anthropic-messages")
            web = f"http://127.0.0.1:{web_port}"
            flows = orjson.loads(urlopen(f"{web}/flows?token={token}", timeout=10).read())
            views = [
                orjson.loads(urlopen(f"{web}/flows/{f['id']}/response/content/auto.json?token={token}", timeout=10).read()) for f in flows
            ]
        finally:
            process.terminate()
            process.wait(timeout=15)
    assert len(flows) == 6
    comments = [flow["comment"] for flow in flows]
    session = comments[0].split(" · ")[0]
    assert [c.removeprefix(session) for c in comments] == [
        " · main · turn 1",
        " · main · turn 1",
        *[comments[2].removeprefix(session)] * 2,
        " · main · turn 1",
        " · main · turn 2",
    ]
    assert re.fullmatch(r" · main › \S{8} · turn 1", comments[2].removeprefix(session))
    assert [bool(flow["marked"]) for flow in flows] == [False, False, True, True, False, False]
    # mitmproxy 11 answers with the view's description and lines, 12 with its name and text
    assert all(view.get("view_name", view.get("description")) == "LLM call" for view in views)
    text = views[2]["text"] if "text" in views[2] else "\n".join("".join(t for _, t in line) for line in views[2]["lines"])
    assert "── lineage" in text and "stamped     x-dynamo-parent-session-id: " in text and "→ bash" in text


def test_codex_over_a_websocket_gets_a_line_per_call_and_its_connection_a_comment(mitmdump_factory, tmp_path, no_proxy_env):
    from test_websocket import CHILD, SESSION, WebSocketUpstream, codex_headers, converse

    ws_upstream = WebSocketUpstream()
    try:
        proxy = mitmdump_factory(
            f"reverse:http://127.0.0.1:{ws_upstream.port}", "--set", "lineage_dir=", "-w", str(tmp_path / "flows.mitm")
        )
        url = f"ws://127.0.0.1:{proxy.port}/backend-api/codex/responses"
        converse(url, codex_headers(SESSION))
        converse(url, codex_headers(CHILD, parent=SESSION))
        proxy.stop()
    finally:
        ws_upstream.close()
    lines = [LINE.match(line) for line in console_lines(proxy.output())]
    child = f"main › {short_id(CHILD)}"
    assert [(m["client"], m["session"], m["path"]) for m in lines] == [
        ("codex", short_id(SESSION), path) for path in ["main", "main", child, child]
    ]
    assert lines[0]["event"] == "SESSION"
    saved = read_flows(tmp_path / "flows.mitm")
    assert [(f.comment, f.marked) for f in saved] == [
        (f"session {short_id(SESSION)} · main · turn 1", ""),
        (f"session {short_id(SESSION)} · main › {short_id(CHILD)} · turn 1", ":arrow_right_hook:"),
    ]
