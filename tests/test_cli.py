"""The `agent-lineage` command line, run in-process: outputs, files and exit codes."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent_lineage import offline
from agent_lineage.cli import ProgressBar, main
from agent_lineage.pipeline import Pipeline
from agent_lineage.settings import Settings
from agent_lineage.trajectories import TrajectoryWriter

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CC_SUBAGENT = FIXTURES / "real" / "cc_c_subagent.mitm"
AGENTS_AS_TOOLS = FIXTURES / "idless" / "oa_b_agents_as_tools.mitm"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def convert(capsys: pytest.CaptureFixture[str], flows: Path, directory: Path) -> Path:
    code, out, _ = run(capsys, "convert", str(flows), "-o", str(directory))
    assert code == 0
    (path,) = out.split()
    return Path(path)


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return path


# -- convert ----------------------------------------------------------------------------------


def test_convert_writes_what_the_live_writer_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = convert(capsys, CC_SUBAGENT, tmp_path / "offline")
    assert path == tmp_path / "offline" / "trajectory-262845dd-f4af-48ab-b1f9-c617cf26c84a.json"

    writer = TrajectoryWriter(tmp_path / "live", 0)
    pipeline = Pipeline(Settings(), [writer])
    offline.replay(offline.read_flows(CC_SUBAGENT), pipeline)
    pipeline.close()
    assert (tmp_path / "live" / path.name).read_bytes() == path.read_bytes()


def test_convert_again_replaces_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = convert(capsys, CC_SUBAGENT, tmp_path).read_bytes()
    convert(capsys, CC_SUBAGENT, tmp_path)
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [first]


def test_convert_several_recordings_and_a_calls_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls = tmp_path / "calls.jsonl"
    calls.write_text("stale line\n")
    code, out, err = run(capsys, "convert", str(CC_SUBAGENT), str(AGENTS_AS_TOOLS), "-o", str(tmp_path / "out"), "--calls", str(calls))
    assert code == 0
    assert len(out.split()) == 2
    assert err.strip() == "17 LLM calls, 2 trajectory files"
    lines = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(lines) == 18  # the 17 calls and Claude Code's HEAD probe
    assert {line["scope"]["side"] for line in lines} == {None, "probe"}


def test_convert_options_reach_the_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "out"
    code, out, _ = run(capsys, "convert", str(FIXTURES / "idless" / "oa_a_two_turns.mitm"), "-o", str(path), "--turn-gap", "0.001")
    assert code == 0
    document = orjson.loads(Path(out.strip()).read_bytes())
    assert len(document["extra"]["agent_lineage"]["turns"]) == 5  # every call opens a turn after any gap


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["convert", "missing.mitm", "-o", "out"], "missing.mitm: no such file"),
        (["convert", "{garbage}", "-o", "out"], "not a saved flow file"),
        (["convert", str(CC_SUBAGENT), "-o", "out", "--harness-file", "{garbage}"], "harness"),
        (["convert", str(CC_SUBAGENT), "-o", "out", "--turn-gap", "0"], "must be > 0"),
        (["convert", str(CC_SUBAGENT)], "the following arguments are required: -o/--output"),
        (["frobnicate"], "invalid choice"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_and_input_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "{garbage}").write_text("this is not a flow file: [1, 2")
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert out == ""


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = ProgressBar("flows.mitm", stream)
        for done in (0, 50, 50, 100):
            bar(done, 100)
        bar.close()
    assert pipe.getvalue() == ""
    frames = terminal.getvalue().split("\r")[1:]
    assert len(frames) == 3  # a repeated percentage is not redrawn
    assert frames[-1] == f"flows.mitm [{'#' * 30}] 100%\n"


# -- validate ---------------------------------------------------------------------------------


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = convert(capsys, CC_SUBAGENT, tmp_path)
    document = orjson.loads(good.read_bytes())
    del document["steps"][1]["message"]
    document["subagent_trajectories"][0]["trajectory_id"] = "elsewhere"
    bad = write(tmp_path / "bad.json", document)
    (tmp_path / "text.json").write_text("not json")

    assert run(capsys, "validate", str(good)) == (0, f"{good}: ok\n", "")
    code, out, _ = run(capsys, "validate", str(good), str(bad), str(tmp_path / "text.json"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{good}: ok"
    assert f'{bad}: steps[1].message: must be present ("" is allowed)' in lines
    assert any(
        line.startswith(f"{bad}: steps[2].observation.results[0].subagent_trajectory_ref[0]: trajectory_id 'a745885e64195937a'")
        for line in lines
    )
    assert lines[-1].startswith(f"{tmp_path / 'text.json'}: not JSON")

    code, _, err = run(capsys, "validate", str(good), str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json" in err


# -- summary ----------------------------------------------------------------------------------


def test_summary_of_a_claude_session_with_a_subagent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = convert(capsys, CC_SUBAGENT, tmp_path)
    code, out, _ = run(capsys, "summary", str(path))
    assert code == 0
    assert out.splitlines() == [
        str(path),
        "session 262845dd…  claude-code 2.1.197",
        "1 turn · 2 agents (1 subagent) · 8 steps · tokens prompt 400, completion 80, cached 0",
        "side requests: probe ×1",
        "main 262845dd… · 4 steps (system 1, user 1, agent 2) · tools Agent ×1 · 1 observation · tokens 200/40/0 (prompt/completion/cached)",  # noqa: E501
        '  turn 1 (steps 1–4): 4 steps (system 1, user 1, agent 2) · tools Agent ×1 · 1 observation · "AW_AGENT delegate this to a subagent"',  # noqa: E501
        "└─ subagent a745885e… via step 3 `Agent` · 4 steps (system 1, user 1, agent 2) · tools Bash ×1 · 1 observation · tokens 200/40/0 (prompt/completion/cached)",  # noqa: E501
        '     task "AW_SUBTASK: use the Bash tool to run `echo from-…"',
    ]


def test_summary_nests_subagents_and_shortens_ids_to_what_tells_them_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = orjson.loads(convert(capsys, AGENTS_AS_TOOLS, tmp_path).read_bytes())
    first, second, *rest = document["subagent_trajectories"]
    for result in document["steps"][3]["observation"]["results"]:
        del result["subagent_trajectory_ref"]  # the ref to `second`, which cannot resolve once it is nested
    second["trajectory_id"] = first["trajectory_id"][:-1] + "X"  # a near twin
    document["subagent_trajectories"] = [first, *rest]
    first["subagent_trajectories"] = [second]  # now nested, and unreferenced
    code, out, _ = run(capsys, "summary", str(write(tmp_path / "nested.json", document)))
    assert code == 0
    lines = out.splitlines()
    assert lines[2].startswith("2 turns · 5 agents (4 subagents)")
    at = next(i for i, line in enumerate(lines) if line.startswith("├─ subagent "))
    assert lines[at].startswith(
        f"├─ subagent {first['trajectory_id']} via step 3 `billing_expert`"
    )  # only the full id tells the twins apart
    assert lines[at + 1].startswith("│    task ")
    assert lines[at + 2].startswith(f"│  └─ subagent {second['trajectory_id']} (delegating call unknown)")
    assert lines[at + 3].startswith("│       task ")
    last = rest[-1]["trajectory_id"]
    assert lines[-2].startswith(f"└─ subagent {last[:14]}… via step 7 `billing_expert`")  # 8 chars after `agent-`


def test_summary_of_an_invalid_file_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "summary", str(write(tmp_path / "bad.json", {"steps": []})))
    assert code == 2
    assert "bad.json is not a valid ATIF trajectory" in err and "agent-lineage validate" in err


# -- diff -------------------------------------------------------------------------------------


@pytest.fixture
def cc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return orjson.loads(convert(capsys, CC_SUBAGENT, tmp_path / "cc").read_bytes())


@pytest.fixture
def agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return orjson.loads(convert(capsys, AGENTS_AS_TOOLS, tmp_path / "oa").read_bytes())


def diff(tmp_path: Path, capsys: pytest.CaptureFixture[str], a: dict[str, Any], b: dict[str, Any], *flags: str) -> tuple[int, list[str]]:
    code, out, err = run(capsys, "diff", str(write(tmp_path / "a.json", a)), str(write(tmp_path / "b.json", b)), *flags)
    assert err == ""
    return code, out.splitlines()


def regenerate_ids(document: dict[str, Any]) -> dict[str, Any]:
    """The same run as another run would record it: other ids, times and latencies."""
    text = orjson.dumps(document).decode()
    for old in {document["session_id"], *(s["trajectory_id"] for s in document.get("subagent_trajectories", []))}:
        text = text.replace(old, f"other-{abs(hash(old))}")
    for token in ("toolu_fake", "call_idl", "2026-11-26T1"):
        text = text.replace(token, token.upper() if token[0] != "2" else "2026-11-27T1")
    other = json.loads(text)
    for step in other["steps"]:
        if "metrics" in step:
            step["metrics"]["extra"]["latency_ms"] += 1000
        if "extra" in step:
            step["extra"]["agent_lineage"]["exchange_id"] = "another"
    return other


def test_diff_ignores_ids_timestamps_and_latencies(tmp_path: Path, capsys: pytest.CaptureFixture[str], agents: dict[str, Any]) -> None:
    code, lines = diff(tmp_path, capsys, agents, regenerate_ids(agents))
    assert code == 0
    assert lines == [f"{tmp_path / 'a.json'} and {tmp_path / 'b.json'} have the same shape"]


def test_diff_finds_a_missing_tool_call(tmp_path: Path, capsys: pytest.CaptureFixture[str], agents: dict[str, Any]) -> None:
    changed = copy.deepcopy(agents)
    step = changed["steps"][6]  # turn 2, two parallel agents-as-tools calls
    dropped = step["tool_calls"].pop()
    step["observation"]["results"] = [r for r in step["observation"]["results"] if r["source_call_id"] != dropped["tool_call_id"]]
    changed["subagent_trajectories"] = [
        s for s in changed["subagent_trajectories"] if s["agent"]["extra"]["parent_tool_call_id"] != dropped["tool_call_id"]
    ]
    code, lines = diff(tmp_path, capsys, agents, changed)
    assert code == 1
    assert lines == [
        "turn 2: step 7 missing tool call `shipping_expert`",
        "turn 2: step 7 tool call `shipping_expert` lost its subagent ref",
        'subagent 3 "Track the parcel for order #50 and give its ETA." missing (was under step 7 of main)',
    ]


def test_diff_finds_a_turn_split_in_two(tmp_path: Path, capsys: pytest.CaptureFixture[str], cc: dict[str, Any]) -> None:
    changed = copy.deepcopy(cc)
    changed["steps"][3]["extra"]["agent_lineage"]["turn"] = 2
    code, lines = diff(tmp_path, capsys, cc, changed)
    assert code == 1
    assert lines == ["turn 1 split in two"]
    code, lines = diff(tmp_path, capsys, changed, cc)
    assert lines == ["turns 1, 2 merged into one"]


def test_diff_finds_a_subagent_under_the_wrong_parent(tmp_path: Path, capsys: pytest.CaptureFixture[str], agents: dict[str, Any]) -> None:
    changed = copy.deepcopy(agents)
    first, second, *rest = changed["subagent_trajectories"]
    for result in changed["steps"][3]["observation"]["results"]:
        del result["subagent_trajectory_ref"]
    first["subagent_trajectories"] = [second]
    changed["subagent_trajectories"] = [first, *rest]
    code, lines = diff(tmp_path, capsys, agents, changed)
    assert code == 1
    assert lines == [
        "turn 1: step 4 tool call `shipping_expert` lost its subagent ref",
        'subagent 2 "Track the parcel for order #40 and give its ETA." attached to the wrong parent '
        '(was under step 4 of main, now under subagent 1 "Check the status of invoice #40 and report any b…", no subagent ref)',
    ]


def test_diff_finds_a_lost_subagent_ref_and_extra_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str], cc: dict[str, Any]) -> None:
    changed = copy.deepcopy(cc)
    del changed["steps"][2]["observation"]["results"][0]["subagent_trajectory_ref"]
    child = changed["subagent_trajectories"][0]
    extra_step = copy.deepcopy(child["steps"][3])
    extra_step["step_id"] = 5
    child["steps"].append(extra_step)
    child["final_metrics"]["total_steps"] = 5
    code, lines = diff(tmp_path, capsys, cc, changed)
    assert code == 1
    assert lines == [
        "turn 1: step 3 tool call `Agent` lost its subagent ref",
        'subagent 1 "AW_SUBTASK: use the Bash tool to run `echo from-…": extra step after step 4 (agent)',
    ]


def test_diff_compares_tokens_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str], cc: dict[str, Any]) -> None:
    changed = copy.deepcopy(cc)
    changed["steps"][3]["metrics"]["prompt_tokens"] = 150
    changed["final_metrics"]["total_prompt_tokens"] = 450
    assert diff(tmp_path, capsys, cc, changed)[0] == 0
    code, lines = diff(tmp_path, capsys, cc, changed, "--tokens")
    assert code == 1
    assert lines == [
        "turn 1: step 4 tokens 100/20/0 (prompt/completion/cached) → 150/20/0 (prompt/completion/cached)",
        "main: total tokens 400/80/0 (prompt/completion/cached) → 450/80/0 (prompt/completion/cached)",
    ]


def test_diff_of_two_different_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str], cc: dict[str, Any]) -> None:
    two_turns = orjson.loads(convert(capsys, FIXTURES / "real" / "cc_d_continue.mitm", tmp_path / "b").read_bytes())
    code, lines = diff(tmp_path, capsys, cc, two_turns)
    assert code == 1
    assert lines == [
        "side requests `probe`: 1 → 2",
        "turn 1: step 3 missing tool call `Agent`",
        "turn 1: step 3 has an extra tool call `Bash`",
        "turn 1: step 3 tool call `Agent` lost its subagent ref",
        "extra turn after turn 1 (3 steps)",
        'subagent 1 "AW_SUBTASK: use the Bash tool to run `echo from-…" missing (was under step 3 of main)',
    ]


# -- the command's own manners ------------------------------------------------------------------


def test_version_and_each_subcommand_says_what_it_does_and_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from agent_lineage import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"agent-lineage {__version__}"
    for command in ("convert", "validate", "summary", "diff", "demo", "addon-path"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0
        assert "exit status: 0 ok" in out and "2 a usage or input error" in out, command


def test_convert_keeps_every_flow_of_a_truncated_file_and_says_where_it_stopped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = CC_SUBAGENT.read_bytes()
    cut = tmp_path / "killed.mitm"
    cut.write_bytes(whole[: len(whole) - 200])  # what a mitmdump killed mid-write leaves
    readable = offline.read_flow_file(cut)
    assert readable.problem and 0 < len(readable.flows) < len(offline.read_flows(CC_SUBAGENT))
    code, out, err = run(capsys, "convert", str(cut), "-o", str(tmp_path / "out"))
    assert code == 0
    assert f"stopped reading at byte {readable.stopped_at} of {len(whole) - 200}" in err
    assert f"kept {len(readable.flows)} flows" in err
    assert len(out.split()) == 1  # the session's trajectory, from the flows before the cut


def test_convert_warns_when_a_file_holds_no_llm_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mitmproxy.io import FlowWriter
    from mitmproxy.test import tflow

    flows = tmp_path / "web.mitm"
    with open(flows, "wb") as f:
        FlowWriter(f).add(tflow.tflow(resp=True))
    code, out, err = run(capsys, "convert", str(flows), "-o", str(tmp_path / "out"))
    assert code == 0 and out == ""
    assert "agent-lineage convert: warning: no LLM call in 1 flow: nothing to write" in err
    assert "0 LLM calls, 0 trajectory files" in err


def test_addon_path_names_the_script_mitmdump_loads(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "addon-path")
    path = Path(out.strip())
    assert code == 0 and path.name == "script.py" and "from agent_lineage.addon import Lineage" in path.read_text()
