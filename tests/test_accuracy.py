"""Accuracy is measured, not assumed.

The corpus generator is deterministic and its truth agrees with the flows it wrote; the scorer's
measures are right on hand-made examples; and scope inference meets its targets on a moderate
corpus (every style, ids present and stripped, 8 concurrent sessions) and on the real recordings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_lineage.lineage import PARENT_HEADER, SESSION_HEADER
from agent_lineage.model import Scope
from agent_lineage.offline import read_flows
from conftest import FIXTURES
from lineage_tools import corpus, scoring
from lineage_tools.scoring import PRF, Prediction


def generate(tmp_path: Path, style: str, sessions: int = 8, seed: int = 1, strip_ids: bool = False) -> tuple[Path, dict]:
    flows_path, truth_path = corpus.generate(tmp_path, style, sessions, seed, strip_ids)
    return flows_path, json.loads(truth_path.read_text())


# -- the generator ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strip_ids", [False, True])
def test_the_same_seed_gives_byte_identical_files(tmp_path, strip_ids):
    for style in corpus.STYLES:
        first = corpus.generate(tmp_path / "a", style, 3, 7, strip_ids)
        second = corpus.generate(tmp_path / "b", style, 3, 7, strip_ids)
        for one, other in zip(first, second):
            assert one.read_bytes() == other.read_bytes()
        other_seed, _ = corpus.generate(tmp_path / "c", style, 3, 8, strip_ids)
        assert other_seed.read_bytes() != first[0].read_bytes()


@pytest.mark.parametrize("style", corpus.STYLES)
def test_truth_agrees_with_the_flows_it_labels(tmp_path, style):
    flows_path, truth = generate(tmp_path, style)
    flows = read_flows(flows_path)
    labels = truth["flows"]
    assert len(flows) == len(labels) == truth["summary"]["flows"]
    assert truth["summary"] == corpus.summarize(labels)
    assert [f.request.timestamp_start for f in flows] == sorted(f.request.timestamp_start for f in flows)
    for index, (flow, label) in enumerate(zip(flows, labels)):
        assert (label["index"], label["method"], label["path"]) == (index, flow.request.method, flow.request.path)
        assert flow.client_conn.peername[0] == "127.0.0.1"
    agent_labels = [label for label in labels if label["kind"] == "agent"]
    agents = {(label["root_session_id"], label["agent_id"]) for label in agent_labels}
    # Every agent has one first request, every parent is an agent of the same session, and every
    # session opens exactly as many turns as it has.
    assert sum(label["first_request_of_agent"] for label in agent_labels) == len(agents)
    assert all((label["root_session_id"], label["parent_agent_id"]) in agents for label in agent_labels if label["parent_agent_id"])
    assert truth["summary"]["new_turn_starts"] == truth["summary"]["turns"]
    assert all(label["parent_agent_id"] is None for label in agent_labels if label["starts_new_turn"])
    assert truth["summary"]["sessions"] == 8


@pytest.mark.parametrize("style", corpus.STYLES)
def test_the_corpus_exercises_every_scenario_feature(tmp_path, style):
    flows_path, truth = generate(tmp_path, style)
    flows = read_flows(flows_path)
    labels = truth["flows"]
    agent_labels = [label for label in labels if label["kind"] == "agent"]
    parent = {(label["root_session_id"], label["agent_id"]): label["parent_agent_id"] for label in agent_labels}

    def depth(agent: tuple) -> int:
        return 0 if parent[agent] is None else 1 + depth((agent[0], parent[agent]))

    spans: dict[tuple, list[float]] = {}
    for label, flow in zip(agent_labels, (f for f, label in zip(flows, labels) if label["kind"] == "agent")):
        span = spans.setdefault((label["root_session_id"], label["agent_id"]), [flow.request.timestamp_start, 0.0])
        span[1] = flow.response.timestamp_end
    siblings: dict[tuple, list[list[float]]] = {}
    for agent, parent_id in parent.items():
        if parent_id is not None:
            siblings.setdefault((agent[0], parent_id), []).append(spans[agent])
    overlapping = [a[0] < b[1] and b[0] < a[1] for group in siblings.values() for i, a in enumerate(group) for b in group[i + 1 :]]
    roots = [label["root_session_id"] for label in labels]
    assert max(label["turn_index"] or 0 for label in agent_labels) > 1
    assert max(depth(agent) for agent in parent) >= 2
    assert True in overlapping and False in overlapping  # parallel and sequential subagents
    assert any(label["kind"] == "side" for label in labels)
    assert any(roots[i] != roots[i + 1] and roots[i] in roots[i + 2 :] for i in range(len(roots) - 2))  # sessions interleave
    retried = [f for f in flows if f.response.status_code >= 500]
    assert style == "claude" or retried  # seed 1 happens to give Claude no failure at 8 sessions


def test_stripping_removes_every_identifier_and_keeps_contents_and_truth(tmp_path):
    for style in ("claude", "codex"):
        with_ids, truth = generate(tmp_path, style)
        stripped, stripped_truth = generate(tmp_path, style, strip_ids=True)
        assert stripped_truth["flows"] == truth["flows"]
        for one, other in zip(read_flows(with_ids), read_flows(stripped)):
            names = {name.lower() for name in other.request.headers}
            assert not any(n.startswith(("x-claude-code-", "x-codex-")) for n in names)
            assert not names & {"session-id", "thread-id", "x-openai-subagent", "x-client-request-id"}
            if one.request.method != "POST":
                continue
            body, stripped_body = json.loads(one.request.content), json.loads(other.request.content)
            assert not {"prompt_cache_key", "client_metadata"} & set(stripped_body)
            assert "user_id" not in stripped_body.get("metadata", {})
            for contents in ("messages", "input", "system", "tools"):
                assert stripped_body.get(contents) == body.get(contents)


def test_sdk_traffic_carries_no_identifying_header(tmp_path):
    flows_path, _ = generate(tmp_path, "sdk")
    for flow in read_flows(flows_path):
        names = {name.lower() for name in flow.request.headers}
        assert names <= {
            "host",
            "accept-encoding",
            "connection",
            "authorization",
            "accept",
            "content-type",
            "user-agent",
            "content-length",
        } | {n for n in names if n.startswith("x-stainless-")}


# -- the measures -----------------------------------------------------------------------------------


def close(prf: PRF, precision: float, recall: float, f1: float) -> bool:
    return prf.precision == pytest.approx(precision) and prf.recall == pytest.approx(recall) and prf.f1 == pytest.approx(f1)


def test_bcubed_of_a_perfect_clustering_is_one_whatever_the_labels():
    assert close(scoring.bcubed([("a", 7), ("a", 7), ("b", "x"), ("c", 3)]), 1, 1, 1)


def test_bcubed_of_one_wrong_split():
    # Truth: one cluster of four; one item split off. Precision stays 1; recall: 3 items see 3/4, one sees 1/4.
    result = scoring.bcubed([("a", 1), ("a", 1), ("a", 1), ("a", 2)])
    assert close(result, 1, (3 * 3 / 4 + 1 / 4) / 4, 2 * 0.625 / 1.625)


def test_bcubed_of_one_wrong_merge():
    # Truth: {a, a} and {b}, all predicted together. Recall stays 1; precision: a items 2/3, b 1/3.
    result = scoring.bcubed([("a", 1), ("a", 1), ("b", 1)])
    assert close(result, 5 / 9, 1, 2 * (5 / 9) / (5 / 9 + 1))


def test_binary_scores_positives_and_an_empty_class_as_perfect():
    assert close(scoring.binary([(True, True), (True, False), (False, True), (False, False)]), 0.5, 0.5, 0.5)
    assert close(scoring.binary([(False, False)]), 1, 1, 1)


def test_parent_links_map_predicted_agents_to_the_truth_they_mostly_hold():
    root, child, other = ("s", "main"), ("s", "c1"), ("s", "c2")
    rows = [
        (root, None, "P", None),  # right: a root without parent
        (root, None, "P", None),
        (child, root, "C", "P"),  # right: P stands for the root
        (other, root, "D", None),  # unknown: the child lost its parent
        (other, child, "E", "D"),  # wrong: D stands for c2, the truth says c1
        (root, None, "Q", "P"),  # wrong: a root given a parent
    ]
    verdicts, stands_for = scoring.parent_links(rows)
    assert verdicts == ["right", "right", "right", "unknown", "wrong", "wrong"]
    assert stands_for["P"] == root and stands_for["D"] == other


def scope(session: str, agent: str, parent: str | None, new_turn: bool = False, side: str | None = None) -> Scope:
    return Scope(
        session_id=session, agent_id=agent, parent_id=parent, depth=0 if parent is None else 1, turn=1, new_turn=new_turn, side=side
    )


def label(
    index: int, kind: str, root: str | None, agent: str | None, parent: str | None = None, new_turn: bool = False, method: str = "POST"
) -> dict:
    return {
        "index": index,
        "method": method,
        "path": "/v1/messages",
        "kind": kind,
        "root_session_id": root,
        "agent_id": agent,
        "parent_agent_id": parent,
        "starts_new_turn": new_turn,
    }


def stamped(s: Scope) -> Prediction:
    return Prediction(s, {SESSION_HEADER: s.agent_id, PARENT_HEADER: s.parent_id})


def test_score_of_a_small_session_with_one_of_each_mistake():
    labels = [
        label(0, "side", "R", None, method="HEAD"),
        label(1, "agent", "R", "main", new_turn=True),
        label(2, "agent", "R", "sub", "main"),
        label(3, "agent", "R", "main"),
        label(4, "side", "R", None),
        label(5, "agent", None, "main", new_turn=True),  # a bare SDK call: no session to group
    ]
    predictions = [
        Prediction(None, None),  # the probe went unclaimed
        stamped(scope("S", "S", None, new_turn=True)),
        stamped(scope("S", "X", None)),  # the subagent lost its parent
        stamped(scope("S", "S", None, new_turn=True)),  # a false turn start
        stamped(scope("S", "S", None, side="title")),
        Prediction(scope("T", "T", None, new_turn=True), {SESSION_HEADER: "T", PARENT_HEADER: "stale"}),  # disagrees with its scope
    ]
    result = scoring.score("small", labels, predictions)
    assert result.requests == 6
    # Sessions: R = {0..4}; predicted {1..4} together, the probe alone.
    assert close(result.session, 1, (4 * 4 / 5 + 1 / 5) / 5, 2 * 0.68 / 1.68)
    assert close(result.agent, 1, 1, 1)
    assert (result.parent_right, result.parent_wrong, result.parent_unknown) == (3, 0, 1)
    assert close(result.turn, 2 / 3, 1, 0.8)
    assert close(result.side, 1, 0.5, 2 / 3)
    assert (result.stamped, result.llm_requests, result.inconsistent_stamps) == (5, 5, 1)
    assert scoring.misses(result, scoring.EXACT)
    assert [m.split(":")[0] for m in result.mistakes] == [
        "#0 HEAD /v1/messages",
        "#2 POST /v1/messages",
        "#3 POST /v1/messages",
        "#5 POST /v1/messages",
    ]


# -- the targets ------------------------------------------------------------------------------------

SEEDS = (1, 2, 3)  # one seed can be lucky: a miss that needs two sessions to meet shows up in some seeds only


@pytest.mark.parametrize(
    ("style", "strip_ids"),
    [
        pytest.param(style, strip_ids, id=f"{style}-{'stripped' if strip_ids else 'ids'}")
        for style in corpus.STYLES
        for strip_ids in (False, True)
    ],
)
def test_targets_hold_for_eight_concurrent_sessions(tmp_path, style, strip_ids):
    missed, mistakes = [], []
    for seed in SEEDS:
        flows_path, truth = generate(tmp_path, style, seed=seed, strip_ids=strip_ids)
        result = scoring.score_file(flows_path)
        missed += scoring.misses(result, scoring.target_for(truth, flows_path))
        mistakes += result.mistakes
    assert missed == [], "\n".join(mistakes)


@pytest.mark.parametrize(
    "flows_path", sorted((FIXTURES / "real").glob("*.mitm")) + sorted((FIXTURES / "idless").glob("*.mitm")), ids=lambda p: p.stem
)
def test_real_recordings_meet_their_targets(flows_path):
    result = scoring.score_file(flows_path)
    assert scoring.misses(result, scoring.target_for(scoring.load_truth(flows_path), flows_path)) == [], "\n".join(result.mistakes)
