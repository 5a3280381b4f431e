"""The real Claude Code and Codex CLIs through `mitmdump -s addons/lineage.py`, in front of the
demo upstream, which drives them with scripts (a shell tool, a file read, one subagent, two in
parallel, a nested one): the lineage the upstream receives, and the trajectories written.

Two kinds of tests:

- `agents` (live): run `claude -p` / `codex exec` for each scenario, in reverse mode (the CLI's
  base URL is the proxy) and, for some scenarios, forward mode (`HTTPS_PROXY` + mitmproxy's CA).
  Skipped when a CLI is not installed: `scripts/install_agents` installs the pinned versions.
- replay (always run, no CLI, fast): the recordings in tests/fixtures/agents/ (flows saved by the
  live runs, `scripts/record_fixtures` re-records them) go through the offline pipeline; the
  Calls must carry the lineage the live addon stamped, that lineage must agree with Dynamo's own
  rule on the CLIs' headers, and the trajectories must have the committed shape.

The CLI, the upstream and mitmdump share a loopback-only network namespace when the tests run as
root (tests/agents_support.py), so the CLIs' start-up traffic to the internet fails at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.offline import read_flows, replay
from agent_lineage.pipeline import Pipeline
from agent_lineage.settings import Settings
from agent_lineage.shape import diff_shapes, shape_of
from agent_lineage.trajectories import TrajectoryFiles
from agent_lineage.validate import validate_trajectory
from agents_support import (
    AGENT_FIXTURES,
    CLAUDE_NEXT_VERSION,
    CLAUDE_VERSION,
    CODEX_DISCOVER,
    CODEX_VERSION,
    FAKE_KEY,
    GEMINI_VERSION,
    OPENCODE_VERSION,
    Network,
    Proxy,
    Run,
    agent_steps,
    check_lineage,
    check_observations,
    check_stamped_lineage,
    claude_agent,
    claude_argv,
    claude_env,
    cli_version,
    codex_argv,
    codex_env,
    codex_spawn,
    copy_if_recording,
    find_cli,
    gemini_agent,
    gemini_argv,
    gemini_done,
    gemini_env,
    load_trajectories,
    native_lineage,
    opencode_argv,
    opencode_env,
    opencode_task,
    run_claude_tui,
    run_cli,
    say,
    script,
    stamped_lineage,
    tool,
    tools,
    trajectory_tree,
    walk_trajectories,
)

# Codex's collaboration tools come from its deferred tool search, in the namespace multi_agent_v1;
# the trajectories name them with it.
SPAWN, WAIT = "multi_agent_v1.spawn_agent", "multi_agent_v1.wait_agent"
CODEX_WAIT_ALL = tool("wait_agent", targets="$outputs.agent_id", timeout_ms=60000)


def codex_wait(n: int) -> str:
    return tool("wait_agent", targets=[f"$outputs.agent_id[{n}]"], timeout_ms=60000)


# --- scenarios -------------------------------------------------------------------------------


@dataclass
class Scenario:
    """What one test makes the CLI do, and what must come of it."""

    prompts: list[str]  # one per CLI invocation; the later ones continue the session
    answer: str  # the CLI's final answer to the last prompt
    tree: list  # the agent tree: [] no subagent, [[]] one, [[], []] two in parallel, [[[]]] nested
    tools: list[str]  # the root agent's tool calls, in order
    turns: int = 1
    subagent_tools: list[list[str]] = field(default_factory=list)  # per subagent, depth first


def claude_scenarios(project: Path, foreground: bool = False) -> dict[str, Scenario]:
    bash = tool("Bash", command="echo tool-ok", description="Print tool-ok")

    def agent(task: str, *steps: str) -> dict:
        return claude_agent(task, *steps, foreground=foreground)

    return {
        "no_tools": Scenario([f"Say hello. {script(say('Hello from Claude.'))}"], "Hello from Claude.", [], []),
        "tool_loop": Scenario(
            [f"Check the project. {script(bash, tool('Read', file_path=str(project / 'README.md')), say('Checked.'))}"],
            "Checked.", [], ["Bash", "Read"],
        ),
        "two_turns": Scenario(
            [f"First question. {script(say('First answer.'))}", f"Second question. {script(bash, say('Second answer.'))}"],
            "Second answer.", [], ["Bash"], turns=2,
        ),
        "subagent": Scenario(
            [f"Delegate. {script(tool('Agent', **agent('Run a command', bash, say('Child done.'))), say('All done.'))}"],
            "All done.", [[]], ["Agent"], subagent_tools=[["Bash"]],
        ),
        "parallel": Scenario(
            [
                "Two at once. "
                + script(
                    tools(
                        ("Agent", agent("First task", say("First done."))),
                        ("Agent", agent("Second task", bash, say("Second done."))),
                    ),
                    say("Both done."),
                )
            ],
            "Both done.", [[], []], ["Agent", "Agent"], subagent_tools=[[], ["Bash"]],
        ),
        "nested": Scenario(
            [
                "Nest. "
                + script(
                    tool("Agent", **agent("Middle task", tool("Agent", **agent("Inner task", bash, say("Inner done."))), say("Middle done."))),  # noqa: E501
                    say("Outer done."),
                )
            ],
            "Outer done.", [[[]]], ["Agent"], subagent_tools=[["Agent"], ["Bash"]],
        ),
    }  # fmt: skip


def claude_interactive() -> Scenario:
    """Two prompts typed into Claude Code's interactive UI: one process, two turns, and the UI's
    own side request (the session title, a structured-output request that quotes the prompt)."""
    return Scenario(
        [f"First question. {script(say('First answer.'))}", f"Second question. {script(say('Second answer.'))}"],
        "Second answer.", [], [], turns=2,
    )  # fmt: skip


def codex_scenarios(project: Path) -> dict[str, Scenario]:
    shell = tool("exec_command", cmd="echo tool-ok")
    return {
        "no_tools": Scenario([f"Say hello. {script(say('Hello from Codex.'))}"], "Hello from Codex.", [], []),
        "tool_loop": Scenario(
            [f"Check the project. {script(shell, tool('exec_command', cmd='cat README.md'), say('Checked.'))}"],
            "Checked.", [], ["exec_command", "exec_command"],
        ),
        "two_turns": Scenario(
            [f"First question. {script(say('First answer.'))}", f"Second question. {script(shell, say('Second answer.'))}"],
            "Second answer.", [], ["exec_command"], turns=2,
        ),
        "subagent": Scenario(
            [
                "Delegate. "
                + script(CODEX_DISCOVER, tool("spawn_agent", **codex_spawn("Run a command", shell, say("Child done."))), CODEX_WAIT_ALL, say("All done."))  # noqa: E501
            ],
            "All done.", [[]], ["tool_search", SPAWN, WAIT], subagent_tools=[["exec_command"]],
        ),
        "parallel": Scenario(
            [
                "Two at once. "
                + script(
                    CODEX_DISCOVER,
                    tools(("spawn_agent", codex_spawn("First task", say("First done."))), ("spawn_agent", codex_spawn("Second task", shell, say("Second done.")))),  # noqa: E501
                    codex_wait(0),
                    codex_wait(1),
                    say("Both done."),
                )
            ],
            "Both done.", [[], []], ["tool_search", SPAWN, SPAWN, WAIT, WAIT],
            subagent_tools=[[], ["exec_command"]],
        ),
        "nested": Scenario(
            [
                "Nest. "
                + script(
                    CODEX_DISCOVER,
                    tool("spawn_agent", **codex_spawn("Middle task", CODEX_DISCOVER, tool("spawn_agent", **codex_spawn("Inner task", shell, say("Inner done."))), CODEX_WAIT_ALL, say("Middle done."))),  # noqa: E501
                    CODEX_WAIT_ALL,
                    say("Outer done."),
                )
            ],
            "Outer done.", [[[]]], ["tool_search", SPAWN, WAIT],
            subagent_tools=[["tool_search", SPAWN, WAIT], ["exec_command"]],
        ),
    }  # fmt: skip


def gemini_scenarios(project: Path) -> dict[str, Scenario]:
    shell = tool("run_shell_command", command="echo tool-ok")
    return {
        "tool_loop": Scenario(
            [f"Check the project. {script(shell, tool('read_file', file_path=str(project / 'README.md')), say('Checked.'))}"],
            "Checked.", [], ["run_shell_command", "read_file"],
        ),
        "two_turns": Scenario(
            [f"First question. {script(say('First answer.'))}", f"Second question. {script(shell, say('Second answer.'))}"],
            "Second answer.", [], ["run_shell_command"], turns=2,
        ),
        "subagent": Scenario(
            [f"Delegate. {script(tool('invoke_agent', **gemini_agent('Run a command', shell, gemini_done('Child done.'))), say('All done.'))}"],  # noqa: E501
            "All done.", [[]], ["invoke_agent"], subagent_tools=[["run_shell_command", "complete_task"]],
        ),
    }  # fmt: skip


def opencode_scenarios(project: Path) -> dict[str, Scenario]:
    bash = tool("bash", command="echo tool-ok", description="Print tool-ok")
    return {
        "tool_loop": Scenario(
            [f"Check the project. {script(bash, tool('read', filePath=str(project / 'README.md')), say('Checked.'))}"],
            "Checked.", [], ["bash", "read"],
        ),
        "two_turns": Scenario(
            [f"First question. {script(say('First answer.'))}", f"Second question. {script(bash, say('Second answer.'))}"],
            "Second answer.", [], ["bash"], turns=2,
        ),
        "subagent": Scenario(
            [f"Delegate. {script(tool('task', **opencode_task('Run a command', bash, say('Child done.'))), say('All done.'))}"],
            "All done.", [[]], ["task"], subagent_tools=[["bash"]],
        ),
        "parallel": Scenario(
            [
                "Two at once. "
                + script(
                    tools(("task", opencode_task("First task", say("First done."))), ("task", opencode_task("Second task", bash, say("Second done.")))),  # noqa: E501
                    say("Both done."),
                )
            ],
            "Both done.", [[], []], ["task", "task"], subagent_tools=[[], ["bash"]],
        ),
    }  # fmt: skip


# A Gemini CLI subagent ends by calling complete_task: its result goes to the parent, no request
# carries it back to the subagent.
GEMINI_UNANSWERED = frozenset({"complete_task"})
SCENARIOS = ["no_tools", "tool_loop", "two_turns", "subagent", "parallel", "nested"]
# Forward mode (HTTPS_PROXY) changes how the CLI connects, not what it says: a tool loop and the
# deepest delegation prove it; the other scenarios run in reverse mode only.
FORWARD_SCENARIOS = ["tool_loop", "nested"]
CASES = [(s, "reverse") for s in SCENARIOS] + [(s, "forward") for s in FORWARD_SCENARIOS]
# Codex with OpenAI's own provider and an API key (no model_providers entry): forward mode only,
# and it talks Responses over a WebSocket (one connection per agent thread).
CODEX_OPENAI_CASES = [("subagent", "forward-openai")]
# The newest Claude Code (a second pinned version) on the scenarios that exercise each kind of
# lineage; the full matrix stays on the version the fixtures were recorded with. (Codex's newest
# is the pinned 0.171.0 itself.)
NEXT_CASES = [("tool_loop", "reverse"), ("two_turns", "reverse"), ("parallel", "reverse"), ("nested", "forward")]
GEMINI_CASES = [("tool_loop", "reverse"), ("two_turns", "reverse"), ("subagent", "reverse")]
OPENCODE_CASES = [("tool_loop", "reverse"), ("two_turns", "reverse"), ("subagent", "reverse"), ("parallel", "reverse")]


# --- running one scenario --------------------------------------------------------------------


@dataclass
class Session:
    cli: str
    mode: str
    scenario: Scenario
    runs: list[Run]
    upstream_requests: list
    proxy: Proxy
    workdir: Path


def installed(name: str) -> Path:
    path = find_cli(name)
    if path is None:
        pytest.skip(f"{name} is not installed: run scripts/install_agents (puts it in ~/.cache/agent-lineage/agents)")
    return path


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network()
    yield net
    net.close()


def play(cli: str, mode: str, name: str, tmp_path: Path, network: Network, version: str | None = None) -> Session:
    """Run one scenario; `version`: a second pinned version of the CLI (`<cli>-<version>`)."""
    executable = installed(f"{cli}-{version}" if version else cli)
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# demo project\nThe tests read this file.\n")
    if name == "interactive":
        if not shutil.which("tmux"):
            pytest.skip("tmux is not installed (it runs Claude Code's interactive UI)")
        scenario = claude_interactive()
    else:
        scenarios = {"claude": claude_scenarios, "codex": codex_scenarios, "gemini": gemini_scenarios, "opencode": opencode_scenarios}[cli]
        scenario = (claude_scenarios(project, foreground=True) if version else scenarios(project))[name]
    upstream = network.call(lambda: DemoUpstream().start())
    # OpenAI's own provider also fetches its model list from chatgpt.com: answered (404) at once.
    hosts = "api.anthropic.com,api.openai.com,chatgpt.com" if mode == "forward-openai" else ""
    proxy = Proxy(tmp_path, network, mode.split("-")[0], upstream.port, redirect_hosts=hosts)
    provider = "openai" if mode == "forward-openai" else "lineage"
    runs = []
    try:
        if name == "interactive":
            env = claude_env(tmp_path / "home", proxy, network)
            answers = ["First answer.", "Second answer."]
            runs.append(run_claude_tui(executable, env, project, network, list(zip(scenario.prompts, answers))))
        for n, prompt in enumerate(scenario.prompts if name != "interactive" else []):
            if cli == "claude":
                env = claude_env(tmp_path / "home", proxy, network)
                argv = claude_argv(executable, prompt, resume=n > 0)
            elif cli == "gemini":
                env = gemini_env(tmp_path / "home", proxy, network)
                argv = gemini_argv(executable, prompt, resume=n > 0)
            elif cli == "opencode":
                env = opencode_env(tmp_path / "home", proxy, network)
                run = run_cli(opencode_argv(executable, resume=n > 0), env, project, network, stdin=prompt)
            else:
                env = codex_env(tmp_path / "home", tmp_path / "codex-home", proxy, network, provider)
                argv = codex_argv(executable, prompt, resume=n > 0)
            if cli != "opencode":
                run = run_cli(argv, env, project, network)
            runs.append(run)
            assert run.returncode == 0, f"{run.describe()}\n--- mitmdump\n{proxy.output()[-3000:]}"
    finally:
        proxy.stop()
        upstream.stop()
    session = Session(cli, mode, scenario, runs, upstream.requests, proxy, tmp_path)
    if os.environ.get("AGENT_LINEAGE_RECORD"):  # scripts/record_fixtures
        meta = {"cli": cli, "version": cli_version(executable), "mode": mode, "scenario": name}
        meta |= {"prompts": scenario.prompts, "tree": scenario.tree, "turns": scenario.turns}
        copy_if_recording(f"{cli}{'-next' if version else ''}_{name}_{mode}", tmp_path, meta)
    return session


def final_answer(session: Session) -> tuple[str, str]:
    """(the CLI's session id, its final answer) from the last run's output."""
    run = session.runs[-1]
    if session.cli == "claude" and run.argv[1:2] != ["-p"]:  # the interactive UI: read the screen
        first = next(r for r in session.upstream_requests if is_llm_request(r))
        answered = session.scenario.answer if f"● {session.scenario.answer}" in run.stdout else run.stdout
        return first.header("x-claude-code-session-id"), answered
    if session.cli == "claude":
        result = json.loads(run.stdout)
        assert result["is_error"] is False, run.describe()
        return result["session_id"], result["result"]
    if session.cli == "gemini":
        result = json.loads(run.stdout[run.stdout.index("{") :])
        return result["session_id"], result["response"]
    if session.cli == "opencode":
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        texts = [e["part"]["text"] for e in events if e["type"] == "text"]
        return events[0]["sessionID"], texts[-1] if texts else ""
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    thread = next(e["thread_id"] for e in events if e["type"] == "thread.started")
    messages = [e["item"]["text"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]
    return thread, messages[-1] if messages else ""


def side_of(call: dict) -> str | None:
    """Why a logged call is a side request (the tracker's verdict, or the probe's own), if it is."""
    return call["side"] or (call.get("scope") or {}).get("side")


def is_llm_request(request) -> bool:
    """An LLM request the upstream received: a POST, or the upgrade of a Responses WebSocket."""
    path = request.path.split("?")[0]
    if request.method == "GET" and (request.header("upgrade") or "").lower() == "websocket":
        return path.endswith("/responses")
    return request.method == "POST" and path.endswith(LLM_PATH_ENDS)


LLM_PATH_ENDS = ("/messages", "/responses", "/chat/completions", ":generateContent", ":streamGenerateContent")


# --- live tests ------------------------------------------------------------------------------


@pytest.mark.agents
@pytest.mark.parametrize("cli", ["claude", "codex"])
@pytest.mark.parametrize(("name", "mode"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_real_cli_through_the_proxy(cli: str, name: str, mode: str, tmp_path: Path, network: Network):
    session = play(cli, mode, name, tmp_path, network)
    with mitmdump_log_on_failure(session):
        check_session(session)


@pytest.mark.agents
@pytest.mark.parametrize(("name", "mode"), CODEX_OPENAI_CASES, ids=[f"{s}-{m}" for s, m in CODEX_OPENAI_CASES])
def test_codex_with_openai_provider_over_websocket(name: str, mode: str, tmp_path: Path, network: Network):
    session = play("codex", mode, name, tmp_path, network)
    with mitmdump_log_on_failure(session):
        upgrades = [r for r in session.upstream_requests if is_llm_request(r)]
        assert upgrades and all(r.method == "GET" and r.header("upgrade") == "websocket" for r in upgrades)
        check_session(session)


@pytest.mark.agents
@pytest.mark.parametrize(("name", "mode"), NEXT_CASES, ids=[f"{s}-{m}" for s, m in NEXT_CASES])
def test_newest_claude_code_through_the_proxy(name: str, mode: str, tmp_path: Path, network: Network):
    session = play("claude", mode, name, tmp_path, network, version=CLAUDE_NEXT_VERSION)
    assert cli_version(installed(f"claude-{CLAUDE_NEXT_VERSION}")) == CLAUDE_NEXT_VERSION
    with mitmdump_log_on_failure(session):
        check_session(session)


@pytest.mark.agents
@pytest.mark.parametrize(("name", "mode"), GEMINI_CASES, ids=[f"{s}-{m}" for s, m in GEMINI_CASES])
def test_gemini_cli_through_the_proxy(name: str, mode: str, tmp_path: Path, network: Network):
    session = play("gemini", mode, name, tmp_path, network)
    with mitmdump_log_on_failure(session):
        check_session(session)


@pytest.mark.agents
@pytest.mark.parametrize(("name", "mode"), OPENCODE_CASES, ids=[f"{s}-{m}" for s, m in OPENCODE_CASES])
def test_opencode_through_the_proxy(name: str, mode: str, tmp_path: Path, network: Network):
    session = play("opencode", mode, name, tmp_path, network)
    with mitmdump_log_on_failure(session):
        check_session(session)
        # Its session title comes from a tool-less request on the root session (x-session-id).
        titles = [c for c in session.proxy.read_calls() if side_of(c) == "title"]
        assert len(titles) == len(session.runs) - (1 if name == "two_turns" else 0), [side_of(c) for c in session.proxy.read_calls()]


@pytest.mark.agents
def test_claude_interactive_ui_title_is_a_side_request(tmp_path: Path, network: Network):
    session = play("claude", "reverse", "interactive", tmp_path, network)
    with mitmdump_log_on_failure(session):
        check_session(session)
        # The UI titles the session with a tool-less structured-output request quoting the prompt:
        # the upstream answered it with a title, the addon kept it in the session, not as a step.
        titles = [c for c in session.proxy.read_calls() if side_of(c) == "title"]
        assert len(titles) == 1, [side_of(c) for c in session.proxy.read_calls()]
        assert json.loads(titles[0]["response"]["output"]["text"]) == {"title": "First question."}


@contextlib.contextmanager
def mitmdump_log_on_failure(session: Session) -> Iterator[None]:
    try:
        yield
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- mitmdump log (tail)\n{session.proxy.output()[-4000:]}") from None


def check_session(session: Session) -> None:
    scenario = session.scenario
    cli_session, answer = final_answer(session)
    assert answer == scenario.answer, session.runs[-1].describe()

    # Lineage: every LLM request the upstream received, per the rule and per Dynamo's own reading.
    llm = [r for r in session.upstream_requests if is_llm_request(r)]
    assert llm, "the upstream received no LLM request"
    if session.cli == "gemini":  # no ids of its own on the wire: only our stamps to check
        # The router's request (no tools) comes before the prompt it scores: before the proxy
        # knows that prompt's agent, so it goes unstamped, or stamped with a known agent.
        report = check_stamped_lineage([r.headers for r in llm if (r.json or {}).get("tools")])
        for r in llm:
            assert (r.json or {}).get("tools") or stamped_lineage(r.headers)[0] in (None, *report.parents), r.headers
    else:
        report = check_lineage([r.headers for r in llm])
    assert report.tree() == scenario.tree, report.parents
    root = next(agent for agent, parent in report.parents.items() if parent is None)

    # Calls: side requests are marked; every call belongs to this session. `claude -p` and
    # `codex exec` send no LLM side request (Claude's HEAD / probe is one, but no LLM call); the
    # interactive UI sends its title request.
    calls = session.proxy.read_calls()
    agent_calls = [c for c in calls if c["api"] != "http" and not side_of(c)]
    llm_side = [side_of(c) for c in calls if c["api"] != "http" and side_of(c)]
    if session.cli == "gemini":
        # Its model router scores every prompt of an agent (the user's, a subagent's task).
        assert llm_side and set(llm_side) == {"routing"}, llm_side
        assert len(agent_calls) + len(llm_side) == len(llm)
    elif session.cli == "opencode":
        assert llm_side and set(llm_side) == {"title"}, llm_side
        assert len(agent_calls) + len(llm_side) == len(llm)
    elif session.mode == "forward-openai":
        # Over a WebSocket every `response.create` is a call; each agent's connection starts with
        # a cache-warming one (`generate: false`), a side request.
        assert llm_side == ["prefill"] * len(report.parents)
    else:
        assert llm_side == (["title"] if session.runs[-1].argv[1:2] not in (["-p"], ["exec"]) else [])
        assert len(agent_calls) + len(llm_side) == len(llm)
    for call in calls:
        assert call["scope"]["session_id"] == root, call["scope"]
    steps_per_agent = Counter(c["scope"]["agent_id"] for c in agent_calls)

    # Trajectories: one file for the CLI session, valid, with the right turns, steps and subagents.
    trajectories = load_trajectories(session.proxy.traces)
    assert list(trajectories) == [root], list(trajectories)
    if session.cli != "gemini":  # Gemini CLI's session id never reaches the wire
        assert root == cli_session  # the ids are the CLI's own (README), so the file is named by it
        assert (session.proxy.traces / f"trajectory-{cli_session}.json").exists()
    document = trajectories[root]
    assert validate_trajectory(document) == []
    check_trajectory(document, scenario, steps_per_agent, GEMINI_UNANSWERED if session.cli == "gemini" else frozenset())
    # Side requests are not steps: the steps are exactly the agent calls.
    assert sum(len(agent_steps(t)) for _, t in walk_trajectories(document)) == len(agent_calls)


def check_trajectory(document: dict, scenario: Scenario, calls_per_agent: dict[str, int], unanswered: frozenset[str]) -> None:
    assert trajectory_tree(document) == scenario.tree
    user_steps = [s for s in document["steps"] if s["source"] == "user"]
    assert len(user_steps) == scenario.turns, [s.get("message", "")[:80] for s in user_steps]
    check_observations(document, unanswered)
    agents = walk_trajectories(document)
    tool_names = [[c["function_name"] for s in agent_steps(t) for c in s.get("tool_calls") or []] for _, t in agents]
    assert tool_names[0] == scenario.tools
    assert sorted(tool_names[1:]) == sorted(scenario.subagent_tools)  # parallel ones start in any order
    # One agent step per LLM call of that agent (subagent trajectories are named by their agent id).
    for depth, t in agents:
        agent = document["session_id"] if depth == 0 else t["trajectory_id"]
        assert len(agent_steps(t)) == calls_per_agent.get(agent), (agent, calls_per_agent)
    final = agent_steps(document)[-1]
    assert final["message"] == scenario.answer and not final.get("tool_calls")


# --- replaying the recordings ----------------------------------------------------------------

RECORDINGS = sorted(p.name for p in AGENT_FIXTURES.glob("*") if (p / "flows.mitm").exists())


def replay_recording(directory: Path, out: Path) -> tuple[list, list]:
    """The recording's saved flows through the offline pipeline: (flows, Calls); trajectories in out."""
    flows = read_flows(directory / "flows.mitm")
    files = TrajectoryFiles(out, replace_existing=True)
    pipeline = Pipeline(Settings(stamp=False), [files])
    calls = replay(flows, pipeline)
    pipeline.close()
    return flows, calls


@pytest.mark.skipif(not RECORDINGS, reason="no recordings in tests/fixtures/agents (scripts/record_fixtures)")
@pytest.mark.parametrize("name", RECORDINGS or ["none"])
def test_recorded_session_replays_to_the_same_lineage_and_trajectories(name: str, tmp_path: Path):
    directory = AGENT_FIXTURES / name
    meta = json.loads((directory / "meta.json").read_text())
    flows, calls = replay_recording(directory, tmp_path)

    # The saved flows hold the requests as forwarded: the CLI's own headers and our stamps. Where
    # the client sends its own ids (Claude Code, Codex), Dynamo's reading of them must agree.
    # In request order: the file holds flows as they completed (a subagent's WebSocket before its parent's).
    llm_flows = sorted((f for f in flows if is_llm_flow(f)), key=lambda f: f.request.timestamp_start)
    assert llm_flows
    headers = [list(f.request.headers.items()) for f in llm_flows]
    if all(native_lineage(h)[0] for h in headers):
        report = check_lineage(headers)
        assert report.tree() == meta["tree"]

    # Offline, the same Calls get the same scopes the live addon stamped (a WebSocket's calls,
    # `<flow id>/<n>`, the scope stamped on its upgrade).
    stamped = {f.id: (f.request.headers.get("x-dynamo-session-id"), f.request.headers.get("x-dynamo-parent-session-id")) for f in llm_flows}
    scoped = {}
    for call in calls:
        flow_id = call.exchange_id.split("/")[0]
        if flow_id in stamped:
            if stamped[flow_id] == (None, None) and call.scope.side:
                # A side request forwarded before the proxy knew its session (Gemini CLI's router
                # scores a prompt first) goes unstamped, and joins its session in the record.
                scoped[flow_id] = stamped[flow_id]
                continue
            assert (call.scope.agent_id, call.scope.parent_id) == stamped[flow_id], call.exchange_id
            scoped[flow_id] = stamped[flow_id]
    assert scoped == stamped

    # And the same trajectories: valid, and of the committed shape (tokens included).
    committed = load_trajectories(directory / "traces")
    replayed = load_trajectories(tmp_path)
    assert list(replayed) == list(committed)
    for session_id, document in replayed.items():
        assert validate_trajectory(document) == []
        assert diff_shapes(shape_of(committed[session_id]), shape_of(document), tokens=True) == []
        assert trajectory_tree(document) == meta["tree"]
        assert len([s for s in document["steps"] if s["source"] == "user"]) == meta["turns"]
        check_observations(document, GEMINI_UNANSWERED if meta["cli"] == "gemini" else frozenset())


def is_llm_flow(flow) -> bool:
    """A saved LLM request: a POST, or the upgrade of a Responses WebSocket."""
    path = flow.request.path.split("?")[0]
    if flow.websocket is not None:
        return path.endswith("/responses")
    return flow.request.method == "POST" and path.endswith(LLM_PATH_ENDS)


def test_recordings_cover_both_clis_and_all_scenarios():
    """The committed recordings are the ones scripts/record_fixtures makes, with the pinned CLIs,
    and the addon kept the (fake) API key out of every saved LLM flow."""
    if not RECORDINGS:
        pytest.skip("no recordings in tests/fixtures/agents (scripts/record_fixtures)")
    expected = {f"{cli}_{s}_{m}" for cli in ("claude", "codex") for s, m in CASES}
    expected |= {"claude_interactive_reverse"} | {f"codex_{s}_{m}" for s, m in CODEX_OPENAI_CASES}
    expected |= {f"gemini_{s}_{m}" for s, m in GEMINI_CASES} | {f"opencode_{s}_{m}" for s, m in OPENCODE_CASES}
    assert expected <= set(RECORDINGS), sorted(expected - set(RECORDINGS))  # others: captured by hand
    for name in sorted(expected):
        meta = json.loads((AGENT_FIXTURES / name / "meta.json").read_text())
        versions = {"claude": CLAUDE_VERSION, "codex": CODEX_VERSION, "gemini": GEMINI_VERSION, "opencode": OPENCODE_VERSION}
        assert meta["version"] == versions[meta["cli"]]
    for name in RECORDINGS:
        for flow in filter(is_llm_flow, read_flows(AGENT_FIXTURES / name / "flows.mitm")):
            assert FAKE_KEY not in str(list(flow.request.headers.items())), (name, flow.request.path)


def test_no_saved_flow_keeps_an_api_key():
    if not RECORDINGS:
        pytest.skip("no recordings in tests/fixtures/agents (scripts/record_fixtures)")
    leaks = [
        (name, flow.request.path)
        for name in RECORDINGS
        for flow in read_flows(AGENT_FIXTURES / name / "flows.mitm")
        if FAKE_KEY in str(list(flow.request.headers.items()))
    ]
    assert leaks == []


# --- the demo upstream speaks what these CLIs accept (no CLI needed) -------------------------


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoUpstream]:
    with DemoUpstream() as server:
        yield server


