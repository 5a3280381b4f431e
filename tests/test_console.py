"""The console line (agent_lineage.console): pure, from finished Calls with their Scopes to text."""

from __future__ import annotations

import logging
import re

import pytest

from agent_lineage.console import Console, call_outcome, deciding_evidence, flow_comment, flow_marker, short_id
from agent_lineage.model import Call, Message, Response, Scope, ToolCall, Usage
from agent_lineage.offline import read_flows, replay
from agent_lineage.pipeline import Pipeline
from conftest import FIXTURES

SESSION = "262845dd-f4af-48ab-b1f9-c617cf26c84a"
CHILD = "a745885e64195937a"
GRANDCHILD = "a8ba010e5aa0bac85"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The line's fields (README, "The console line"); the e2e test parses mitmdump's output with it.
LINE = re.compile(
    r"(?P<mark>.) (?P<client>\S+) +(?P<session>\S{8}) t(?P<turn>\d+) (?P<path>.+?)(?: NEW (?P<event>[A-Z]+))?(?: side:(?P<side>\S+))?"
    r"  (?P<api>\S+) (?P<model>\S+)  (?P<status>.+?)  (?P<timing>\S+→\S+)(?:  in (?P<tokens>.+?))?(?:  tools (?P<tools>.+?))?  by (?P<evidence>\S+)$"  # noqa: E501
)
HARNESS = {"agent": "harness:header:x-claude-code-session-id", "root_id": "header:x-claude-code-session-id"}


def finished_call(scope: Scope, n: int = 1, **changes) -> Call:
    call = Call(
        exchange_id=f"flow-{n}",
        api="anthropic-messages",
        path="/v1/messages",
        client="127.0.0.1 claude-cli/2.1.197",
        headers={"user-agent": "claude-cli/2.1.197 (external, cli)"},
        t_start=1000.0,
        model="claude-sonnet-4-5",
        status=200,
        t_first_byte=1000.41,
        t_end=1002.3,
        response=Response(
            model="claude-sonnet-4-5",
            output=Message("assistant", tool_calls=[ToolCall("t1", "Read"), ToolCall("t2", "Read"), ToolCall("t3", "Task")]),
            usage=Usage(input_tokens=12403, output_tokens=312, cache_read_tokens=11900),
            stop_reason="tool_use",
            complete=True,
        ),
        scope=scope,
    )
    for name, value in changes.items():
        setattr(call, name, value)
    return call


def root(turn: int = 1, new_turn: bool = False, **changes) -> Scope:
    evidence = {**HARNESS, "turn": "fresh-user-message"} if new_turn else dict(HARNESS)
    return Scope(
        session_id=SESSION, agent_id=SESSION, turn=turn, new_turn=new_turn, client_name="claude-code", evidence=evidence, **changes
    )


def sub(agent: str, parent: str, depth: int) -> Scope:
    evidence = {"agent": "harness:header:x-claude-code-agent-id", "delegated_by": "quotes-tool-argument"}
    return Scope(session_id=SESSION, agent_id=agent, parent_id=parent, depth=depth, turn=1, client_name="claude-code", evidence=evidence)


def lines_of(console: Console, calls: list[Call], caplog) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="agent_lineage"):
        for call in calls:
            console.begin(call)
        for call in calls:
            console.add(call)
    return [r.getMessage() for r in caplog.records if r.name == "agent_lineage"]


def test_a_session_its_subagents_and_its_next_turn_stand_out(caplog):
    calls = [
        finished_call(root(new_turn=True), 1),
        finished_call(root(), 2),
        finished_call(sub(CHILD, SESSION, 1), 3),
        finished_call(sub(GRANDCHILD, CHILD, 2), 4),
        finished_call(root(turn=2, new_turn=True), 5),
    ]
    lines = lines_of(Console(), calls, caplog)
    assert lines == [
        "● claude-code cf26c84a t1 main NEW SESSION  messages claude-sonnet-4-5  200  0.41s→2.30s  in 12.4k (11.9k cached) out 312  tools Read×2, Task  by harness-header+fresh-user-message",  # noqa: E501
        "  claude-code cf26c84a t1 main  messages claude-sonnet-4-5  200  0.41s→2.30s  in 12.4k (11.9k cached) out 312  tools Read×2, Task  by harness-header",  # noqa: E501
        "↳ claude-code cf26c84a t1 main › 4195937a NEW SUBAGENT  messages claude-sonnet-4-5  200  0.41s→2.30s  in 12.4k (11.9k cached) out 312  tools Read×2, Task  by harness-header+quotes-tool-argument",  # noqa: E501
        "↳ claude-code cf26c84a t1 main › 4195937a › aa0bac85 NEW SUBAGENT  messages claude-sonnet-4-5  200  0.41s→2.30s  in 12.4k (11.9k cached) out 312  tools Read×2, Task  by harness-header+quotes-tool-argument",  # noqa: E501
        "▶ claude-code cf26c84a t2 main NEW TURN  messages claude-sonnet-4-5  200  0.41s→2.30s  in 12.4k (11.9k cached) out 312  tools Read×2, Task  by harness-header+fresh-user-message",  # noqa: E501
    ]


