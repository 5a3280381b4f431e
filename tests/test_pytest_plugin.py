"""The pytest plugin (`lineage` fixture, `--lineage-update`), tested with pytester: record a
capture and a golden once against the demo upstream, re-run offline with the upstream gone,
then change the prompt and read the failure."""

from __future__ import annotations

import pytest

from agent_lineage.demo.upstream import DemoUpstream
from agents_support import find_cli, free_port

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.e2e

AGENT_TEST = """
import os

import anthropic

PROMPT = 'Check the project. [[script: tool bash {{"command": "echo tool-ok"}} ; say All done.]]'


def test_agent(lineage, tmp_path):
    run = lineage("captures/agent.mitm", upstream=os.environ.get("DEMO_UPSTREAM"))
    env = run.env("anthropic")
    client = anthropic.Anthropic(base_url=env["ANTHROPIC_BASE_URL"], api_key=env["ANTHROPIC_API_KEY"], max_retries=0)
    tools = [{{"name": "bash", "input_schema": {{"type": "object"}}}}]
    messages = [{{"role": "user", "content": PROMPT.replace("the project", {subject!r})}}]
    while True:
        reply = client.messages.create(model="demo-model", max_tokens=100, tools=tools, messages=messages)
        calls = [b for b in reply.content if b.type == "tool_use"]
        if not calls:
            break
        messages.append({{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]}})
        messages.append({{"role": "user", "content": [{{"type": "tool_result", "tool_use_id": c.id, "content": "tool-ok"}} for c in calls]}})
    run.assert_trajectory_matches("goldens/agent.json")
"""  # noqa: E501


def agent_test(subject: str = "the project") -> str:
    return AGENT_TEST.format(subject=subject)


def test_record_once_then_replay_offline_then_a_changed_prompt_fails_readably(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    pytester.makepyfile(test_agent=agent_test())
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    # No capture yet: the test says how to make one.
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no capture captures/agent.mitm: record it once with `pytest --lineage-update`*"])

    with DemoUpstream() as demo:
        monkeypatch.setenv("DEMO_UPSTREAM", demo.base_url)
        pytester.runpytest("--lineage-update").assert_outcomes(passed=1)
        recorded = len(demo.requests)
    assert recorded == 2
    capture, golden = pytester.path / "captures" / "agent.mitm", pytester.path / "goldens" / "agent.json"
    assert capture.stat().st_size > 0 and b'"steps"' in golden.read_bytes()

    # The upstream is gone and the key is a placeholder: the capture answers.
    monkeypatch.delenv("DEMO_UPSTREAM")
    pytester.runpytest().assert_outcomes(passed=1)
    assert golden.read_bytes() == (pytester.path / "goldens" / "agent.json").read_bytes()

    # A changed prompt misses; the failure shows diff's lines and names the differing field.
    pytester.makepyfile(test_agent=agent_test("the other project"))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*replay miss: POST /v1/messages*first difference at body.messages[[]0[]].content*"])


def test_the_diff_lines_are_the_failure_message(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """A run that replays fine but whose trajectory no longer has the golden's shape (here: the
    golden was recorded from a longer session) fails with `agent-lineage diff`'s lines."""
    pytester.makepyfile(test_agent=agent_test())
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with DemoUpstream() as demo:
        monkeypatch.setenv("DEMO_UPSTREAM", demo.base_url)
        pytester.runpytest("--lineage-update").assert_outcomes(passed=1)
        golden = pytester.path / "goldens" / "agent.json"
        kept = golden.read_bytes()
        pytester.makepyfile(test_agent=agent_test("the project twice. [[script: tool bash {} ; tool bash {} ; say ok]]"))
        pytester.runpytest("--lineage-update").assert_outcomes(passed=1)
        golden.write_bytes(kept)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*trajectory differs from goldens/agent.json (agent-lineage diff):*"])


CLI_TEST = """
import json
import os
import subprocess


def test_cli(lineage, tmp_path):
    run = lineage("captures/{cli}.mitm", upstream=os.environ.get("DEMO_UPSTREAM"))
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    refuse = os.environ["REFUSING_PROXY"]  # the CLI's own internet traffic fails at once
    env = {{"PATH": os.environ["PATH"], "HOME": str(home), "TMPDIR": str(home / "tmp"), "LANG": "C.UTF-8", "TERM": "dumb",
           "HTTPS_PROXY": refuse, "HTTP_PROXY": refuse, "NO_PROXY": "127.0.0.1", "IS_SANDBOX": "1"}}
    env |= run.env({cli!r})
    prompt = 'Check. [[script: tool {tool} ; say Checked.]]'
    if {cli!r} == "claude":
        argv = [os.environ["CLI"], "-p", "--dangerously-skip-permissions", "--output-format", "json", prompt]
    else:
        argv = [os.environ["CLI"], "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "--json", prompt]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Checked." in done.stdout
    run.assert_trajectory_matches("goldens/{cli}.json")
"""
INSTALLED = {cli: find_cli(cli) for cli in ("claude", "codex")}  # before pytester moves HOME
TOOLS = {"claude": 'Bash {"command": "echo tool-ok"}', "codex": 'exec_command {"cmd": "echo tool-ok"}'}


@pytest.mark.agents
@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_real_cli_through_the_plugin_records_then_replays(cli: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    executable = INSTALLED[cli]
    if executable is None:
        pytest.skip(f"{cli} is not installed: run scripts/install_agents")
    pytester.makepyfile(test_cli_under_the_plugin=CLI_TEST.format(cli=cli, tool=TOOLS[cli]))  # not a name of tests/
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLI", str(executable))
    monkeypatch.setenv("REFUSING_PROXY", f"http://127.0.0.1:{free_port()}")
    with DemoUpstream() as demo:
        monkeypatch.setenv("DEMO_UPSTREAM", demo.base_url)
        pytester.runpytest("--lineage-update").assert_outcomes(passed=1)
    monkeypatch.delenv("DEMO_UPSTREAM")
    pytester.runpytest().assert_outcomes(passed=1)