def post(demo: DemoUpstream, path: str, body: dict) -> dict | list[dict]:
    """The JSON reply, or the data of every SSE event of a streamed one."""
    response = httpx.post(demo.base_url + path, json=body, timeout=10)
    if not body.get("stream"):
        return response.json() | {"_status": response.status_code}
    assert response.status_code == 200, response.text
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]


CODEX_TOOLS = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
    {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
    {"type": "tool_search", "execution": "client", "parameters": {"type": "object"}},
]
NAMESPACE = {
    "type": "tool_search_output",
    "call_id": "call_ts",
    "status": "completed",
    "execution": "client",
    "tools": [
        {
            "type": "namespace",
            "name": "multi_agent_v1",
            "tools": [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in ("spawn_agent", "wait_agent")],
        }
    ],
}


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def test_upstream_answers_codex_tool_search_namespaces_and_custom_tools(demo: DemoUpstream):
    prompt = user(script(CODEX_DISCOVER, tool("spawn_agent", message="go"), tool("apply_patch", input="*** Begin Patch\n"), say("ok")))
    body = {"model": "gpt-5.5", "tools": CODEX_TOOLS, "input": [prompt], "stream": True}
    events = post(demo, "/v1/responses", body)
    # The deferred tool search is its own item type, arriving whole; its arguments are an object.
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    item = events[-1]["response"]["output"][0]
    assert item["type"] == "tool_search_call" and item["execution"] == "client"
    assert item["arguments"] == {"query": "spawn agent", "limit": 8} and events[2]["item"]["status"] == "in_progress"

    # Once the search returned the namespace, spawn_agent is a function call in that namespace.
    history = [prompt, item, NAMESPACE | {"call_id": item["call_id"]}]
    spawned = post(demo, "/v1/responses", body | {"input": history})[-1]["response"]["output"][0]
    assert spawned["type"] == "function_call" and spawned["namespace"] == "multi_agent_v1"
    assert spawned["name"] == "spawn_agent" and json.loads(spawned["arguments"]) == {"message": "go"}

    # A custom (freeform) tool gets a custom_tool_call whose input streams as text.
    history += [spawned, {"type": "function_call_output", "call_id": spawned["call_id"], "output": "{}"}]
    events = post(demo, "/v1/responses", body | {"input": history})
    patch = events[-1]["response"]["output"][0]
    assert patch["type"] == "custom_tool_call" and patch["input"] == "*** Begin Patch\n"
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == patch["input"]
    assert any(e["type"] == "response.custom_tool_call_input.done" for e in events)
    # Without declarations (plain Responses clients) tools stay function calls, as before.
    plain = post(demo, "/v1/responses", {"model": "m", "input": script(tool("tool_search", query="x"))})
    assert plain["output"][0]["type"] == "function_call"


