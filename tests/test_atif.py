"""TrajectoryBuilder (Calls -> ATIF v1.7) and validate_trajectory, on hand-built calls and on real recordings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent_lineage import offline
from agent_lineage.atif import TrajectoryBuilder, agent_identity, iso_timestamp
from agent_lineage.model import Call, Message, Response, Scope, ToolCall, ToolResult, Usage
from agent_lineage.pipeline import Pipeline
from agent_lineage.settings import Settings
from agent_lineage.validate import validate_trajectory

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = "sess-1"
T0 = 1_795_690_000.0


# -- building calls -------------------------------------------------------------------------


def agent_call(
    n: int,
    *,
    agent: str = ROOT,
    parent: str | None = None,
    session: str = ROOT,
    turn: int = 1,
    new_turn: bool = False,
    user: str | None = None,
    new_messages: list[Message] | None = None,
    results: list[tuple[str, str]] = (),  # type: ignore[assignment]
    tools: list[tuple[str, str, dict]] = (),  # type: ignore[assignment]
    text: str = "ok",
    system: str = "You are a coding agent.",
    usage: Usage | None = None,
    error: str | None = None,
    side: str | None = None,
    delegated_by: str | None = None,
    delegations: dict[str, str] | None = None,
    client_name: str | None = "claude-code",
    user_agent: str = "claude-cli/2.1.197 (external, sdk-cli)",
    t: float | None = None,
) -> Call:
    """A finished LLM call, scoped as the tracker would scope it."""
    t_start = T0 + n if t is None else t
    messages = list(new_messages or [])
    if results:
        messages.append(Message("user", tool_results=[ToolResult(i, c) for i, c in results]))
    if user is not None:
        messages.append(Message("user", text=user))
    output = None
    if error is None:
        output = Message("assistant", text=text, tool_calls=[ToolCall(i, name, json.dumps(args)) for i, name, args in tools])
    depth = 0 if parent is None else (1 if parent == session else 2)
    return Call(
        exchange_id=f"ex-{n}",
        api="anthropic-messages",
        path="/v1/messages",
        client=f"127.0.0.1 {user_agent}",
        headers={"user-agent": user_agent},
        t_start=t_start,
        model="claude-test",
        system=system,
        messages=messages,
        status=500 if error else 200,
        response=Response(
            model="claude-test-1" if error is None else None,
            output=output,
            usage=usage if usage is not None else (Usage() if error else Usage(100, 20, 60, 10)),
            stop_reason=("tool_use" if tools else "end_turn") if error is None else None,
        ),
        error=error,
        t_first_byte=None if error else t_start + 0.25,
        t_end=t_start + 0.5,
        new_messages=messages,
        scope=Scope(
            session_id=session,
            agent_id=agent,
            parent_id=parent,
            depth=depth,
            turn=turn,
            new_turn=new_turn,
            side=side,
            client_name=client_name,
            delegated_by=delegated_by,
            delegations=delegations or {},
            evidence={"agent": "test"},
        ),
    )


def build(calls: list[Call]) -> dict[str, dict[str, Any]]:
    """Every session's trajectory, checked valid and laid out exactly as orjson's OPT_INDENT_2."""
    builder = TrajectoryBuilder()
    for call in calls:
        builder.add(call)
    documents = {}
    for session_id in builder.session_ids():
        raw = builder.render(session_id)
        document = orjson.loads(raw)
        assert raw == orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        assert validate_trajectory(document) == []
        documents[session_id] = document
    return documents


def only(calls: list[Call]) -> dict[str, Any]:
    (document,) = build(calls).values()
    return document


def sources(trajectory: dict[str, Any]) -> list[str]:
    return [s["source"] for s in trajectory["steps"]]


def subagent(trajectory: dict[str, Any], agent_id: str) -> dict[str, Any]:
    return next(s for s in trajectory["subagent_trajectories"] if s["trajectory_id"] == agent_id)


def results_of(step: dict[str, Any]) -> list[dict[str, Any]]:
    return step.get("observation", {}).get("results", [])


def lineage(trajectory: dict[str, Any]) -> dict[str, Any]:
    return trajectory["extra"]["agent_lineage"]


def nulls(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{path}[{i}]")]
    return []


# -- steps ------------------------------------------------------------------------------------


def test_fresh_user_input_is_a_user_step_and_a_tool_continuation_is_not() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="fix the test", tools=[("t1", "Bash", {"command": "pytest"})]),
            agent_call(2, results=[("t1", "1 failed")], text="Fixed."),
        ]
    )
    assert sources(doc) == ["system", "user", "agent", "agent"]
    assert [s["step_id"] for s in doc["steps"]] == [1, 2, 3, 4]
    assert doc["steps"][0]["message"] == "You are a coding agent."
    assert doc["steps"][1]["message"] == "fix the test"
    assert doc["steps"][2]["tool_calls"] == [{"tool_call_id": "t1", "function_name": "Bash", "arguments": {"command": "pytest"}}]
    assert results_of(doc["steps"][2]) == [{"source_call_id": "t1", "content": "1 failed"}]
    assert doc["steps"][3]["message"] == "Fixed."
    assert "observation" not in doc["steps"][3]


def test_a_new_turn_takes_the_last_fresh_user_message() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="first"),
            agent_call(
                2,
                turn=2,
                new_turn=True,
                new_messages=[
                    Message("assistant", text="done"),
                    Message("user", text="<environment_context>cwd</environment_context>"),
                    Message("user", text="second question"),
                    Message("system", text="mid-conversation reminder"),
                ],
            ),
            agent_call(3, turn=2, new_messages=[Message("user", text="not a turn: no new_turn")]),
        ]
    )
    assert sources(doc) == ["system", "user", "agent", "user", "agent", "agent"]
    assert doc["steps"][3]["message"] == "second question"
    assert [t["turn"] for t in lineage(doc)["turns"]] == [1, 2]
    assert lineage(doc)["turns"][1] == {"turn": 2, "timestamp": iso_timestamp(T0 + 2), "trajectory_id": ROOT, "step_id": 4}


def test_a_system_step_only_when_the_prompt_changes() -> None:
    billing = "x-anthropic-billing-header: cc_version=2.1.197.{}; cc_entrypoint=sdk-cli;\nYou are Claude Code."
    doc = only(
        [
            agent_call(1, new_turn=True, user="hi", system=billing.format("bf2")),
            agent_call(2, system=billing.format("c04")),  # only the billing line differs
            agent_call(3, system="You are Claude Code, now with a different prompt."),
        ]
    )
    assert sources(doc) == ["system", "user", "agent", "agent", "system", "agent"]
    assert doc["steps"][4]["message"] == "You are Claude Code, now with a different prompt."


def test_agent_step_fields_metrics_and_lineage() -> None:
    call = agent_call(
        1,
        new_turn=True,
        user="hi",
        usage=Usage(input_tokens=1000, output_tokens=50, cache_read_tokens=800, cache_write_tokens=100, reasoning_tokens=30),
    )
    call.response.output.reasoning = "think first"
    call.fields["reasoning"] = {"effort": "medium"}
    step = only([call])["steps"][2]
    assert step["model_name"] == "claude-test-1"
    assert step["reasoning_effort"] == "medium"
    assert step["reasoning_content"] == "think first"
    assert step["llm_call_count"] == 1
    assert step["timestamp"] == iso_timestamp(T0 + 1)
    assert step["timestamp"].endswith("Z") and len(step["timestamp"].split(".")[1]) == 4
    assert step["metrics"] == {
        "prompt_tokens": 1000,
        "completion_tokens": 50,
        "cached_tokens": 800,
        "extra": {"cache_creation_input_tokens": 100, "reasoning_tokens": 30, "latency_ms": 500, "ttft_ms": 250},
    }
    assert step["extra"]["agent_lineage"] == {
        "exchange_id": "ex-1",
        "api": "anthropic-messages",
        "path": "/v1/messages",
        "status": 200,
        "stop_reason": "end_turn",
        "turn": 1,
        "new_turn": True,
        "session_id": ROOT,
        "agent_id": ROOT,
        "evidence": {"agent": "test"},
    }


def test_parallel_tool_calls_get_one_result_each_in_call_order() -> None:
    doc = only(
        [
            agent_call(
                1,
                new_turn=True,
                user="compare",
                tools=[("a", "Read", {"path": "x"}), ("b", "Read", {"path": "y"}), ("a", "Read", {"path": "x"})],
            ),
            agent_call(2, results=[("b", "Y"), ("a", "X")]),
            agent_call(3, results=[("a", "X"), ("b", "Y")]),  # history resent: nothing changes
        ]
    )
    step = doc["steps"][2]
    assert [c["tool_call_id"] for c in step["tool_calls"]] == ["a", "b"]  # the repeated id is dropped
    assert results_of(step) == [{"source_call_id": "a", "content": "X"}, {"source_call_id": "b", "content": "Y"}]


def test_an_error_result_is_marked() -> None:
    call = agent_call(2, results=[("t1", "boom")])
    call.new_messages[0].tool_results[0].is_error = True
    doc = only([agent_call(1, new_turn=True, user="go", tools=[("t1", "Bash", {})]), call])
    assert results_of(doc["steps"][2]) == [{"source_call_id": "t1", "content": "boom", "extra": {"is_error": True}}]


def test_unknown_tool_results_are_recorded_not_dropped() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="go"),
            agent_call(2, results=[("ghost", "?")]),
            agent_call(3, agent="child", parent=ROOT, user="task"),
            agent_call(4, agent="child", parent=ROOT, results=[("phantom", "?")]),
        ]
    )
    assert lineage(doc)["unmatched_tool_results"] == [{"source_call_id": "ghost", "exchange_id": "ex-2"}]
    assert lineage(subagent(doc, "child")) == {"unmatched_tool_results": [{"source_call_id": "phantom", "exchange_id": "ex-4"}]}


def test_a_forked_child_resending_its_parents_history_adds_nothing_unmatched() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="go", tools=[("p1", "Bash", {})]),
            agent_call(2, results=[("p1", "out")], tools=[("spawn", "spawn_agent", {"task": "sub"})]),
            agent_call(3, agent="fork", parent=ROOT, results=[("p1", "out")], user="sub", delegated_by="spawn"),
        ]
    )
    assert "extra" not in subagent(doc, "fork")
    assert results_of(doc["steps"][2]) == [{"source_call_id": "p1", "content": "out"}]


def test_a_failed_call_is_an_agent_step_without_metrics() -> None:
    doc = only([agent_call(1, new_turn=True, user="hi", error="HTTP 500: overloaded")])
    step = doc["steps"][2]
    assert step["source"] == "agent" and step["message"] == ""
    assert "metrics" not in step and "tool_calls" not in step
    assert step["extra"]["agent_lineage"]["error"] == "HTTP 500: overloaded"
    assert step["extra"]["agent_lineage"]["status"] == 500
    assert doc["final_metrics"]["total_prompt_tokens"] == 0


# -- subagents --------------------------------------------------------------------------------


def test_a_subagent_is_embedded_under_its_parent_with_a_resolving_ref() -> None:
    delegate = ("t-agent", "Agent", {"prompt": "count the files"})
    calls = [
        agent_call(1, new_turn=True, user="delegate this", tools=[delegate]),
        agent_call(
            2,
            agent="child",
            parent=ROOT,
            user="count the files",
            tools=[("t-ls", "Bash", {"command": "ls"})],
            delegated_by="t-agent",
            system="You are a subagent.",
        ),
    ]
    doc = only(calls)
    child = subagent(doc, "child")
    assert sources(child) == ["system", "user", "agent"]
    assert child["steps"][1]["message"] == "count the files"
    assert child["session_id"] == ROOT and child["schema_version"] == "ATIF-v1.7"
    assert child["agent"]["extra"] == {
        "client": "127.0.0.1 claude-cli/2.1.197 (external, sdk-cli)",
        "depth": 1,
        "parent_agent_id": ROOT,
        "parent_tool_call_id": "t-agent",
    }
    ref = {"trajectory_id": "child", "session_id": ROOT}
    assert results_of(doc["steps"][2]) == [{"source_call_id": "t-agent", "content": "", "subagent_trajectory_ref": [ref]}]

    calls += [
        agent_call(3, agent="child", parent=ROOT, results=[("t-ls", "a b c")], text="3 files", system="You are a subagent."),
        agent_call(4, results=[("t-agent", "3 files\nagentId: child")], text="There are 3 files."),
    ]
    doc = only(calls)
    assert results_of(doc["steps"][2]) == [
        {"source_call_id": "t-agent", "content": "3 files\nagentId: child", "subagent_trajectory_ref": [ref]}
    ]
    assert sources(subagent(doc, "child")) == ["system", "user", "agent", "agent"]
    assert lineage(doc)["agents"]["child"] == {
        "parent_id": ROOT,
        "depth": 1,
        "first_seen": iso_timestamp(T0 + 2),
        "evidence": {"agent": "test"},
    }


def test_a_delegation_learnt_from_the_parents_later_call() -> None:
    calls = [
        agent_call(1, new_turn=True, user="go", tools=[("t-agent", "Agent", {"prompt": "p"})]),
        agent_call(2, agent="child", parent=ROOT, user="p"),  # the tracker could not tell which call
    ]
    doc = only(calls)
    assert subagent(doc, "child")["agent"]["extra"]["parent_tool_call_id"] is None
    assert "observation" not in doc["steps"][2]
    calls.append(agent_call(3, results=[("t-agent", "agentId: child")], delegations={"t-agent": "child"}))
    doc = only(calls)
    assert subagent(doc, "child")["agent"]["extra"]["parent_tool_call_id"] == "t-agent"
    assert results_of(doc["steps"][2]) == [
        {
            "source_call_id": "t-agent",
            "content": "agentId: child",
            "subagent_trajectory_ref": [{"trajectory_id": "child", "session_id": ROOT}],
        }
    ]


def test_a_delegation_named_before_the_child_calls_is_linked_when_it_does() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="go", tools=[("spawn", "spawn_agent", {"task": "t"})]),
            agent_call(2, results=[("spawn", '{"agent_id": "kid"}')], delegations={"spawn": "kid"}),
            agent_call(3, agent="kid", parent=ROOT, user="t"),
        ]
    )
    assert results_of(doc["steps"][2])[0]["subagent_trajectory_ref"] == [{"trajectory_id": "kid", "session_id": ROOT}]
    assert subagent(doc, "kid")["agent"]["extra"]["parent_tool_call_id"] == "spawn"


def test_a_nested_subagent_is_nested_in_its_parents_trajectory() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="go", tools=[("t1", "Agent", {"prompt": "level one"})]),
            agent_call(
                2, agent="child", parent=ROOT, user="level one", tools=[("t2", "Agent", {"prompt": "level two"})], delegated_by="t1"
            ),
            agent_call(3, agent="grandchild", parent="child", user="level two", delegated_by="t2"),
        ]
    )
    child = subagent(doc, "child")
    assert [s["trajectory_id"] for s in doc["subagent_trajectories"]] == ["child"]
    grandchild = subagent(child, "grandchild")
    assert grandchild["agent"]["extra"]["depth"] == 2
    assert results_of(child["steps"][2])[0]["subagent_trajectory_ref"] == [{"trajectory_id": "grandchild", "session_id": ROOT}]
    assert lineage(doc)["agents"]["grandchild"]["parent_id"] == "child"


def test_parallel_subagents_get_separate_refs() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="go", tools=[("ta", "Agent", {"prompt": "task A"}), ("tb", "Agent", {"prompt": "task B"})]),
            agent_call(2, agent="b", parent=ROOT, user="task B", delegated_by="tb"),
            agent_call(3, agent="a", parent=ROOT, user="task A", delegated_by="ta"),
            agent_call(4, agent="b", parent=ROOT, text="B done"),
        ]
    )
    assert [s["trajectory_id"] for s in doc["subagent_trajectories"]] == ["b", "a"]
    refs = {r["source_call_id"]: r["subagent_trajectory_ref"] for r in results_of(doc["steps"][2])}
    assert refs == {"ta": [{"trajectory_id": "a", "session_id": ROOT}], "tb": [{"trajectory_id": "b", "session_id": ROOT}]}
    assert [r["source_call_id"] for r in results_of(doc["steps"][2])] == ["ta", "tb"]  # tool call order


def test_a_subagent_with_an_unknown_delegation_is_still_embedded() -> None:
    doc = only([agent_call(1, new_turn=True, user="go"), agent_call(2, agent="orphan", parent=ROOT, user="do it")])
    orphan = subagent(doc, "orphan")
    assert orphan["agent"]["extra"]["parent_tool_call_id"] is None
    assert all("observation" not in s for s in doc["steps"])
    assert nulls(doc) == [".subagent_trajectories[0].agent.extra.parent_tool_call_id"]  # the only null: "unknown"


def test_an_agent_known_first_as_a_parent_moves_under_its_own_parent_when_it_calls() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="go", tools=[("t1", "Agent", {"prompt": "middle"})]),
            agent_call(2, agent="leaf", parent="middle", user="bottom"),  # "middle" has not finished a call yet
        ]
    )
    assert [s["trajectory_id"] for s in doc["subagent_trajectories"]] == ["middle"]
    middle = subagent(doc, "middle")
    assert middle["steps"] == [  # a placeholder, dated at the session's start
        {
            "step_id": 1,
            "timestamp": iso_timestamp(T0 + 1),
            "source": "system",
            "message": "",
            "extra": {"agent_lineage": {"no_agent_calls": True}},
        }
    ]
    doc = only(
        [
            agent_call(1, new_turn=True, user="go", tools=[("t1", "Agent", {"prompt": "middle"}), ("t0", "Agent", {"prompt": "other"})]),
            agent_call(2, agent="other", parent=ROOT, user="other", delegated_by="t0"),
            agent_call(3, agent="leaf", parent="middle", user="bottom"),
            agent_call(4, agent="middle", parent="other", user="middle"),
        ]
    )
    other = subagent(doc, "other")
    assert [s["trajectory_id"] for s in doc["subagent_trajectories"]] == ["other"]
    assert subagent(subagent(other, "middle"), "leaf")["agent"]["extra"]["depth"] == 3


# -- side requests, metrics, identity -----------------------------------------------------------


def test_side_requests_are_listed_in_the_root_extra_not_as_steps() -> None:
    doc = only(
        [
            agent_call(0, side="probe", usage=Usage(), user_agent="Bun/1.4.0"),
            agent_call(1, new_turn=True, user="hi"),
            agent_call(2, side="title", usage=Usage(input_tokens=30, output_tokens=5)),
            agent_call(3, agent="child", parent=ROOT, user="t", side="count-tokens", usage=Usage(input_tokens=7)),
        ]
    )
    assert sources(doc) == ["system", "user", "agent"]
    assert "subagent_trajectories" not in doc  # a side request makes no agent
    assert [(s["kind"], s["exchange_id"], s["agent_id"]) for s in lineage(doc)["side_requests"]] == [
        ("probe", "ex-0", ROOT),
        ("title", "ex-2", ROOT),
        ("count-tokens", "ex-3", "child"),
    ]
    assert lineage(doc)["side_requests"][1] == {
        "exchange_id": "ex-2",
        "kind": "title",
        "timestamp": iso_timestamp(T0 + 2),
        "api": "anthropic-messages",
        "path": "/v1/messages",
        "model": "claude-test-1",
        "agent_id": ROOT,
        "status": 200,
        "usage": {"input_tokens": 30, "output_tokens": 5},
    }
    assert doc["agent"]["name"] == "claude-code" and doc["agent"]["version"] == "2.1.197"
    assert doc["final_metrics"]["total_prompt_tokens"] == 100


def test_a_session_of_side_requests_only_is_still_a_valid_trajectory() -> None:
    doc = only([agent_call(0, side="probe", usage=Usage(), user_agent="Bun/1.4.0")])
    assert doc["steps"] == [
        {
            "step_id": 1,
            "timestamp": iso_timestamp(T0),
            "source": "system",
            "message": "",
            "extra": {"agent_lineage": {"no_agent_calls": True}},
        }
    ]
    assert doc["agent"] == {"name": "claude-code", "version": "unknown", "extra": {"depth": 0}}


def test_final_metrics_sum_own_steps_and_subagents() -> None:
    doc = only(
        [
            agent_call(1, new_turn=True, user="go", tools=[("t1", "Agent", {})], usage=Usage(1000, 100, 900)),
            agent_call(2, agent="child", parent=ROOT, user="t", delegated_by="t1", tools=[("t2", "Agent", {})], usage=Usage(200, 20, 0)),
            agent_call(3, agent="grandchild", parent="child", user="u", delegated_by="t2", usage=Usage(30, 3, None)),
            agent_call(4, results=[("t1", "done")], usage=Usage(1100, 10, 1000)),
        ]
    )
    assert doc["final_metrics"] == {
        "total_prompt_tokens": 2330,
        "total_completion_tokens": 133,
        "total_cached_tokens": 1900,
        "total_steps": 4,
        "extra": {"includes_subagents": True, "own_prompt_tokens": 2100, "own_completion_tokens": 110, "own_cached_tokens": 1900},
    }
    child = subagent(doc, "child")
    assert child["final_metrics"]["total_prompt_tokens"] == 230
    assert child["final_metrics"]["extra"]["own_prompt_tokens"] == 200
    assert child["final_metrics"]["total_steps"] == len(child["steps"]) == 3


@pytest.mark.parametrize(
    ("client_name", "user_agent", "expected"),
    [
        ("claude-code", "claude-cli/2.1.197 (external, sdk-cli)", ("claude-code", "2.1.197")),
        ("codex", "codex_exec/0.171.0 (Debian 12.0.0; x86_64) dumb (codex_exec; 0.171.0)", ("codex", "0.171.0")),
        (None, "OpenAI/Python 3.57.0", ("openai-python", "3.57.0")),
        (None, "Anthropic/Python 2.14.0", ("anthropic-python", "2.14.0")),
        (None, "agent-lineage-demo/0.1.0", ("agent-lineage-demo", "0.1.0")),
        (None, "curl", ("curl", "unknown")),
        (None, "", ("unknown", "unknown")),
    ],
)
def test_agent_name_and_version(client_name: str | None, user_agent: str, expected: tuple[str, str]) -> None:
    assert agent_identity(client_name, user_agent) == expected
    doc = only([agent_call(1, new_turn=True, user="hi", client_name=client_name, user_agent=user_agent)])
    assert (doc["agent"]["name"], doc["agent"]["version"]) == expected


def test_the_root_document() -> None:
    doc = only([agent_call(1, new_turn=True, user="hi")])
    assert list(doc) == ["schema_version", "session_id", "trajectory_id", "agent", "steps", "final_metrics", "extra"]
    assert (doc["schema_version"], doc["session_id"], doc["trajectory_id"]) == ("ATIF-v1.7", ROOT, ROOT)
    assert doc["agent"]["model_name"] == "claude-test-1"
    assert lineage(doc)["version"] == "0.1.0"
    assert set(lineage(doc)) == {"version", "agents", "turns", "side_requests", "unmatched_tool_results"}
    assert nulls(doc) == []


def test_sessions_are_separate_documents() -> None:
    docs = build([agent_call(1, new_turn=True, user="a"), agent_call(2, session="sess-2", agent="sess-2", new_turn=True, user="b")])
    assert sorted(docs) == [ROOT, "sess-2"]
    assert docs["sess-2"]["steps"][1]["message"] == "b"


def test_same_calls_give_identical_bytes() -> None:
    def calls() -> list[Call]:
        return [
            agent_call(0, side="probe", usage=Usage()),
            agent_call(1, new_turn=True, user="go", tools=[("t1", "Agent", {"prompt": "x"}), ("t2", "Bash", {})]),
            agent_call(2, agent="child", parent=ROOT, user="x", delegated_by="t1"),
            agent_call(3, results=[("t2", "out"), ("t1", "done")]),
        ]

    first, second = TrajectoryBuilder(), TrajectoryBuilder()
    for call in calls():
        first.add(call)
    for call in calls():
        second.add(call)
    assert first.render(ROOT) == second.render(ROOT)


def test_only_changed_steps_are_serialised_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_lineage import atif

    builder = TrajectoryBuilder()
    builder.add(agent_call(0, new_turn=True, user="go", tools=[("t0", "Bash", {})]))
    for n in range(1, 40):
        builder.add(agent_call(n, results=[(f"t{n - 1}", "out")], tools=[(f"t{n}", "Bash", {})]))
    builder.render(ROOT)
    serialised: list[int] = []
    real_as_json = atif._Step.as_json
    monkeypatch.setattr(atif._Step, "as_json", lambda step: serialised.append(step.step_id) or real_as_json(step))
    builder.add(agent_call(40, results=[("t39", "out")]))
    builder.render(ROOT)
    assert serialised == [42, 43]  # the step that got the result, and the new one


# -- real recordings --------------------------------------------------------------------------


class BuilderSink:
    """A Pipeline sink that folds every call (probes included) into one builder."""

    def __init__(self) -> None:
        self.builder = TrajectoryBuilder()

    def add(self, call: Call) -> None:
        self.builder.add(call)

    def session_evicted(self, session_id: str) -> None:
        pass

    def close(self) -> None:
        pass


def replay_fixture(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sink = BuilderSink()
    offline.replay(offline.read_flows(path), Pipeline(Settings(), [sink]))
    documents = [orjson.loads(sink.builder.render(s)) for s in sink.builder.session_ids()]
    truth = json.loads(path.with_name(path.stem + ".truth.json").read_text())
    return documents, truth


def all_trajectories(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = [document]
    for sub in document.get("subagent_trajectories", []):
        found += all_trajectories(sub)
    return found


RECORDINGS = sorted(FIXTURES.glob("real/*.mitm")) + sorted(FIXTURES.glob("idless/*.mitm"))


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recordings_give_valid_trajectories_of_the_true_shape(path: Path) -> None:
    documents, truth = replay_fixture(path)
    for document in documents:
        assert validate_trajectory(document) == []
    flows = truth["flows"]
    trajectories = [t for d in documents for t in all_trajectories(d)]
    agent_steps = [s for t in trajectories for s in t["steps"] if s["source"] == "agent"]
    assert len(agent_steps) == sum(f["kind"] == "agent" for f in flows)
    side_requests = [r for d in documents for r in lineage(d)["side_requests"]]
    assert sorted(r["kind"] for r in side_requests) == sorted(f["side_type"] for f in flows if f["kind"] == "side")
    assert not {r["exchange_id"] for r in side_requests} & {s["extra"]["agent_lineage"]["exchange_id"] for s in agent_steps}
    summary = truth["summary"]
    if summary["sessions"] == 0:  # SDK calls: no session on the wire, nothing more to compare
        return
    assert len(documents) == summary["sessions"]
    (document,) = documents
    assert len(trajectories) == summary["agents"]
    assert len(trajectories) - 1 == summary["subagents"]
    assert len(lineage(document)["turns"]) == summary["turns"]
    assert sources(document).count("user") == summary["new_turn_starts"]
    assert lineage(document)["unmatched_tool_results"] == []


def delegations(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(parent trajectory, delegating tool name, child trajectory) for every subagent ref."""
    found = []
    for trajectory in all_trajectories(document):
        for step in trajectory["steps"]:
            names = {c["tool_call_id"]: c["function_name"] for c in step.get("tool_calls", [])}
            for result in results_of(step):
                for ref in result.get("subagent_trajectory_ref", []):
                    found.append((trajectory["trajectory_id"], names[result["source_call_id"]], ref["trajectory_id"]))
    return found


