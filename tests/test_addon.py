"""The mitmproxy addon in-process (taddons / tflow): hooks, options, stamping, pass-through."""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
from pathlib import Path

import orjson
import pytest
from mitmproxy import exceptions
from mitmproxy.http import Headers
from mitmproxy.test import taddons, tflow, tutils

import lineage  # addons/lineage.py, on sys.path through conftest

CLAUDE_SESSION = "262845dd-f4af-48ab-b1f9-c617cf26c84a"


def llm_request(path: str, body: dict, headers: list[tuple[str, str]] = (), t: float = 1000.0):
    raw = json.dumps(body).encode()
    fields = [(b"content-type", b"application/json"), (b"user-agent", b"test-client/1.0")]
    fields += [(k.encode(), v.encode()) for k, v in headers]
    return tutils.treq(method=b"POST", path=path.encode(), headers=Headers(fields), content=raw, timestamp_start=t, timestamp_end=t + 0.01)


def json_response(body: dict, t: float = 1001.0, headers: list[tuple[bytes, bytes]] = ()):
    return tutils.tresp(
        headers=Headers([(b"content-type", b"application/json"), *headers]),
        content=json.dumps(body).encode(),
        timestamp_start=t,
        timestamp_end=t + 0.1,
    )


CHAT_REPLY = {
    "id": "chatcmpl-1",
    "model": "gpt-x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}},
}


@pytest.fixture
def addon(tmp_path: Path):
    addon = lineage.Lineage()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, lineage_dir=str(tmp_path / "traces"), lineage_calls_log=str(tmp_path / "calls.jsonl"))
        addon.tctx = tctx
        yield addon
        addon.done()


def logged_calls(tmp_path: Path) -> list[dict]:
    path = tmp_path / "calls.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def run(addon, flow, *, stream_chunks: list[bytes] | None = None):
    addon.request(flow)
    if flow.response is None:
        return flow
    addon.responseheaders(flow)
    if stream_chunks is not None:
        assert callable(flow.response.stream)
        forwarded = [flow.response.stream(chunk) for chunk in [*stream_chunks, b""]]
        assert forwarded == [*stream_chunks, b""]  # byte-identical, chunk by chunk
        flow.response.content = None
    addon.response(flow)
    return flow


def test_stamps_lineage_and_records_the_call(addon, tmp_path):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=json_response(CHAT_REPLY))
    run(addon, flow)
    session = flow.request.headers["x-dynamo-session-id"]
    assert session.startswith("sess-")
    assert "x-dynamo-parent-session-id" not in flow.request.headers
    [call] = logged_calls(tmp_path)
    assert call["api"] == "openai-chat"
    assert call["response"]["output"]["text"] == "hi there"
    assert call["response"]["usage"] == {
        "input_tokens": 12,
        "output_tokens": 3,
        "cache_read_tokens": 4,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
    }
    assert call["scope"]["agent_id"] == session
    assert call["t_start"] == 1000.0 and call["t_first_byte"] == 1001.0 and call["t_end"] == pytest.approx(1001.1)


def test_harness_ids_give_the_same_lineage_dynamo_derives(addon):
    body = {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "do it"}]}
    main = tflow.tflow(req=llm_request("/v1/messages?beta=true", body, [("X-Claude-Code-Session-Id", CLAUDE_SESSION)]))
    child = tflow.tflow(
        req=llm_request(
            "/v1/messages?beta=true",
            body,
            [("X-Claude-Code-Session-Id", CLAUDE_SESSION), ("x-claude-code-agent-id", "a745885e64195937a")],
        )
    )
    addon.request(main)
    addon.request(child)
    assert main.request.headers["x-dynamo-session-id"] == CLAUDE_SESSION
    assert "x-dynamo-parent-session-id" not in main.request.headers
    assert child.request.headers["x-dynamo-session-id"] == "a745885e64195937a"
    assert child.request.headers["x-dynamo-parent-session-id"] == CLAUDE_SESSION


def test_stale_parent_from_the_client_is_removed_and_headers_not_duplicated(addon):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body, [("X-Dynamo-Parent-Session-Id", "stale")]))
    addon.request(flow)
    assert flow.request.headers.get_all("x-dynamo-parent-session-id") == []
    assert len(flow.request.headers.get_all("x-dynamo-session-id")) == 1


