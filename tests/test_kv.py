"""The KV-reuse report: prefix reuse by relation, the routing simulation, and `agent-lineage kv`
on real recordings (the CLIs' own ids, id-less SDK apps, framework apps)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_lineage import kv, offline
from agent_lineage.cli import main
from agent_lineage.pipeline import Pipeline
from agent_lineage.settings import Settings

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def request(session: str, agent: str, parent: str | None, *messages: str, native: bool = False) -> kv.Request:
    parts = [m.encode() for m in messages]
    blocks = kv.chain(parts, [len(p) for p in parts], None)
    return kv.Request(session, agent, parent, blocks, (agent, parent) if native else None)


def tokens(*messages: str) -> int:
    return sum(max(1, len(m) // kv.BYTES_PER_TOKEN) for m in messages)


SYSTEM, TASK, ANSWER = "You are a careful coding agent. " * 8, "Fix the failing test in billing. " * 4, "I read the file. " * 6


def test_reuse_is_measured_by_relation_and_stops_at_the_first_different_message():
    requests = [
        request("s1", "root", None, SYSTEM, TASK),
        request("s1", "root", None, SYSTEM, TASK, ANSWER, "continue"),
        request("s1", "child-a", "root", SYSTEM, TASK, "a subtask"),
        request("s1", "child-b", "root", SYSTEM, TASK, "another subtask"),
        request("s2", "other", None, SYSTEM, "something else entirely"),
    ]
    found = kv.reuse(requests)
    assert found[0] == kv.Reuse()
    assert found[1].same_agent == tokens(SYSTEM, TASK) and found[1].other_session == 0
    assert found[2].parent == tokens(SYSTEM, TASK) and found[2].sibling == 0
    assert found[3].parent == tokens(SYSTEM, TASK) and found[3].sibling == tokens(SYSTEM, TASK)
    assert found[4].other_session == tokens(SYSTEM) and found[4].same_agent == 0


def reuse_by_scanning(requests: list[kv.Request]) -> list[kv.Reuse]:
    """kv.reuse's definition, block by block: what its binary searches must give."""
    return [reuse_of(r, requests[:n]) for n, r in enumerate(requests)]


def reuse_of(r: kv.Request, earlier: list[kv.Request]) -> kv.Reuse:
    def shared(e: kv.Request) -> int:
        tokens = 0
        for (key, size), (other, _) in zip(r.blocks, e.blocks):
            if key != other:
                break
            tokens += size
        return tokens

    def longest(relation) -> int:
        return max((shared(e) for e in earlier if relation(e)), default=0)

    return kv.Reuse(
        same_agent=longest(lambda e: e.agent == r.agent),
        parent=longest(lambda e: r.parent is not None and e.agent == r.parent),
        sibling=longest(lambda e: r.parent is not None and e.parent == r.parent and e.agent != r.agent),
        other_session=longest(lambda e: e.session != r.session),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2", "s3"]),
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from([None, "a", "b"]),
            st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=6),
        ),
        max_size=25,
    )
)
def test_reuse_equals_its_definition(drawn):
    # Agents may come back with another session or parent: the index must not assume they don't.
    requests = [request(session, agent, parent, *messages) for session, agent, parent, messages in drawn]
    assert kv.reuse(requests) == reuse_by_scanning(requests)


def test_reported_prompt_tokens_are_split_by_message_size():
    blocks = kv.chain([b"aaaa", b"bbbbbbbbbbbb"], [4, 12], 100)
    assert [t for _, t in blocks] == [25, 75]
    assert blocks[0][0] != kv.chain([b"bbbbbbbbbbbb"], [12], None)[0][0]


def test_lineage_routing_keeps_sessions_and_sibling_subagents_warm_where_random_does_not():
    requests = []
    for s in range(6):
        history = [f"system prompt of app {s % 2} " * 40, f"task {s} " * 30]
        for turn in range(5):
            requests.append(request(f"s{s}", f"s{s}", None, *history))
            history.append(f"answer {turn} of {s} " * 20)
        for c in range(3):
            requests.append(request(f"s{s}", f"s{s}-c{c}", f"s{s}", "worker prompt " * 40, f"subtask {c} of {s} " * 20))
    outcomes = {s: kv.simulate(requests, s, workers=4, cache_tokens=1_000_000, seed=1) for s in kv.STRATEGIES}
    assert outcomes["lineage"].cached_tokens > outcomes["random"].cached_tokens
    assert outcomes["lineage"].cached_tokens > outcomes["round-robin"].cached_tokens
    assert outcomes["native-headers"].cached_tokens == outcomes["random"].cached_tokens  # no ids: routed at random
    # Every turn after a session's first is served from its worker's cache up to its last answer.
    assert all(outcomes["lineage"].per_request[i] > 0 for i in range(1, 5))


def test_a_cache_too_small_forgets():
    requests = [request("s", "s", None, f"message {i} " * 50) for i in range(3)] * 2
    roomy = kv.simulate(requests, "lineage", workers=1, cache_tokens=10_000)
    tiny = kv.simulate(requests, "lineage", workers=1, cache_tokens=100)
    assert roomy.cached_tokens > 0 and tiny.cached_tokens == 0


def test_native_header_rule_is_dynamos():
    assert kv.native_lineage({"x-claude-code-session-id": "S"}) == ("S", None)
    assert kv.native_lineage({"x-claude-code-session-id": "S", "x-claude-code-agent-id": "a1"}) == ("a1", "S")
    assert kv.native_lineage({"x-claude-code-session-id": "S", "x-claude-code-agent-id": "a2", "x-claude-code-parent-agent-id": "a1"}) == (
        "a2",
        "a1",
    )
    assert kv.native_lineage({"thread-id": "T", "x-codex-parent-thread-id": "P"}) == ("T", "P")
    assert kv.native_lineage({"x-session-id": "O"}) == ("O", None)
    assert kv.native_lineage({"user-agent": "OpenAI/Python"}) is None