def test_upstream_fills_in_the_outputs_of_earlier_tool_calls(demo: DemoUpstream):
    spawn = ("spawn_agent", codex_spawn("a", say("one")))
    prompt = user(script(tools(spawn, spawn), codex_wait(1), CODEX_WAIT_ALL, say("done")))
    first = post(demo, "/v1/responses", {"model": "m", "input": [prompt]})["output"]
    outputs = [
        {"type": "function_call_output", "call_id": c["call_id"], "output": json.dumps({"agent_id": f"thread-{n}", "nickname": "x"})}
        for n, c in enumerate(first)
    ]
    history = [prompt, *first, *outputs]
    wait_one = post(demo, "/v1/responses", {"model": "m", "input": history})["output"][0]
    assert json.loads(wait_one["arguments"]) == {"targets": ["thread-1"], "timeout_ms": 60000}
    history += [wait_one, {"type": "function_call_output", "call_id": wait_one["call_id"], "output": '{"status": {}}'}]
    wait_all = post(demo, "/v1/responses", {"model": "m", "input": history})["output"][0]
    assert json.loads(wait_all["arguments"])["targets"] == ["thread-0", "thread-1"]
    # An index past the results is a script error (HTTP 400), not a silent null.
    bad = user(script(tool("wait_agent", targets=["$outputs.agent_id[5]"])))
    assert post(demo, "/v1/responses", {"model": "m", "input": [bad]})["_status"] == 400