def test_client_lineage_is_respected_by_default_and_overridable(addon):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    sent = [("X-Dynamo-Session-Id", "child-7"), ("x-dynamo-parent-session-id", "root-1")]
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body, sent))
    addon.request(flow)
    assert flow.request.headers.get_all("x-dynamo-session-id") == ["child-7"]
    assert flow.request.headers.get_all("x-dynamo-parent-session-id") == ["root-1"]

    addon.tctx.configure(addon, lineage_client_headers="override")
    fresh = {"model": "gpt-x", "messages": [{"role": "user", "content": "a new conversation"}]}
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", fresh, sent, t=2000))
    addon.request(flow)
    assert flow.request.headers.get_all("x-dynamo-session-id")[0].startswith("sess-")
    assert flow.request.headers.get_all("x-dynamo-parent-session-id") == []


def test_stamping_off_still_records(addon, tmp_path):
    addon.tctx.configure(addon, lineage_stamp=False)
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=json_response(CHAT_REPLY))
    run(addon, flow)
    assert "x-dynamo-session-id" not in flow.request.headers
    assert len(logged_calls(tmp_path)) == 1


def test_non_llm_traffic_is_not_touched(addon, tmp_path):
    flow = tflow.tflow(resp=True)  # GET /path
    before = flow.copy()
    run(addon, flow)
    assert flow.request.headers.fields == before.request.headers.fields
    assert flow.request.content == before.request.content
    assert flow.response.stream is False
    assert logged_calls(tmp_path) == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b"", json.dumps({"model": "x", "messages": "not a list"}).encode()],
    ids=["truncated", "not-an-object", "empty", "wrong-shape"],
)
def test_malformed_request_is_forwarded_unchanged_and_logged_once(addon, tmp_path, caplog, content):
    request = llm_request("/v1/chat/completions", {})
    request.content = content
    flow = tflow.tflow(req=request, resp=json_response(CHAT_REPLY))
    before = flow.request.copy()
    with caplog.at_level(logging.WARNING, logger="agent_lineage"):
        run(addon, flow)
    assert flow.request.headers.fields == before.headers.fields
    assert flow.request.raw_content == before.raw_content
    assert len([r for r in caplog.records if "forwarded unchanged" in r.getMessage()]) == 1
    assert logged_calls(tmp_path) == []


def test_malformed_response_is_recorded_with_the_problem(addon, tmp_path, caplog):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    response = json_response({})
    response.content = b'{"id": "chatcmpl-1", "choices": [{"mess'
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=response)
    with caplog.at_level(logging.WARNING, logger="agent_lineage"):
        run(addon, flow)
    assert flow.response.content == b'{"id": "chatcmpl-1", "choices": [{"mess'
    [call] = logged_calls(tmp_path)
    assert "unreadable response body" in call["error"]
    assert sum("unreadable response body" in r.getMessage() for r in caplog.records) == 1


SSE_CHAT = [
    b'data: {"id":"c1","model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n',
    b'\ndata: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n',
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\ndata: [DONE]\n\n',
]


def test_streamed_response_passes_through_chunk_by_chunk_and_is_saved(addon, tmp_path):
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    response = tutils.tresp(
        headers=Headers([(b"content-type", b"text/event-stream")]), content=None, timestamp_start=1001, timestamp_end=1002
    )
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=response)
    run(addon, flow, stream_chunks=SSE_CHAT)
    assert flow.response.raw_content == b"".join(SSE_CHAT)  # what `-w` will save
    [call] = logged_calls(tmp_path)
    assert call["response"]["output"]["text"] == "Hello"
    assert call["response"]["complete"] is True
    assert call["response"]["usage"]["input_tokens"] == 5


def test_gzip_stream_is_forwarded_encoded_and_read_decoded(addon, tmp_path):
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    encoded = gzip.compress(b"".join(SSE_CHAT))
    chunks = [encoded[i : i + 7] for i in range(0, len(encoded), 7)]
    response = tutils.tresp(headers=Headers([(b"content-type", b"text/event-stream"), (b"content-encoding", b"gzip")]), content=None)
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=response)
    run(addon, flow, stream_chunks=chunks)
    [call] = logged_calls(tmp_path)
    assert call["response"]["output"]["text"] == "Hello"


