"""The console line, flow comments, markers and the "LLM call" view through the addon's hooks
(taddons), fed with recorded Claude Code traffic."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import contentviews
from mitmproxy.test import taddons, tflow

import lineage  # addons/lineage.py, on sys.path through conftest
from agent_lineage import contentview
from agent_lineage.codecs import codec_for
from agent_lineage.console import LINEAGE_KEY, short_id
from agent_lineage.offline import read_flows
from conftest import FIXTURES
from test_console import LINE
from test_contentview import shown

NESTED = FIXTURES / "agents" / "claude_nested_reverse" / "flows.mitm"
INTERACTIVE = FIXTURES / "agents" / "claude_interactive_reverse" / "flows.mitm"


@pytest.fixture
def addon():
    addon = lineage.Lineage()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, lineage_dir="")
        addon.tctx = tctx
        yield addon
        addon.done()


def through(addon, path, caplog) -> tuple[list, list[str]]:
    """Every flow of a recording through the hooks, one after the other; the LLM flows and the
    console lines logged."""
    recorded = read_flows(path)
    with caplog.at_level(logging.INFO, logger="agent_lineage"):
        for flow in recorded:
            addon.request(flow)
            addon.responseheaders(flow)
            addon.response(flow)
    lines = [r.getMessage() for r in caplog.records if r.name == "agent_lineage" and r.levelno >= logging.INFO]
    return [f for f in recorded if codec_for(f.request.method, f.request.path)], lines


def test_each_llm_flow_gets_one_line_a_comment_and_subagents_a_marker(addon, caplog):
    llm, lines = through(addon, NESTED, caplog)
    assert len(lines) == len(llm) == 6
    session = llm[0].metadata[LINEAGE_KEY]["session"]
    for flow, line in zip(llm, lines):
        record = flow.metadata[LINEAGE_KEY]
        fields = LINE.match(line)
        assert fields["session"] == short_id(session) and fields["client"] == "claude-code"
        assert fields["path"] == " › ".join(record["path"])
        assert flow.comment == f"session {short_id(session)} · {' › '.join(record['path'])} · turn 1"
        assert flow.request.headers["x-dynamo-session-id"] == record["agent"]
        assert flow.marked == (":arrow_right_hook:" if len(record["path"]) > 1 else "")
    assert [len(flow.metadata[LINEAGE_KEY]["path"]) for flow in llm] == [1, 2, 3, 3, 2, 1]
    assert [LINE.match(line)["event"] for line in lines] == ["SESSION", "SUBAGENT", "SUBAGENT", None, None, None]


def test_side_requests_are_marked_and_say_their_kind(addon, caplog):
    llm, lines = through(addon, INTERACTIVE, caplog)
    sides = [flow for flow in llm if flow.metadata[LINEAGE_KEY]["side"]]
    assert [flow.marked for flow in sides] == [":paperclip:"]
    assert sides[0].comment.endswith(" · side:title")
    assert sum(LINE.match(line)["side"] == "title" for line in lines) == 1


def test_non_llm_flows_are_left_alone(addon, caplog):
    flow = tflow.tflow(resp=True)
    with caplog.at_level(logging.INFO, logger="agent_lineage"):
        addon.request(flow)
        addon.responseheaders(flow)
        addon.response(flow)
    assert flow.comment == "" and flow.marked == "" and LINEAGE_KEY not in flow.metadata
    assert not [r for r in caplog.records if r.name == "agent_lineage"]


def test_lineage_console_off_and_verbose(addon, caplog):
    addon.tctx.configure(addon, lineage_console="off")
    llm, lines = through(addon, NESTED, caplog)
    assert lines == []
    assert all(flow.comment for flow in llm)  # comments do not depend on the console line
    caplog.clear()
    addon.tctx.configure(addon, lineage_console="verbose")
    _, lines = through(addon, NESTED, caplog)
    assert len(lines) == 6 and all(line.count("\n") == 1 and "evidence.agent=" in line for line in lines)


def test_the_llm_call_view_shows_the_lineage_the_addon_recorded(addon, caplog):
    llm, _ = through(addon, NESTED, caplog)
    inner = llm[2]  # the nested subagent's first call
    record = inner.metadata[LINEAGE_KEY]
    name, text = shown(inner, inner.request)
    assert name == "LLM call"
    assert f"agent       {' › '.join(record['path'])}  ({record['agent']})" in text
    assert f"parent      {record['parent']}" in text
    assert f"stamped     x-dynamo-session-id: {record['agent']}" in text
    assert "by agent    harness:header:x-claude-code-agent-id" in text
    assert f"{record['new_messages']} message" in text and "new since the agent's previous call" in text
    last = llm[-1]  # the main agent again: all but the tool result are folded
    _, text = shown(last, last.request)
    folded = len([m for m in text.splitlines() if m.startswith("── ") and "folded" in m])
    assert folded == 1 and f"{last.metadata[LINEAGE_KEY]['new_messages']} message new since" in text


def registered() -> bool:
    if contentview.NEW_API:
        return contentviews.registry.get("llm call") is contentview.VIEW
    return contentview.VIEW in contentviews.views


def test_the_view_is_registered_on_load_and_removed_on_done_where_mitmproxy_can():
    addon = lineage.Lineage()
    with taddons.context(addon):
        assert registered()
        addon.done()
        # mitmproxy 12 cannot remove a view; loading the script again replaces it by name
        assert registered() is contentview.NEW_API