def test_upstream_answers_claude_side_requests(demo: DemoUpstream):
    # The quota probe: max_tokens 1, "test".
    probe = post(demo, "/v1/messages", {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "test"}]})
    assert probe["stop_reason"] == "max_tokens" and probe["usage"]["output_tokens"] == 1
    assert len(probe["content"][0]["text"]) <= 4
    # The title request quotes the prompt, script and all: it gets a title, not the script's step.
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    quoted = f"<session>\nFix the bug. {script(tool('Bash', command='ls'))}\n</session>\n\nWrite the title."
    title = post(
        demo,
        "/v1/messages",
        {
            "model": "m",
            "max_tokens": 64000,
            "stream": True,
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
            "messages": [{"role": "user", "content": [{"type": "text", "text": quoted}]}],
        },
    )
    text = "".join(e["delta"]["text"] for e in title if e["type"] == "content_block_delta")
    assert json.loads(text) == {"title": "Fix the bug."}
    assert title[-2]["delta"]["stop_reason"] == "end_turn"
    # The same for Codex's title (Responses text.format) and Chat's response_format.
    codex_title = post(
        demo,
        "/v1/responses",
        {"model": "m", "input": "Name it", "text": {"format": {"type": "json_schema", "name": "codex_output_schema", "schema": schema}}},
    )
    assert json.loads(codex_title["output"][0]["content"][0]["text"]) == {"title": "Name it"}
    chat = post(
        demo,
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Rate it"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "r",
                    "schema": {"type": "object", "properties": {"score": {"type": "integer"}, "ok": {"type": "boolean"}}},
                },
            },
        },
    )
    assert json.loads(chat["choices"][0]["message"]["content"]) == {"score": 0, "ok": False}
    # HEAD / (Claude's connectivity probe) and count_tokens.
    assert httpx.head(demo.base_url + "/", timeout=10).status_code == 200
    count = post(demo, "/v1/messages/count_tokens", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert count["input_tokens"] > 0


def test_upstream_serves_responses_over_a_websocket(demo: DemoUpstream):
    from websockets.sync.client import connect

    url = demo.base_url.replace("http://", "ws://") + "/v1/responses"
    with connect(url, additional_headers={"thread-id": "t-1"}, max_size=None) as ws:
        # Codex warms the cache first (`generate: false`): a response without output.
        ws.send(json.dumps({"type": "response.create", "model": "m", "generate": False, "input": [user("hi")]}))
        warm = [json.loads(ws.recv()) for _ in range(3)]
        assert [e["type"] for e in warm] == ["response.created", "response.in_progress", "response.completed"]
        assert warm[-1]["response"]["output"] == []
        request = {"type": "response.create", "model": "m", "tools": CODEX_TOOLS, "input": [user(script(CODEX_DISCOVER, say("ok")))]}
        ws.send(json.dumps(request) + " " * 70000)  # a large message: 64-bit length, masked
        events = []
        while not events or events[-1]["type"] != "response.completed":
            events.append(json.loads(ws.recv()))
        assert events[-1]["response"]["output"][0]["type"] == "tool_search_call"
        ws.ping(b"still there?").wait(5)
    assert demo.requests[-1].header("thread-id") == "t-1" and demo.requests[-1].method == "GET"