def test_stream_cut_by_client_disconnect_is_recorded_with_what_arrived(addon, tmp_path):
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    response = tutils.tresp(headers=Headers([(b"content-type", b"text/event-stream")]), content=None)
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=response)
    addon.request(flow)
    addon.responseheaders(flow)
    for chunk in SSE_CHAT[:2]:
        flow.response.stream(chunk)
    flow.error = tflow.terr("client disconnected")
    addon.error(flow)
    [call] = logged_calls(tmp_path)
    assert call["error"] == "client disconnected"
    assert call["response"]["complete"] is False
    assert call["response"]["output"]["text"] == "Hel"
    assert flow.response.raw_content == b"".join(SSE_CHAT[:2])


def test_upstream_error_status_is_recorded(addon, tmp_path):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    response = json_response({"error": {"type": "server_error", "message": "boom"}})
    response.status_code = 503
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=response)
    run(addon, flow)
    [call] = logged_calls(tmp_path)
    assert call["status"] == 503
    assert call["error"] == "HTTP 503: server_error: boom"


def test_connection_failure_before_any_response_is_recorded(addon, tmp_path):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body))
    addon.request(flow)
    flow.error = tflow.terr("connection reset")
    addon.error(flow)
    [call] = logged_calls(tmp_path)
    assert call["status"] is None and call["error"] == "connection reset"


def test_secrets_are_blanked_in_the_flow_once_forwarded_and_never_logged(addon, tmp_path):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    request = llm_request("/v1/chat/completions?key=sk-secret", body, [("Authorization", "Bearer sk-secret"), ("x-api-key", "sk-secret")])
    flow = tflow.tflow(req=request, resp=json_response(CHAT_REPLY))
    addon.request(flow)
    assert flow.request.headers["authorization"] == "Bearer sk-secret"  # forwarded as sent
    addon.responseheaders(flow)
    addon.response(flow)
    assert flow.request.headers["authorization"] == "<redacted>"
    assert flow.request.query["key"] == "<redacted>"
    assert b"sk-secret" not in (tmp_path / "calls.jsonl").read_bytes()


def test_bad_option_values_are_rejected(addon, tmp_path):
    bad_values = (
        ("lineage_write_interval", "-1"), ("lineage_write_interval", "inf"), ("lineage_turn_gap", "0"),
        ("lineage_session_ttl", "soon"), ("lineage_turn_gap", "nan"), ("lineage_session_ttl", "inf"),
    )  # fmt: skip
    for option, value in bad_values:
        with pytest.raises(exceptions.OptionsError, match=option):
            addon.tctx.configure(addon, **{option: value})
    bad = tmp_path / "harness.yaml"
    bad.write_text("clients:\n  x:\n    root:\n      - {nothing: here}\n")
    with pytest.raises(exceptions.OptionsError, match="selector"):
        addon.tctx.configure(addon, lineage_harness_file=str(bad))
    with pytest.raises(exceptions.OptionsError):
        addon.tctx.configure(addon, lineage_client_headers="sometimes")


def test_lone_surrogates_from_js_clients_are_read_not_rejected(addon, tmp_path):
    raw = b'{"model": "gpt-x", "messages": [{"role": "user", "content": "cut emoji \\ud83d"}]}'
    request = llm_request("/v1/chat/completions", {})
    request.content = raw
    flow = tflow.tflow(req=request, resp=json_response(CHAT_REPLY))
    run(addon, flow)
    assert flow.request.raw_content == raw  # forwarded as sent
    [call] = logged_calls(tmp_path)
    assert call["messages"][0]["text"] == "cut emoji \ufffd"
    assert "x-dynamo-session-id" in flow.request.headers


def test_assistants_api_messages_are_not_llm_calls(addon, tmp_path):
    flow = tflow.tflow(req=llm_request("/v1/threads/thread_1/messages", {"role": "user", "content": "hi"}), resp=json_response({}))
    run(addon, flow)
    assert "x-dynamo-session-id" not in flow.request.headers
    assert logged_calls(tmp_path) == []