def test_claude_subagent_is_referenced_from_the_agent_tool_call() -> None:
    (document,), _ = replay_fixture(FIXTURES / "real" / "cc_c_subagent.mitm")
    (child,) = document["subagent_trajectories"]
    assert delegations(document) == [(document["trajectory_id"], "Agent", child["trajectory_id"])]
    assert child["steps"][1]["source"] == "user" and "AW_SUBTASK" in child["steps"][1]["message"]
    assert [r["kind"] for r in lineage(document)["side_requests"]] == ["probe"]
    (result,) = [r for s in document["steps"] for r in results_of(s) if "subagent_trajectory_ref" in r]
    assert f"agentId: {child['trajectory_id']}" in result["content"]


def test_codex_subagent_is_referenced_from_the_spawn_agent_call() -> None:
    (document,), _ = replay_fixture(FIXTURES / "real" / "cx_c_subagent.mitm")
    (child,) = document["subagent_trajectories"]
    assert delegations(document) == [(document["trajectory_id"], "multi_agent_v1.spawn_agent", child["trajectory_id"])]
    assert child["agent"]["name"] == "codex" and child["agent"]["version"] == "0.171.0"
    assert sources(document).count("user") == 1  # the <subagent_notification> is no new turn


def test_agents_as_tools_give_four_subagents_over_two_turns() -> None:
    (document,), _ = replay_fixture(FIXTURES / "idless" / "oa_b_agents_as_tools.mitm")
    refs = delegations(document)
    assert sorted(name for _, name, _ in refs) == ["billing_expert", "billing_expert", "shipping_expert", "shipping_expert"]
    assert {child for _, _, child in refs} == {s["trajectory_id"] for s in document["subagent_trajectories"]}
    assert [t["turn"] for t in lineage(document)["turns"]] == [1, 2]