def requests_of(flows: Path) -> list[kv.Request]:
    pipeline = Pipeline(Settings(stamp=False), [])
    found = kv.from_calls(offline.replay(offline.read_flows(flows), pipeline))
    pipeline.close()
    return found


@pytest.mark.parametrize(
    "flows", sorted((FIXTURES / "idless").glob("*.mitm")) + sorted((FIXTURES / "frameworks").glob("*.mitm")), ids=lambda p: p.stem
)
def test_on_id_less_recordings_lineage_beats_the_native_header_rule(flows: Path):
    result = kv.report(requests_of(flows), workers=4, cache_tokens=2_000_000)
    ours, native = result.outcomes["lineage"], result.outcomes["native-headers"]
    assert all(r.native is None for r in result.requests)  # these clients send no ids
    assert ours.cached_tokens > native.cached_tokens


@pytest.mark.parametrize("name", ["claude_parallel_reverse", "codex_parallel_reverse", "claude_nested_reverse"])
def test_where_the_cli_sends_ids_lineage_is_never_worse_than_the_native_rule(name: str):
    requests = requests_of(FIXTURES / "agents" / name / "flows.mitm")
    result = kv.report(requests, workers=4, cache_tokens=2_000_000)
    assert any(r.native is not None for r in requests)
    assert result.outcomes["lineage"].cached_tokens >= result.outcomes["native-headers"].cached_tokens


@pytest.mark.parametrize("name", ["claude_tool_loop_forward", "claude-next_nested_forward"])
def test_claude_codes_per_request_billing_fields_do_not_break_the_prefix(name: str):
    # Forward to Anthropic, each request's billing line has its own checksum (and, in newer
    # versions, more per-request fields); the API still served later requests mostly from cache,
    # and so must the model: each agent's later calls share a prefix with its earlier ones.
    pipeline = Pipeline(Settings(stamp=False), [])
    calls = sorted(offline.replay(offline.read_flows(FIXTURES / "agents" / name / "flows.mitm"), pipeline), key=lambda c: c.t_start)
    pipeline.close()
    assert len({kv.BILLING_LINE.search(c.system)[0] for c in calls}) == len(calls)  # no two alike
    requests = kv.from_calls(calls)
    seen: set[str] = set()
    for call, request, reuse in zip(calls, requests, kv.reuse(requests)):
        later = request.agent in seen
        assert (call.response.usage.cache_read_tokens > 0) == later
        assert (reuse.same_agent > 0) == later, call.exchange_id
        seen.add(request.agent)


def test_the_billing_line_keeps_what_claude_code_sends_to_every_host():
    # To other hosts the line is constant per agent, and differs between siblings (its suffix).
    line = "x-anthropic-billing-header: cc_version=2.1.332.efc; cc_entrypoint=sdk-cli; cch=d015c; cc_is_subagent=true; cc_prev_req=req_1;\nYou are"  # noqa: E501
    assert kv.BILLING_LINE.sub(kv.billing_fields_sent_to_any_host, line) == (
        "x-anthropic-billing-header: cc_version=2.1.332.efc; cc_entrypoint=sdk-cli; cc_is_subagent=true;\nYou are"
    )


def test_trajectories_give_one_request_per_llm_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    flows = FIXTURES / "idless" / "oa_b_agents_as_tools.mitm"
    assert main(["convert", str(flows), "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    files = sorted(tmp_path.glob("trajectory-*.json"))
    requests = [r for f in files for r in kv.from_trajectory(orjson.loads(f.read_bytes()), f.name)]
    steps = sum(len(_agent_steps(orjson.loads(f.read_bytes()))) for f in files)
    assert len(requests) == steps > 0
    assert main(["kv", *map(str, files), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "lineage" in out and "native-headers" in out and "prefix reuse" in out


def _agent_steps(trajectory: dict) -> list[dict]:
    steps = [s for s in trajectory["steps"] if s["source"] == "agent" and s.get("llm_call_count") != 0]
    for child in trajectory.get("subagent_trajectories") or []:
        steps += _agent_steps(child)
    return steps


def test_kv_command_reads_flows_and_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["kv", str(FIXTURES / "real" / "cc_c_subagent.mitm")]) == 0
    assert "cached share" in capsys.readouterr().out
    assert main(["kv", str(tmp_path / "missing.mitm")]) == 2
    assert main(["kv", str(FIXTURES / "real" / "cc_c_subagent.mitm"), "--workers", "0"]) == 2
    assert "agent-lineage kv: error:" in capsys.readouterr().err


def test_a_responses_request_continuing_a_stored_response_carries_that_prompt():
    from agent_lineage.model import Call, Message, Response, Scope

    def call(n: int, messages: list[Message], previous: str | None) -> Call:
        c = Call(exchange_id=f"x{n}", api="openai-responses", path="/v1/responses", client="", headers={}, t_start=float(n))
        c.system, c.messages = "You are an analyst. " * 20, messages
        c.fields = {"previous_response_id": previous} if previous else {}
        c.response = Response(id=f"resp_{n}", output=Message("assistant", f"answer {n} " * 30))
        c.scope = Scope(session_id="s", agent_id="s")
        return c

    first = call(1, [Message("user", "Compare the two quarters. " * 10)], None)
    second = call(2, [Message("user", "And the third?")], "resp_1")
    one, two = kv.from_calls([first, second])
    assert two.blocks[: len(one.blocks)] == one.blocks  # the stored prompt is its prefix
    assert kv.reuse([one, two])[1].same_agent == one.tokens