def test_flows_read_from_a_file_keep_their_streamed_bodies(addon, tmp_path):
    """`mitmdump -r flows.mitm -s addons/lineage.py`: hooks run, but no chunk goes through the tee."""
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    saved = b"".join(SSE_CHAT)
    response = tutils.tresp(headers=Headers([(b"content-type", b"text/event-stream")]), content=saved)
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=response)
    addon.request(flow)
    addon.responseheaders(flow)
    addon.response(flow)
    assert flow.response.raw_content == saved
    [call] = logged_calls(tmp_path)
    assert call["response"]["output"]["text"] == "Hello"


def test_secrets_of_non_llm_flows_are_blanked_too_once_forwarded(addon):
    request = tutils.treq(headers=Headers([(b"x-api-key", b"sk-secret"), (b"cookie", b"a=b")]))
    flow = tflow.tflow(req=request, resp=True)
    addon.request(flow)
    assert flow.request.headers["x-api-key"] == "sk-secret"
    addon.responseheaders(flow)
    addon.response(flow)
    assert flow.request.headers["x-api-key"] == flow.request.headers["cookie"] == "<redacted>"
    in_flight = tflow.tflow(req=tutils.treq(headers=Headers([(b"authorization", b"Bearer sk-secret")])))
    addon.request(in_flight)
    addon.done()  # shutting down: the save addon writes in-flight flows next
    assert in_flight.request.headers["authorization"] == "<redacted>"


def test_a_subagent_starting_before_its_parents_stream_has_ended_is_still_its_subagent(addon):
    """Clients act on the terminal event: the child's request may overtake the end of the stream."""
    task = "Summarise the changes in the billing module"
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "plan the release"}]}
    call = {"id": "call_1", "type": "function", "function": {"name": "delegate", "arguments": json.dumps({"task": task})}}
    events = [
        b'data: {"id":"c2","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[%s]}}]}\n\n'
        % json.dumps({"index": 0, **call}).encode(),
        b'data: {"id":"c2","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n',
    ]
    response = tutils.tresp(headers=Headers([(b"content-type", b"text/event-stream")]), content=None)
    parent = tflow.tflow(req=llm_request("/v1/chat/completions", body), resp=response)
    addon.request(parent)
    addon.responseheaders(parent)
    for chunk in events:
        parent.response.stream(chunk)
    child = tflow.tflow(
        req=llm_request(
            "/v1/chat/completions",
            {"model": "gpt-x", "messages": [{"role": "system", "content": "helper"}, {"role": "user", "content": task}]},
            t=1000.5,
        )
    )
    addon.request(child)  # before the parent's end of stream
    assert child.request.headers["x-dynamo-parent-session-id"] == parent.request.headers["x-dynamo-session-id"]
    parent.response.stream(b"")
    addon.response(parent)


def test_stream_large_bodies_is_warned_about(addon, caplog):
    addon.tctx.options.add_option("stream_large_bodies", str | None, None, "mitmproxy's own, from its proxy server addon")
    with caplog.at_level(logging.WARNING, logger="agent_lineage"):
        addon.tctx.configure(addon, stream_large_bodies="1k")
    assert "go unstamped and unrecorded" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clients:\n  - claude-code\n", "`clients` must be a dict, got list"),
        ("clients:\n  x:\n    rooot:\n      - {header: a}\n", "unknown key 'rooot'"),
        ("sides: []\n", "unknown key 'sides'"),
        ("clients:\n  x: [1]\n", "client 'x' must be a mapping"),
    ],
    ids=["clients-as-list", "misspelt-client-key", "misspelt-top-key", "client-not-mapping"],
)
def test_harness_file_shape_is_checked_with_a_clear_message(addon, tmp_path, text, message):
    bad = tmp_path / "harness.yaml"
    bad.write_text(text)
    with pytest.raises(exceptions.OptionsError, match=re.escape(message)):
        addon.tctx.configure(addon, lineage_harness_file=str(bad))