# -- validate_trajectory ----------------------------------------------------------------------


@pytest.fixture
def example() -> dict[str, Any]:
    """A valid trajectory shaped like the spec's example: a tool call, a delegation to an
    embedded subagent, two parallel tool calls."""
    return only(
        [
            agent_call(1, new_turn=True, user="fix the test", tools=[("call_01_pytest", "bash", {"command": "pytest"})]),
            agent_call(2, results=[("call_01_pytest", "1 failed")], tools=[("call_02_delegate", "delegate", {"task": "find the callers"})]),
            agent_call(
                3,
                agent="traj-sub-search-01",
                parent=ROOT,
                user="find the callers",
                delegated_by="call_02_delegate",
                tools=[("sub_01", "bash", {})],
            ),
            agent_call(4, agent="traj-sub-search-01", parent=ROOT, results=[("sub_01", "cli.py:17")], text="cli.py calls it"),
            agent_call(
                5,
                results=[("call_02_delegate", "cli.py calls it")],
                tools=[("call_03_edit", "edit_file", {}), ("call_04_pytest", "bash", {})],
            ),
            agent_call(6, results=[("call_03_edit", "edited"), ("call_04_pytest", "12 passed")], text="Fixed."),
        ]
    )


def _break(document: dict[str, Any], how: str) -> None:
    steps = document["steps"]
    sub = document["subagent_trajectories"][0]
    if how == "no schema_version":
        del document["schema_version"]
    elif how == "old schema_version":
        document["schema_version"] = "ATIF-v1.6"
    elif how == "no trajectory_id":
        del document["trajectory_id"]
    elif how == "empty steps":
        document["steps"] = []
        document["final_metrics"]["total_steps"] = 0
    elif how == "empty subagent steps":
        sub["steps"] = []
        sub["final_metrics"]["total_steps"] = 0
    elif how == "no message":
        del steps[2]["message"]
    elif how == "observation on a user step":
        steps[1]["observation"] = {"results": [{"content": "x"}]}
    elif how == "null model_name on a user step":
        steps[1]["model_name"] = None
    elif how == "metrics on a user step":
        steps[1]["metrics"] = {"prompt_tokens": 1}
    elif how == "repeated tool_call_id":
        steps[4]["tool_calls"][1]["tool_call_id"] = steps[4]["tool_calls"][0]["tool_call_id"]
    elif how == "source_call_id of another step":
        steps[2]["observation"]["results"][0]["source_call_id"] = "call_04_pytest"
    elif how == "unresolved ref":
        steps[3]["observation"]["results"][0]["subagent_trajectory_ref"][0]["trajectory_id"] = "nowhere"
    elif how == "ref by session_id alone":
        del steps[3]["observation"]["results"][0]["subagent_trajectory_ref"][0]["trajectory_id"]
    elif how == "repeated subagent trajectory_id":
        document["subagent_trajectories"].append(copy.deepcopy(sub))
    elif how == "llm_call_count 0 with metrics":
        steps[2]["llm_call_count"] = 0
    elif how == "timestamp without zone":
        steps[2]["timestamp"] = "2026-11-26T09:00:04"
    elif how == "unknown key":
        steps[2]["thoughts"] = "?"
    elif how == "step_id gap":
        steps[3]["step_id"] = 7
    elif how == "nested step_id gap":
        sub["steps"][1]["step_id"] = 9
    elif how == "wrong total_steps":
        document["final_metrics"]["total_steps"] = 5


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("no schema_version", "schema_version: missing (the models default it; write 'ATIF-v1.7' explicitly)"),
        ("old schema_version", "schema_version: 'ATIF-v1.6', expected 'ATIF-v1.7'"),
        ("no trajectory_id", "trajectory_id: missing on the root trajectory"),
        ("empty steps", "steps: must hold at least one step"),
        ("empty subagent steps", "subagent_trajectories[0].steps: must hold at least one step"),
        ("no message", "steps[2].message: must be present"),
        ("observation on a user step", "steps[1].observation: user steps carry no observation"),
        ("null model_name on a user step", "steps[1].model_name: only agent steps carry it"),
        ("metrics on a user step", "Field 'metrics' is only applicable when source is 'agent'"),
        ("repeated tool_call_id", "steps[4].tool_calls[1].tool_call_id: 'call_03_edit' repeats an earlier tool call of this step"),
        ("source_call_id of another step", "source_call_id 'call_04_pytest' which is not found in step 3's tool_calls"),
        ("unresolved ref", "steps[3].observation.results[0].subagent_trajectory_ref[0]: trajectory_id 'nowhere' matches no trajectory"),
        ("ref by session_id alone", "steps[3].observation.results[0].subagent_trajectory_ref[0]: SubagentTrajectoryRef MUST set"),
        ("repeated subagent trajectory_id", "duplicate value 'traj-sub-search-01'"),
        ("llm_call_count 0 with metrics", "steps[2].metrics: a step with llm_call_count 0 has none"),
        ("timestamp without zone", "steps[2].timestamp: '2026-11-26T09:00:04' has no time zone"),
        ("unknown key", "steps[2].thoughts: Extra inputs are not permitted"),
        ("step_id gap", "steps[3].step_id: expected 4 (sequential from 1), got 7"),
        ("nested step_id gap", "subagent_trajectories[0]: steps[1].step_id: expected 2 (sequential from 1), got 9"),
        ("wrong total_steps", "final_metrics.total_steps: 5 but 6 steps"),
    ],
)
def test_validate_reports_each_broken_rule_with_its_path(example: dict[str, Any], how: str, expected: str) -> None:
    _break(example, how)
    problems = validate_trajectory(example)
    assert any(expected in p for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_validate_rejects_what_is_not_an_object() -> None:
    assert validate_trajectory([]) == ["$: a trajectory is a JSON object"]


def test_the_tools_an_agent_was_offered_are_its_tool_definitions() -> None:
    from agent_lineage.model import ToolDef

    first, second = agent_call(1, new_turn=True, user="hi"), agent_call(2)
    first.tools = [ToolDef("Read", "Reads a file", {"type": "object", "properties": {"path": {"type": "string"}}}), ToolDef("Bash")]
    second.tools = [ToolDef("Other")]  # the first call's offer stands
    document = only([first, second])
    assert document["agent"]["tool_definitions"] == [
        {"type": "function", "function": {"name": "Read", "description": "Reads a file", "parameters": first.tools[0].parameters}},
        {"type": "function", "function": {"name": "Bash"}},
    ]
    assert validate_trajectory(document) == []
    assert "tool_definitions" not in only([agent_call(1, new_turn=True, user="hi")])["agent"]
