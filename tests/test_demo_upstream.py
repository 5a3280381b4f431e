"""The demo upstream against the official SDKs and raw HTTP, and the scripted driver against it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from agent_lineage.demo import driver
from agent_lineage.demo.upstream import DEFAULT_TEXT, EXHAUSTED_TEXT, DemoUpstream, ScriptError, find_script

# Two parallel tool calls after some thinking, then a text answer.
TOOLS_PROMPT = '[[script: think Two lookups at once. ; tools bash {"command": "ls"} read {"path": "README.md"} ; say All done.]]'
SYSTEM = "You are a test agent. " * 20  # long enough that continuations report cached tokens
CALLS = [("bash", {"command": "ls"}), ("read", {"path": "README.md"})]


@pytest.fixture(scope="module")
def server():
    with DemoUpstream() as up:
        yield up


@pytest.fixture
def upstream(server: DemoUpstream) -> DemoUpstream:
    server.clear()
    return server


@pytest.fixture
def oai(upstream: DemoUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream.base_url + "/v1", api_key="sk-fake", max_retries=0)


@pytest.fixture
def claude(upstream: DemoUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=upstream.base_url, api_key="sk-fake", max_retries=0)


def chat(oai: openai.OpenAI, *contents: str) -> str:
    """Text of a non-streamed chat reply to a conversation of user messages."""
    messages = [{"role": "user", "content": c} for c in contents]
    return oai.chat.completions.create(model="demo-model", messages=messages).choices[0].message.content


# --- scripts -------------------------------------------------------------------------------


def test_find_script_nests_child_scripts():
    child = '[[script: tool bash {"command": "wc -l README.md"} ; say "42; really ]]"]]'
    text = "Go. [[script: tool delegate " + json.dumps({"task": child}) + " ; say done]] tail"
    script = find_script(text)
    assert script is not None
    assert [s.tool_calls[0].name if s.tool_calls else s.text for s in script.steps] == ["delegate", "done"]
    task = json.loads(script.steps[0].tool_calls[0].arguments)["task"]
    assert task == child
    assert find_script(task).steps[1].text == "42; really ]]"
    assert text[script.end :] == " tail"
    assert find_script("no marker here") is None


@pytest.mark.parametrize(
    "bad",
    [
        "[[script: dance ]]",
        "[[script: tool bash [1] ]]",
        '[[script: tool bash {"a": } ]]',
        "[[script: say unterminated",
        "[[script: think only ]]",
        "[[script: say a ; ]]",
    ],
)
def test_find_script_rejects_malformed(bad: str):
    with pytest.raises(ScriptError):
        find_script(bad)


def test_script_steps_follow_turns(oai: openai.OpenAI, claude: anthropic.Anthropic):
    assert chat(oai, "hi") == DEFAULT_TEXT
    script = "[[script: say one ; say two]]"
    messages: list[dict[str, Any]] = [{"role": "user", "content": script}]
    answers = []
    for _ in range(3):
        answers.append(oai.chat.completions.create(model="m", messages=messages).choices[0].message.content)
        messages += [{"role": "assistant", "content": answers[-1]}, {"role": "user", "content": "more"}]
    assert answers == ["one", "two", EXHAUSTED_TEXT]  # fresh prompts without a marker keep the last script
    messages[-1]["content"] = "[[script: say second turn]]"
    assert oai.chat.completions.create(model="m", messages=messages).choices[0].message.content == "second turn"

    # Claude Code puts <system-reminder> blocks before the prompt: they are not the script.
    content = [
        {"type": "text", "text": "<system-reminder>[[script: say wrong]]</system-reminder>"},
        {"type": "text", "text": "[[script: say right]]"},
    ]
    reply = claude.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": content}])
    assert reply.content[0].text == "right"


# --- the three APIs through the SDKs -------------------------------------------------------


def test_chat_completions(oai: openai.OpenAI):
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TOOLS_PROMPT}]
    first = oai.chat.completions.create(model="demo-model", messages=messages)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == CALLS
    assert choice.message.reasoning_content == "Two lookups at once."
    assert first.usage.prompt_tokens > 0 and first.usage.prompt_tokens_details.cached_tokens == 0

    with oai.chat.completions.stream(model="demo-model", messages=messages, stream_options={"include_usage": True}) as stream:
        streamed = stream.get_final_completion()
    calls = streamed.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == CALLS
    assert streamed.choices[0].finish_reason == "tool_calls"
    assert streamed.usage.completion_tokens == first.usage.completion_tokens

    messages.append({"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]})
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in calls]
    chunks = list(oai.chat.completions.create(model="demo-model", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "All done."
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is None  # no include_usage
    second = oai.chat.completions.create(model="demo-model", messages=messages)
    assert second.choices[0].message.content == "All done."
    assert second.usage.prompt_tokens_details.cached_tokens > 0


def test_responses(oai: openai.OpenAI):
    first = oai.responses.create(model="demo-model", instructions=SYSTEM, input=TOOLS_PROMPT)
    assert [item.type for item in first.output] == ["reasoning", "function_call", "function_call"]
    assert first.output[0].summary[0].text == "Two lookups at once."
    calls = first.output[1:]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == CALLS
    assert len({c.call_id for c in calls}) == 2
    usage = first.usage
    assert usage.input_tokens > 0 and usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens > 0

    with oai.responses.stream(model="demo-model", instructions=SYSTEM, input=TOOLS_PROMPT) as stream:
        events = list(stream)
        streamed = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert {"response.function_call_arguments.delta", "response.reasoning_summary_text.delta"} <= {e.type for e in events}
    assert [(c.name, json.loads(c.arguments)) for c in streamed.output[1:]] == CALLS

    results = [{"type": "function_call_output", "call_id": c.call_id, "output": "ok"} for c in calls]
    history = [
        {"role": "user", "content": TOOLS_PROMPT},
        *(item.model_dump(exclude_none=True) for item in first.output),
    ]
    second = oai.responses.create(model="demo-model", instructions=SYSTEM, input=history + results)
    assert second.output_text == "All done."
    assert second.usage.input_tokens_details.cached_tokens > 0
    # The same continuation, threaded by previous_response_id instead of the full history.
    chained = oai.responses.create(model="demo-model", previous_response_id=first.id, input=results)
    assert chained.output_text == "All done."
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model="demo-model", previous_response_id="resp_unknown", input="hi")


def test_anthropic_messages(upstream: DemoUpstream, claude: anthropic.Anthropic):
    messages: list[dict[str, Any]] = [{"role": "user", "content": TOOLS_PROMPT}]
    first = claude.messages.create(model="demo-model", max_tokens=100, system=SYSTEM, messages=messages)
    assert [b.type for b in first.content] == ["thinking", "tool_use", "tool_use"]
    assert first.content[0].thinking == "Two lookups at once." and first.content[0].signature
    assert [(b.name, b.input) for b in first.content[1:]] == CALLS
    assert first.stop_reason == "tool_use"
    usage = first.usage
    assert usage.cache_read_input_tokens == 0 and usage.cache_creation_input_tokens > 0 and usage.input_tokens >= 0

    # The beta path (?beta=true), streamed, as Claude Code sends it.
    beta = {"beta": "true"}  # explicit: whether the SDK's beta client adds it varies by SDK version
    with claude.messages.stream(model="demo-model", max_tokens=100, system=SYSTEM, messages=messages, extra_query=beta) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in streamed.content] == ["thinking", "tool_use", "tool_use"]
    assert streamed.content[0].signature and [(b.name, b.input) for b in streamed.content[1:]] == CALLS
    assert streamed.stop_reason == "tool_use" and streamed.usage.output_tokens == first.usage.output_tokens
    assert upstream.requests[-1].path == "/v1/messages?beta=true"

    messages.append({"role": "assistant", "content": [b.model_dump() for b in first.content]})
    results = [{"type": "tool_result", "tool_use_id": b.id, "content": "ok"} for b in first.content[1:]]
    messages.append({"role": "user", "content": results})
    with claude.messages.stream(model="demo-model", max_tokens=100, system=SYSTEM, messages=messages) as stream:
        assert "".join(stream.text_stream) == "All done."
        second = stream.get_final_message()
    assert second.stop_reason == "end_turn" and second.usage.cache_read_input_tokens > 0

    count = claude.messages.count_tokens(model="demo-model", system=SYSTEM, messages=messages)
    assert count.input_tokens > 0


# --- the wire ------------------------------------------------------------------------------


def test_events_arrive_incrementally(upstream: DemoUpstream):
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "[[delay:first=0.2,chunk=0.03]] [[script: say " + "word " * 8 + "]]"}],
        "stream": True,
    }
    start = time.monotonic()
    arrivals = []
    with httpx.stream("POST", upstream.base_url + "/v1/chat/completions", json=body) as response:
        headers_at = time.monotonic() - start
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - start)
    assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
    assert headers_at < 0.15 and arrivals[0] >= 0.2  # headers at once, the first event after its delay
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] >= 0.03 * (len(arrivals) - 1) * 0.8


def test_constructor_delays_and_marker_override():
    with DemoUpstream(first_byte_delay=0.3) as slow:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        start = time.monotonic()
        assert httpx.post(slow.base_url + "/v1/chat/completions", json=body).headers["content-length"]
        assert time.monotonic() - start >= 0.3
        body["messages"][0]["content"] = "hi [[delay:first=0]]"
        start = time.monotonic()
        httpx.post(slow.base_url + "/v1/chat/completions", json=body)
        assert time.monotonic() - start < 0.2


def test_injected_status(oai: openai.OpenAI, claude: anthropic.Anthropic):
    with pytest.raises(openai.InternalServerError) as oai_error:
        chat(oai, "[[status:503]]")
    assert oai_error.value.status_code == 503 and oai_error.value.body["type"] == "server_error"
    with pytest.raises(anthropic.APIStatusError) as claude_error:
        claude.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "[[status:529]]"}], stream=True)
    assert claude_error.value.status_code == 529
    assert claude_error.value.body["error"]["type"] == "overloaded_error"

    # Controls act on the request whose last user-side message carries them, tool results included.
    messages: list[dict[str, Any]] = [{"role": "user", "content": '[[script: tool bash {"command": "ls"}]]'}]
    call = oai.chat.completions.create(model="m", messages=messages).choices[0].message.tool_calls[0]
    messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump()]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "[[status:500]]"})
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m", messages=messages)
    # A child's controls nested in the parent's script do not act on the parent.
    assert chat(oai, '[[script: say "not [[status:500]] here"]] ok') == "not [[status:500]] here"


def test_cut_stream_and_body(upstream: DemoUpstream):
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "[[cut:3]] [[script: say a long answer]]"}],
    }
    events = []
    stream = httpx.stream("POST", upstream.base_url + "/v1/messages", json=body | {"stream": True})
    with pytest.raises(httpx.RemoteProtocolError), stream as response:
        for line in response.iter_lines():  # appended one by one: the read fails midway
            if line.startswith("event:"):
                events.append(line)
    assert events == ["event: message_start", "event: ping", "event: content_block_start"]
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(upstream.base_url + "/v1/messages", json=body)


def test_errors_and_routes(upstream: DemoUpstream, oai: openai.OpenAI, claude: anthropic.Anthropic):
    with httpx.Client(base_url=upstream.base_url) as http:
        bad_chat = http.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
        assert bad_chat.status_code == 400 and bad_chat.json()["error"]["type"] == "invalid_request_error"
        bad_messages = http.post("/v1/messages", content=b"[1]")
        assert bad_messages.status_code == 400 and bad_messages.json()["type"] == "error"
        bad_script = http.post("/responses", json={"model": "m", "input": "[[script: dance]]"})
        assert bad_script.status_code == 400 and "bad demo script" in bad_script.json()["error"]["message"]
        missing = http.get("/v2/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["message"]
        head = http.head("/")
        assert head.status_code == 200 and int(head.headers["content-length"]) > 0 and head.content == b""
        assert http.get("/").json()["status"] == "ok"
        assert http.post("/chat/completions", json={"model": "m", "messages": []}).status_code == 200
        chunked = http.post("/v1/messages", content=iter([b'{"model": "m",', b' "max_tokens": 5, "messages": []}']))
        assert chunked.status_code == 200 and upstream.requests[-1].header("transfer-encoding") == "chunked"
        assert http.get("/").status_code == 200  # the connection still works after a chunked body
    assert "demo-model" in [m.id for m in oai.models.list()]
    assert "demo-model" in [m.id for m in claude.models.list()]


def test_requests_are_recorded(upstream: DemoUpstream, oai: openai.OpenAI):
    before = time.time()
    oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-dynamo-session-id": "s-1"})
    (recorded,) = upstream.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.header("X-Dynamo-Session-Id") == "s-1"
    assert ("x-dynamo-session-id", "s-1") in [(k.lower(), v) for k, v in recorded.headers]
    assert recorded.header("user-agent").startswith("OpenAI/Python")
    assert json.loads(recorded.body) == recorded.json and recorded.json["model"] == "m"
    assert before <= recorded.time <= time.time()
    upstream.clear()
    assert upstream.requests == []


def test_replies_are_deterministic(upstream: DemoUpstream):
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": TOOLS_PROMPT}]}
    first, again = (httpx.post(upstream.base_url + "/v1/messages", json=body) for _ in range(2))
    assert first.content == again.content and first.headers["request-id"] == again.headers["request-id"]
    assert re.fullmatch(r"msg_[0-9a-f]{24}", first.json()["id"])


def test_upstream_main_serves_until_interrupted():
    addons = Path(driver.__file__).parents[2]
    env = os.environ | {"PYTHONPATH": str(addons)}
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_lineage.demo.upstream", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        url = process.stdout.readline().split()[-1]
        assert httpx.get(url + "/").status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0


# --- the driver ----------------------------------------------------------------------------


def first_user_text(api: str, body: dict) -> str:
    match api:
        case "openai-chat":
            return next(m["content"] for m in body["messages"] if m["role"] == "user")
        case "openai-responses":
            return body["input"][0]["content"]
        case _:
            return body["messages"][0]["content"]


def delegated_tasks(api: str, body: dict) -> list[str]:
    """The task arguments of the delegate calls in a request's history."""
    match api:
        case "openai-chat":
            calls = [c["function"] for m in body["messages"] for c in m.get("tool_calls", [])]
            return [json.loads(c["arguments"])["task"] for c in calls if c["name"] == "delegate"]
        case "openai-responses":
            items = [i for i in body["input"] if i.get("type") == "function_call" and i["name"] == "delegate"]
            return [json.loads(i["arguments"])["task"] for i in items]
        case _:
            blocks = [b for m in body["messages"] if m["role"] == "assistant" for b in m["content"]]
            return [b["input"]["task"] for b in blocks if b["type"] == "tool_use" and b["name"] == "delegate"]


