"""The real Claude Code and Codex CLIs re-run against a replay of their own capture: each records a
session through `mitmdump -s addons/lineage.py` in front of the demo upstream, then runs the same
prompts again with the demo upstream gone, answered by `agent-lineage replay`'s server from the
saved flows (fresh HOME and CODEX_HOME at the same paths, so new session ids, agent ids and
times): the CLI finishes with the same
answer and its trajectory matches the recorded one under `agent-lineage diff`. A changed prompt
misses loudly (the miss names the field), the CLI fails, and the diff fails.

Marker `agents` (needs the pinned CLIs: scripts/install_agents); same network namespace as
tests/test_agents.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_lineage.cli import main as agent_lineage
from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.replay import Capture, ReplayServer
from agents_support import CLAUDE_NEXT_VERSION, Network, Proxy, Run, claude_argv, claude_env, codex_argv, codex_env, run_cli
from test_agents import claude_scenarios, codex_scenarios, installed

pytestmark = pytest.mark.agents

# Every scenario of tests/test_agents.py replays (tool loops, one or two parallel subagents and
# Codex's spawn / wait included); two keep CI short: a shell tool in a resumed second turn, and a
# subagent's own subagent; and the nested one on the newest pinned Claude Code, whose subagents
# run in the background and report in task notifications.
CASES = [(cli, name) for cli in ("claude", "codex") for name in ("two_turns", "nested")] + [(f"claude-{CLAUDE_NEXT_VERSION}", "nested")]


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network()
    yield net
    net.close()


class Sandbox:
    """The project, HOME and CODEX_HOME one CLI run uses; reset() makes them new, at the same paths."""

    def __init__(self, root: Path) -> None:
        self.project, self.home, self.codex_home = root / "project", root / "home", root / "codex-home"
        self.reset()

    def reset(self) -> None:
        for path in (self.project, self.home, self.codex_home):
            shutil.rmtree(path, ignore_errors=True)
        self.project.mkdir()
        (self.project / "README.md").write_text("# demo project\nThe tests read this file.\n")


def play(cli: str, executable: Path, prompts: list[str], sandbox: Sandbox, proxy: Proxy, network: Network) -> list[Run]:
    runs = []
    try:
        for n, prompt in enumerate(prompts):
            if cli == "claude":
                env, argv = claude_env(sandbox.home, proxy, network), claude_argv(executable, prompt, resume=n > 0)
            else:
                env, argv = codex_env(sandbox.home, sandbox.codex_home, proxy, network), codex_argv(executable, prompt, resume=n > 0)
            runs.append(run_cli(argv, env, sandbox.project, network))
            if runs[-1].returncode != 0:
                break
    finally:
        proxy.stop()
    return runs


def final_answer(cli: str, run: Run) -> str:
    if cli == "claude":
        return json.loads(run.stdout)["result"]
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    messages = [e["item"]["text"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]
    return messages[-1] if messages else ""


def the_trajectory(proxy: Proxy) -> Path:
    files = sorted(proxy.traces.glob("trajectory-*.json"))
    assert len(files) == 1, (files, proxy.output()[-3000:])
    return files[0]


@pytest.mark.parametrize(("cli", "name"), CASES, ids=[f"{c}-{n}" for c, n in CASES])
def test_real_cli_reruns_against_the_replay_of_its_capture(cli: str, name: str, tmp_path: Path, network: Network, capsys):
    executable = installed(cli)
    cli = cli.split("-")[0]  # claude-2.1.332 is a Claude Code
    sandbox = Sandbox(tmp_path)
    scenario = (claude_scenarios if cli == "claude" else codex_scenarios)(sandbox.project)[name]

    # Record: the CLI through mitmdump + the addon, in front of the demo upstream.
    (tmp_path / "record").mkdir()
    upstream = network.call(lambda: DemoUpstream().start())
    try:
        recording = Proxy(tmp_path / "record", network, "reverse", upstream.port)
        runs = play(cli, executable, scenario.prompts, sandbox, recording, network)
    finally:
        upstream.stop()
    assert runs[-1].returncode == 0, runs[-1].describe()
    golden = the_trajectory(recording)

    # Replay: no demo upstream; the capture answers, through the same proxy and addon.
    capture = Capture.from_files([recording.flows])
    sandbox.reset()
    (tmp_path / "replay").mkdir()
    replay = network.call(lambda: ReplayServer(capture)).start()
    try:
        proxy = Proxy(tmp_path / "replay", network, "reverse", replay.server_address[1])
        again = play(cli, executable, scenario.prompts, sandbox, proxy, network)
    finally:
        replay.stop()
    misses = [m.message() for m in replay.stats.misses]
    assert again[-1].returncode == 0, f"{again[-1].describe()}\n--- misses\n" + "\n".join(misses)
    assert misses == []
    assert replay.stats.served == len(capture.recorded)  # every recorded request asked again
    assert final_answer(cli, again[-1]) == final_answer(cli, runs[-1]) != ""
    assert agent_lineage(["diff", str(golden), str(the_trajectory(proxy))]) == 0, capsys.readouterr().out

    # A changed prompt: a loud miss naming the field, the CLI fails, and the diff fails.
    changed = [scenario.prompts[0].replace(scenario.prompts[0].split(".")[0], "Do something else", 1), *scenario.prompts[1:]]
    sandbox.reset()
    (tmp_path / "changed").mkdir()
    replay = network.call(lambda: ReplayServer(Capture.from_files([recording.flows]))).start()
    try:
        proxy = Proxy(tmp_path / "changed", network, "reverse", replay.server_address[1])
        failed = play(cli, executable, changed, sandbox, proxy, network)
    finally:
        replay.stop()
    assert replay.stats.missed >= 1
    first = replay.stats.misses[0]
    assert first.where is not None and "Do something else" in str(first.received), first.message()
    assert failed[-1].returncode != 0 or "replay miss" in failed[-1].stdout + failed[-1].stderr, failed[-1].describe()
    files = sorted(proxy.traces.glob("trajectory-*.json"))
    capsys.readouterr()
    assert files and agent_lineage(["diff", str(golden), str(files[0])]) == 1
    assert capsys.readouterr().out.strip()