def test_options_change_in_place_and_sessions_survive(addon, tmp_path):
    """Changing tracker options at run time keeps the sessions: no `.2.json` continuation file."""
    first = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}
    run(addon, tflow.tflow(req=llm_request("/v1/chat/completions", first), resp=json_response(CHAT_REPLY)))
    tracker = addon.pipeline.tracker
    addon.tctx.configure(addon, lineage_turn_gap="60", lineage_session_ttl="7200", lineage_write_interval="0")
    assert addon.pipeline.tracker is tracker
    assert (tracker.settings.turn_gap_seconds, tracker.settings.session_ttl_seconds) == (60.0, 7200.0)
    assert addon.writer.write_interval == 0.0
    second = {
        "model": "gpt-x",
        "messages": [*first["messages"], {"role": "assistant", "content": "hi there"}, {"role": "user", "content": "and now?"}],
    }
    flow = tflow.tflow(req=llm_request("/v1/chat/completions", second, t=1010), resp=json_response(CHAT_REPLY, t=1011))
    run(addon, flow)
    addon.done()
    files = sorted(p.name for p in (tmp_path / "traces").iterdir())
    assert files == [f"trajectory-{flow.request.headers['x-dynamo-session-id']}.json"]
    document = orjson.loads((tmp_path / "traces" / files[0]).read_bytes())
    assert [s["source"] for s in document["steps"]] == ["user", "agent", "user", "agent"]


def test_a_new_trajectory_directory_replaces_only_the_writer(addon, tmp_path):
    pipeline = addon.pipeline
    addon.tctx.configure(addon, lineage_dir=str(tmp_path / "elsewhere"))
    assert addon.pipeline is pipeline and addon.writer.files.directory == tmp_path / "elsewhere"
    run(
        addon,
        tflow.tflow(
            req=llm_request("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            resp=json_response(CHAT_REPLY),
        ),
    )
    addon.done()
    assert len(list((tmp_path / "elsewhere").glob("trajectory-*.json"))) == 1


def test_live_and_offline_agree_on_a_subagent_that_overtakes_its_parents_stream_end(addon, tmp_path):
    """The answered moment is recorded in the flow, so offline replays the child after the parent's
    answer but before its stream's end, exactly as live."""
    from mitmproxy.io import FlowWriter

    from agent_lineage.driver import ANSWERED_KEY
    from agent_lineage.offline import read_flows, replay
    from agent_lineage.pipeline import CallLog, Pipeline

    task = "Summarise the changes in the billing module"
    call = {"id": "call_1", "type": "function", "function": {"name": "delegate", "arguments": json.dumps({"task": task})}}
    events = [
        b'data: {"id":"c2","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[%s]}}]}\n\n'
        % json.dumps({"index": 0, **call}).encode(),
        b'data: {"id":"c2","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n',
    ]
    now = time.time()
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "plan the release"}]}
    parent = tflow.tflow(req=llm_request("/v1/chat/completions", body, t=now))
    parent.response = tutils.tresp(headers=Headers([(b"content-type", b"text/event-stream")]), content=None, timestamp_start=now + 0.1)
    addon.request(parent)
    addon.responseheaders(parent)
    for chunk in events:
        parent.response.stream(chunk)
    child_body = {"model": "gpt-x", "messages": [{"role": "system", "content": "helper"}, {"role": "user", "content": task}]}
    child = tflow.tflow(
        req=llm_request("/v1/chat/completions", child_body, t=time.time()), resp=json_response(CHAT_REPLY, t=time.time() + 0.2)
    )
    run(addon, child)
    parent.response.stream(b"")
    parent.response.timestamp_end = time.time() + 0.5
    addon.response(parent)
    assert isinstance(parent.metadata[ANSWERED_KEY], float)
    live = {c["exchange_id"]: c["scope"] for c in logged_calls(tmp_path)}
    assert live[child.id]["parent_id"] == live[parent.id]["agent_id"]

    saved = tmp_path / "flows.mitm"
    with open(saved, "wb") as f:
        writer = FlowWriter(f)
        for flow in (parent, child):  # in completion order, as mitmdump -w writes them
            writer.add(flow)
    offline_log = CallLog(tmp_path / "offline.jsonl")
    replay(read_flows(saved), Pipeline(sinks=[offline_log]))
    offline_log.close()
    offline = {c["exchange_id"]: c["scope"] for c in map(orjson.loads, (tmp_path / "offline.jsonl").read_bytes().splitlines())}
    assert offline == live
