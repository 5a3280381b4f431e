"""The framework recordings (tests/fixtures/frameworks): real apps, replayed offline.

Each recording is a real multi-agent app (AutoGen, LlamaIndex, ...) run against a scripted
upstream through `mitmdump -w`, with its truth written inside the app (tools/record_frameworks).
These tests hold what does not depend on how well scopes are inferred: the truth labels the
flows one to one and describes the app it claims to (concurrent sessions, two turns, parallel
and nested delegation); every LLM request is scoped and stamped consistently; the trajectories
validate. How well the inference does on them is printed (`pytest -s`), not asserted here: the
targets live with scripts/score_accuracy and docs/accuracy.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_lineage.offline import read_flows, replay
from agent_lineage.pipeline import Pipeline
from agent_lineage.settings import Settings
from agent_lineage.trajectories import TrajectoryFiles
from agent_lineage.validate import validate_trajectory
from conftest import FIXTURES
from lineage_tools import corpus, scoring

RECORDINGS = sorted((FIXTURES / "frameworks").glob("*.mitm"))
LLM_PATHS = ("/v1/chat/completions", "/v1/responses")


def truth_of(flows_path: Path) -> dict:
    return json.loads(flows_path.with_name(flows_path.stem + ".truth.json").read_text())


def test_there_are_recordings_of_at_least_two_frameworks():
    assert len({truth_of(p)["client"] for p in RECORDINGS}) >= 2


def test_the_recordings_hold_twin_subagents_and_side_requests():
    """Across the corpus: two agents of one session opening with byte-identical requests (one task
    delegated twice at once), and side requests in more than one framework."""
    twins, with_side = 0, set()
    for flows_path in RECORDINGS:
        first_bodies: dict[tuple, list[bytes]] = {}
        for label, flow in zip(truth_of(flows_path)["flows"], read_flows(flows_path)):
            if label["kind"] == "side":
                with_side.add(flows_path.stem)
            elif label["first_request_of_agent"]:
                first_bodies.setdefault((label["root_session_id"], flow.request.content), []).append(label["agent_id"])
        twins += sum(1 for agents in first_bodies.values() if len(agents) > 1)
    assert twins >= 2  # one pair in each session
    assert len(with_side) >= 2


@pytest.mark.parametrize("flows_path", RECORDINGS, ids=lambda p: p.stem)
def test_truth_labels_every_flow_once(flows_path):
    truth = truth_of(flows_path)
    flows = read_flows(flows_path)
    labels = truth["flows"]
    assert len(flows) == len(labels) == truth["summary"]["flows"]
    assert truth["summary"] == corpus.summarize(labels)
    assert [f.request.timestamp_start for f in flows] == sorted(f.request.timestamp_start for f in flows)
    for index, (flow, label) in enumerate(zip(flows, labels)):
        assert (label["index"], label["method"], label["path"]) == (index, flow.request.method, flow.request.path)
        assert flow.client_conn.peername[0] == "127.0.0.1"
        assert flow.response is not None and flow.response.status_code == 200
        assert label["kind"] in ("agent", "side") and label["root_session_id"] is not None
        assert (label["kind"] == "side") == (label["side_type"] is not None) == (label["agent_id"] is None)
    agent_labels = [label for label in labels if label["kind"] == "agent"]
    agents = {(label["root_session_id"], label["agent_id"]) for label in agent_labels}
    assert sum(label["first_request_of_agent"] for label in agent_labels) == len(agents)
    assert all((label["root_session_id"], label["parent_agent_id"]) in agents for label in agent_labels if label["parent_agent_id"])
    assert truth["summary"]["new_turn_starts"] == truth["summary"]["turns"]
    assert all(label["parent_agent_id"] is None for label in agent_labels if label["starts_new_turn"])


@pytest.mark.parametrize("flows_path", RECORDINGS, ids=lambda p: p.stem)
def test_each_app_has_concurrent_sessions_turns_and_delegation(flows_path):
    labels = truth_of(flows_path)["flows"]
    flows = read_flows(flows_path)
    agent_labels = [label for label in labels if label["kind"] == "agent"]
    parent = {(label["root_session_id"], label["agent_id"]): label["parent_agent_id"] for label in agent_labels}

    def depth(agent: tuple) -> int:
        return 0 if parent[agent] is None else 1 + depth((agent[0], parent[agent]))

    spans: dict[tuple, list[float]] = {}
    for label, flow in zip(labels, flows):
        if label["kind"] == "agent":
            span = spans.setdefault((label["root_session_id"], label["agent_id"]), [flow.request.timestamp_start, 0.0])
            span[1] = flow.response.timestamp_end
    siblings: dict[tuple, list[list[float]]] = {}
    for agent, parent_id in parent.items():
        if parent_id is not None:
            siblings.setdefault((agent[0], parent_id), []).append(spans[agent])
    overlapping = [a[0] < b[1] and b[0] < a[1] for group in siblings.values() for i, a in enumerate(group) for b in group[i + 1 :]]
    roots = [label["root_session_id"] for label in labels]
    turns: dict[str, set[int]] = {}
    for label in agent_labels:
        turns.setdefault(label["root_session_id"], set()).add(label["turn_index"])
    assert len(turns) >= 2 and all(len(t) >= 2 for t in turns.values())
    assert any(roots[i] != roots[i + 1] and roots[i] in roots[i + 2 :] for i in range(len(roots) - 2))  # sessions interleave
    assert max(depth(agent) for agent in parent) >= 2  # nested delegation
    assert True in overlapping  # parallel subagents


def system_prompt(body: dict) -> str | None:
    """Chat `messages` or Responses `input`/`instructions`; None for a Responses request chained by
    `previous_response_id`, which carries only its new items."""
    if body.get("previous_response_id"):
        return None
    items = body.get("messages") or (body["input"] if isinstance(body.get("input"), list) else [])
    return (body.get("instructions") or "") + "".join(str(m.get("content")) for m in items if m.get("role") in ("system", "developer"))


@pytest.mark.parametrize("flows_path", RECORDINGS, ids=lambda p: p.stem)
def test_truth_agrees_with_the_system_prompts_on_the_wire(flows_path):
    """A cross-check of the truth written in the app against the wire: within one turn of a
    session, an agent's requests share one system prompt, agents of one name (two researchers)
    share it too, and agents of different names never do."""
    by_agent: dict[tuple, set[str]] = {}
    by_name: dict[tuple, set[str]] = {}
    for label, flow in zip(truth_of(flows_path)["flows"], read_flows(flows_path)):
        prompt = system_prompt(json.loads(flow.request.content))
        if label["kind"] == "agent" and prompt is not None:
            by_agent.setdefault((label["root_session_id"], label["turn_index"], label["agent_id"]), set()).add(prompt)
            by_name.setdefault((label["root_session_id"], label["turn_index"], label["agent_name"]), set()).add(prompt)
    assert all(len(seen) == 1 for seen in by_agent.values())
    assert all(len(seen) == 1 for seen in by_name.values())
    names_of_prompt: dict[tuple, set[str]] = {}
    for (session, turn, name), (prompt,) in by_name.items():
        names_of_prompt.setdefault((session, turn, prompt), set()).add(name)
    assert all(len(names) == 1 for names in names_of_prompt.values())


def replayed(flows_path: Path, out: Path) -> tuple[list, list[Path]]:
    files = TrajectoryFiles(out, replace_existing=True)
    pipeline = Pipeline(Settings(stamp=False), [files])
    calls = replay(read_flows(flows_path), pipeline)
    pipeline.close()
    return calls, files.written


@pytest.mark.parametrize("flows_path", RECORDINGS, ids=lambda p: p.stem)
def test_replay_scopes_and_stamps_every_llm_request(flows_path):
    labels = truth_of(flows_path)["flows"]
    predictions = scoring.predict(flows_path)
    for label, prediction in zip(labels, predictions):
        if label["method"] == "POST" and label["path"].startswith(LLM_PATHS):
            assert prediction.scope is not None, f"#{label['index']} not scoped"
            assert prediction.headers and prediction.headers.get(scoring.SESSION_HEADER), f"#{label['index']} not stamped"
    result = scoring.score(flows_path.stem, labels, predictions)
    assert result.inconsistent_stamps == 0
    print(f"\n{scoring.format_table(['recording', *scoring.COLUMNS], [[result.name, *scoring.row(result)]])}")


@pytest.mark.parametrize("flows_path", RECORDINGS, ids=lambda p: p.stem)
def test_replay_writes_valid_trajectories_of_every_call(flows_path, tmp_path):
    labels = truth_of(flows_path)["flows"]
    calls, written = replayed(flows_path, tmp_path)
    assert len(calls) == sum(1 for label in labels if label["method"] == "POST")
    assert written
    for path in written:
        assert validate_trajectory(json.loads(path.read_text())) == [], path.name
