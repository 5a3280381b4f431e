"""The "LLM call" content view, through mitmproxy's own content view machinery (11 and 12 APIs),
on recorded traffic of the three wire APIs."""

from __future__ import annotations

import pytest
from mitmproxy import contentviews
from mitmproxy.test import taddons, tflow

from agent_lineage import contentview
from agent_lineage.codecs import codec_for
from agent_lineage.offline import read_flows
from conftest import FIXTURES

CLAUDE_NESTED = FIXTURES / "agents" / "claude_nested_reverse" / "flows.mitm"
CODEX_NESTED = FIXTURES / "agents" / "codex_nested_reverse" / "flows.mitm"
SDK = FIXTURES / "real" / "sdk_python.mitm"


def shown(flow, message) -> tuple[str, str]:
    """(name of the view mitmproxy picks by itself, its text) for one message of a flow."""
    if contentview.NEW_API:
        result = contentviews.prettify_message(message, flow)
        return result.view_name or "", result.text
    description, lines, error = contentviews.get_message_content_view("auto", message, flow)
    assert error is None
    return description, "\n".join("".join(text for _, text in line) for line in lines)


@pytest.fixture
def registered():
    with taddons.context():
        contentview.register()
        yield
        contentview.unregister()


def llm_flows(path, api: str) -> list:
    found = [f for f in read_flows(path) if (codec := codec_for(f.request.method, f.request.path)) and codec.api == api]
    assert found
    return found


def test_anthropic_messages_stream_shows_system_tools_new_messages_and_the_answer(registered):
    flows = llm_flows(CLAUDE_NESTED, "anthropic-messages")
    first = flows[0]
    name, text = shown(first, first.request)
    assert name == "LLM call"
    assert text.startswith("anthropic-messages · claude-opus-4-8 · streamed · ")
    assert "── system (" in text and "You are" in text
    assert "── tools offered" in text and "Agent" in text
    name, answer = shown(first, first.response)
    assert name == "LLM call"
    assert "→ Agent  [" in answer  # the delegation with its arguments, pretty-printed
    assert '"prompt":' in answer
    assert "── usage" in answer and "input       19,2" in answer
    # A later call of the main agent: the tool result that answers the Agent call is new, the rest folded.
    last = flows[-1]
    _, text = shown(last, last.request)
    assert "earlier messages folded" in text
    assert "── tool results" in text and "← toolu_" in text


def test_openai_responses_stream_shows_tool_calls_and_results(registered):
    flows = llm_flows(CODEX_NESTED, "openai-responses")
    spawning = next(f for f in flows if b"spawn_agent" in (f.response.raw_content or b""))
    _, answer = shown(spawning, spawning.response)
    assert answer.startswith("openai-responses · gpt-5.5 · HTTP 200")
    assert "→ multi_agent_v1.spawn_agent" in answer
    later = flows[-1]
    _, text = shown(later, later.request)
    assert "── tool results" in text and "earlier messages folded" in text


def test_chat_completions_json(registered):
    [flow] = llm_flows(SDK, "openai-chat")
    name, text = shown(flow, flow.request)
    assert name == "LLM call"
    assert text.startswith("openai-chat · ")
    assert "── user" in text
    _, answer = shown(flow, flow.response)
    assert "── assistant" in answer and "── usage" in answer


def test_other_traffic_keeps_mitmproxy_views(registered):
    flow = tflow.tflow(resp=True)
    name, _ = shown(flow, flow.request)
    assert name != "LLM call"
    assert contentview.priority(b'{"a": 1}', flow) == 0


def test_a_body_that_is_not_the_api_falls_back_to_raw(registered):
    flow = tflow.tflow(resp=True)
    flow.request.method = "POST"
    flow.request.path = "/v1/chat/completions"
    flow.request.content = b"not json"
    name, text = shown(flow, flow.request)
    assert name != "LLM call"
    assert "not json" in text