def test_a_side_request_shows_its_kind_and_an_unseen_ancestor_shows_as_an_ellipsis(caplog):
    console = Console()
    first, title = finished_call(root(new_turn=True), 1), finished_call(root(side="title"), 2, side="title")
    orphan = finished_call(sub(GRANDCHILD, CHILD, 2), 3)
    line_title, line_orphan = lines_of(console, [first, title, orphan], caplog)[1:]
    assert line_title.startswith("· claude-code cf26c84a t1 main side:title  messages")
    assert " main NEW" not in line_title
    assert "… › 4195937a › aa0bac85 NEW SUBAGENT" in line_orphan


@pytest.mark.parametrize(
    ("changes", "label", "level"),
    [
        ({}, "200", logging.INFO),
        ({"status": 529, "error": "HTTP 529: overloaded_error: Overloaded"}, "HTTP 529", logging.WARNING),
        ({"status": None, "error": "Connection refused", "t_first_byte": None}, "failed: Connection refused", logging.WARNING),
        ({"error": "Client disconnected."}, "client gone", logging.WARNING),
        ({"error": "peer closed connection"}, "200 cut", logging.WARNING),
        ({"error": "overloaded_error: Overloaded"}, "200 error: overloaded_error: Overloaded", logging.WARNING),
        ({"error": "unreadable response body: unexpected character"}, "200 unreadable", logging.WARNING),
    ],
)
def test_errors_cut_streams_and_clients_gone_are_shown_as_such(caplog, changes, label, level):
    call = finished_call(root(new_turn=True), **changes)
    if changes.get("error") in ("Client disconnected.", "peer closed connection", "unreadable response body: unexpected character"):
        call.response.complete = False
    assert call_outcome(call).label == label
    [line] = lines_of(Console(), [call], caplog)
    assert f"  {label}  " in line
    assert caplog.records[-1].levelno == level


def test_a_call_without_a_response_has_no_timing_or_tokens(caplog):
    call = finished_call(root(new_turn=True), status=None, error="Connection refused", t_first_byte=None, t_end=None, response=Response())
    [line] = lines_of(Console(), [call], caplog)
    assert line.endswith("failed: Connection refused  -→-  by harness-header+fresh-user-message")


def test_the_client_is_the_harness_or_the_user_agents_product(caplog):
    sdk = Scope(
        session_id="sess-0123456789abcdef",
        agent_id="sess-0123456789abcdef",
        turn=1,
        new_turn=True,
        evidence={"agent": "new-conversation", "session": "content-hash", "turn": "fresh-user-message"},
    )
    call = finished_call(sdk, api="openai-chat", headers={"user-agent": "OpenAI/Python 1.57.0"})
    [line] = lines_of(Console(), [call], caplog)
    assert line.startswith("● openai-python 89abcdef t1 main NEW SESSION  chat ")
    assert line.endswith("by new-conversation+content-hash+fresh-user-message")


def test_verbose_adds_the_full_ids_and_every_piece_of_evidence(caplog):
    call = finished_call(sub(CHILD, SESSION, 1))
    call.scope.delegated_by = "toolu_01"
    [line] = lines_of(Console("verbose"), [call], caplog)
    first, details = line.split("\n")
    assert first.startswith("● claude-code")
    assert details.startswith("    ")
    for pair in [
        f"session={SESSION}",
        f"agent={CHILD}",
        f"parent={SESSION}",
        "flow=flow-1",
        "stop=tool_use",
        "delegated_by_call=toolu_01",
        "evidence.agent=harness:header:x-claude-code-agent-id",
        "evidence.delegated_by=quotes-tool-argument",
    ]:
        assert pair in details.split(), pair