def wire_independent(value: Any) -> Any:
    """A request body without what differs between streamed and JSON runs (stream flags, ids)."""
    if isinstance(value, dict):
        volatile = {"id", "call_id", "tool_call_id", "tool_use_id", "signature"}
        return {k: "*" if k in volatile else wire_independent(v) for k, v in value.items() if k not in ("stream", "stream_options")}
    if isinstance(value, list):
        return [wire_independent(v) for v in value]
    return value


def test_run_demo(upstream: DemoUpstream):
    bodies = {}
    for stream in (True, False):
        upstream.clear()
        summaries = driver.run_demo(upstream.base_url, stream=stream)
        assert [s.api for s in summaries] == list(driver.APIS)
        for s in summaries:
            assert s.stream is stream and s.requests == driver.REQUESTS_PER_SESSION == 6
            assert s.answers == ("The project holds README.md (42 lines) and src/.", "The code lives in src/.")
            assert s.subagent_answers == ("README.md has 42 lines.",)
        recorded = upstream.requests
        assert len(recorded) == 18
        for n, api in enumerate(driver.APIS):
            session = [r.json for r in recorded[6 * n : 6 * n + 6]]
            # main, main, subagent, subagent, main (after the subagent's answer), main (turn 2)
            firsts = [first_user_text(api, body) for body in session]
            assert firsts == [driver.FIRST_PROMPT] * 2 + [driver.SUBAGENT_PROMPT] * 2 + [driver.FIRST_PROMPT] * 2
            assert delegated_tasks(api, session[4]) == [driver.SUBAGENT_PROMPT]
            # ls, delegate and the subagent's wc: three calls, three distinct ids
            call_ids = {m for body in session for m in re.findall(r"(?:call|toolu)_[0-9a-f]{24}", json.dumps(body))}
            assert len(call_ids) == 3
        for r in recorded:
            assert {k.lower() for k, _ in r.headers} == {
                "host",
                "accept-encoding",
                "content-length",
                "content-type",
                "user-agent",
            }
            assert r.header("user-agent") == driver.USER_AGENT
        bodies[stream] = [wire_independent(r.json) for r in recorded]
    assert bodies[True] == bodies[False]  # the SSE readers rebuild exactly what the JSON replies hold


def test_run_demo_is_deterministic(upstream: DemoUpstream, capsys: pytest.CaptureFixture[str]):
    driver.main([upstream.base_url, "--api", "anthropic-messages", "--no-stream"])
    first = [r.body for r in upstream.requests]
    upstream.clear()
    driver.main([upstream.base_url, "--api", "anthropic-messages", "--no-stream"])
    assert [r.body for r in upstream.requests] == first
    assert capsys.readouterr().out.count("anthropic-messages: 6 requests\n") == 2