def test_off_logs_nothing_but_still_places_agents_for_the_flow_comment(caplog):
    console = Console("off")
    parent, child = finished_call(root(new_turn=True), 1), finished_call(sub(CHILD, SESSION, 1), 2)
    assert lines_of(console, [parent], caplog) == []
    placement = console.begin(child)
    assert flow_comment(child.scope, placement) == "session cf26c84a · main › 4195937a · turn 1"
    assert placement.event == "subagent"


def test_colour_only_when_asked_and_the_text_is_the_same(caplog):
    calls = [finished_call(root(new_turn=True), 1), finished_call(sub(CHILD, SESSION, 1), 2, status=500, error="HTTP 500")]
    plain = lines_of(Console(), calls, caplog)
    colored = lines_of(Console(color=True), calls, caplog)
    assert not any(ANSI.search(line) for line in plain)
    assert all(ANSI.search(line) for line in colored)
    assert [ANSI.sub("", line) for line in colored] == plain
    assert "\x1b[1;31mHTTP 500\x1b[0m" in colored[1]


def test_flow_comment_and_marker():
    console = Console()
    main, title = root(new_turn=True), root(side="title")
    child = sub(CHILD, SESSION, 1)
    placements = [console.begin(finished_call(scope, n)) for n, scope in enumerate([main, title, child])]
    assert [flow_comment(s, p) for s, p in zip([main, title, child], placements)] == [
        "session cf26c84a · main · turn 1",
        "session cf26c84a · main · turn 1 · side:title",
        "session cf26c84a · main › 4195937a · turn 1",
    ]
    assert [flow_marker(s) for s in (main, title, child)] == ["", ":paperclip:", ":arrow_right_hook:"]
    pending = Scope(session_id="side-0123456789abcdef", agent_id="side-0123456789abcdef", side="quota", pending=True)
    assert console.begin(finished_call(pending, 9)) is None
    assert flow_comment(pending, None) == "side:quota · session not known yet"


def test_a_side_request_no_session_claimed_still_gets_its_line(caplog):
    pending = Scope(
        session_id="side-0123456789abcdef",
        agent_id="side-0123456789abcdef",
        side="quota",
        pending=True,
        evidence={"agent": "pending:next-turn-of-client"},
    )
    [line] = lines_of(Console(), [finished_call(pending, side="quota")], caplog)
    assert line.startswith("· claude-cli  89abcdef t0 ? side:quota  messages")  # no harness id: the user agent names it
    assert line.endswith("by next-turn-of-client")


def test_short_ids_keep_the_end_where_uuid7_ids_differ():
    assert short_id("01a21782-6b17-78f2-8fa9-367637f342d3") == "37f342d3"
    assert short_id("01a21782-6bf2-7991-acee-53cf539adfba") != short_id("01a21782-6b17-78f2-8fa9-367637f342d3")


def test_deciding_evidence_names_the_rules_not_the_ids():
    scope = Scope(
        session_id="s",
        agent_id="a",
        turn=1,
        evidence={"agent": "prefix", "messages": "prefix:a", "session": "side:claimed-by-next-turn-of-same-host"},
    )
    assert deciding_evidence(scope) == "prefix+claimed-by-next-turn-of-same-host"


def test_every_call_of_a_recorded_session_gets_one_line_with_its_scope(caplog):
    """Real Codex traffic with nested subagents, replayed through the pipeline with the console sink."""
    console = Console()
    with caplog.at_level(logging.INFO, logger="agent_lineage"):
        calls = replay(read_flows(FIXTURES / "agents" / "codex_nested_reverse" / "flows.mitm"), Pipeline(sinks=[console]))
    lines = [r.getMessage() for r in caplog.records if r.name == "agent_lineage"]
    assert len(lines) == len(calls) == 10
    depths = set()
    for call, line in zip(calls, lines):
        scope, fields = call.scope, LINE.match(line)
        assert fields is not None, line
        assert (fields["client"], fields["session"], int(fields["turn"])) == ("codex", short_id(scope.session_id), scope.turn)
        path = fields["path"].split(" › ")
        assert path[0] == "main" and len(path) == scope.depth + 1, line
        assert scope.depth == 0 or path[-1] == short_id(scope.agent_id)
        depths.add(scope.depth)
    assert depths == {0, 1, 2}
    assert sum("NEW SESSION" in line for line in lines) == 1
    assert sum("NEW SUBAGENT" in line for line in lines) == len({c.scope.agent_id for c in calls if c.scope.depth})
