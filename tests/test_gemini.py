"""The Gemini API: codec (requests, JSON, SSE and JSON-array streams, call ids), the demo
upstream's Gemini, and the google-genai SDK through a real mitmdump."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import types

import payloads as P
from agent_lineage.calls import ResponseReader, read_response, start_call
from agent_lineage.codecs import MalformedBody, codec_for
from agent_lineage.codecs.gemini import call_id
from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.model import Exchange, Response, Usage
from agent_lineage.offline import read_flows, replay
from agent_lineage.pipeline import CallLog, Pipeline

STUDIO = "/v1beta/models/gemini-2.5-pro:generateContent"
STUDIO_STREAM = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
VERTEX = "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent"
SECRET = "AIza-not-a-real-key"


def request(path: str, body: dict[str, Any]) -> Any:
    return start_call(Exchange("x", "POST", path, {}, orjson.dumps(body), 0.0))


def conversation() -> dict[str, Any]:
    """A Gemini CLI-shaped turn: two parallel calls of one tool, their responses, thinking."""
    return {
        "systemInstruction": {"role": "user", "parts": [{"text": "You are an interactive CLI agent."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "<session_context>cwd</session_context>"}, {"text": "List both dirs"}]},
            {
                "role": "model",
                "parts": [
                    {"text": "Planning the listing", "thought": True},
                    {"functionCall": {"name": "list_directory", "args": {"dir_path": "a"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "list_directory", "args": {"dir_path": "b"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "list_directory", "response": {"output": "a1 a2"}}},
                    {"functionResponse": {"name": "list_directory", "response": {"error": "no such dir"}}},
                ],
            },
        ],
        "tools": [{"functionDeclarations": [{"name": "list_directory", "description": "ls", "parametersJsonSchema": {"type": "object"}}]}],
        "generationConfig": {"temperature": 0, "maxOutputTokens": 2048, "thinkingConfig": {"includeThoughts": True}},
    }


# --- routing and requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        STUDIO,
        STUDIO_STREAM,
        "/v1/models/gemini-2.0-flash:generateContent?key=abc",
        VERTEX,
        "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:generateContent",
        "/v1beta/models/gemini-2.5-pro:countTokens",
    ],
)
def test_gemini_paths(path: str) -> None:
    codec = codec_for("POST", path)
    assert codec is not None and codec.api == "gemini"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1beta/models"),
        ("GET", STUDIO),
        ("POST", "/v1beta/models/gemini-2.5-pro:embedContent"),
        ("POST", "/v1beta/models/x:predict"),
    ],
)
def test_gemini_other_traffic(method: str, path: str) -> None:
    assert codec_for(method, path) is None


def test_request_messages_calls_and_results_paired_by_name_and_order() -> None:
    call = request(STUDIO, conversation())
    assert (call.api, call.model, call.stream) == ("gemini", "gemini-2.5-pro", False)
    assert call.system == "You are an interactive CLI agent."
    assert [m.role for m in call.messages] == ["user", "assistant", "user"]
    assert call.messages[0].text == "<session_context>cwd</session_context>\nList both dirs"
    model = call.messages[1]
    assert model.reasoning == "Planning the listing" and model.text == ""
    assert [(c.name, json.loads(c.arguments)) for c in model.tool_calls] == [
        ("list_directory", {"dir_path": "a"}),
        ("list_directory", {"dir_path": "b"}),
    ]
    ids = [c.id for c in model.tool_calls]
    assert ids == [call_id("list_directory", {"dir_path": "a"}, 0), call_id("list_directory", {"dir_path": "b"}, 1)]
    assert len(set(ids)) == 2 and all(i.startswith("gemini-") for i in ids)
    results = call.messages[2].tool_results
    assert [(r.call_id, r.content, r.is_error) for r in results] == [(ids[0], "a1 a2", False), (ids[1], "no such dir", True)]
    assert [t.name for t in call.tools] == ["list_directory"] and call.tools[0].parameters == {"type": "object"}
    assert call.fields["max_tokens"] == 2048 and "response_format" not in call.fields


def test_ids_the_client_invents_pair_results_but_never_replace_derived_ids_and_snake_case_reads() -> None:
    """Gemini CLI writes ids of its own into the history it resends: they pair a response with
    its call (here against name order), but the call keeps the id its answer got."""
    body = {
        "system_instruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {
                "role": "model",
                "parts": [
                    {"function_call": {"id": "run_17_0", "name": "run", "args": {}}},
                    {"function_call": {"id": "run_17_1", "name": "run", "args": {"n": 2}}},
                ],
            },
            {
                "role": "function",
                "parts": [
                    {"function_response": {"id": "run_17_1", "name": "run", "response": {"x": 2}}},
                    {"function_response": {"id": "run_17_0", "name": "run", "response": {"x": 1}}},
                ],
            },
        ],
        "generation_config": {"response_mime_type": "application/json", "response_json_schema": {"type": "object"}},
    }
    call = request(VERTEX, body)
    assert call.model == "gemini-2.5-flash" and call.stream is True and call.system == "sys"
    derived = [call_id("run", {}, 0), call_id("run", {"n": 2}, 1)]
    assert [c.id for c in call.messages[1].tool_calls] == derived
    assert [(r.call_id, r.content) for r in call.messages[2].tool_results] == [(derived[1], '{"x":2}'), (derived[0], '{"x":1}')]
    assert call.fields["response_format"] == {"type": "json_schema", "schema": {"type": "object"}}


def test_unanswerable_response_names_stay_distinct() -> None:
    body = {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "ghost", "response": {}}}]}]}
    assert request(STUDIO, body).messages[0].tool_results[0].call_id == "gemini-unmatched-ghost-0"


def test_count_tokens_is_a_side_request() -> None:
    inner = {"model": "models/gemini-2.5-pro", "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    call = request("/v1beta/models/gemini-2.5-pro:countTokens", {"generateContentRequest": inner})
    assert call.side == "count-tokens" and call.messages[0].text == "hi"
    response = P.parse_json_response("/v1beta/models/gemini-2.5-pro:countTokens", {"totalTokens": 31})
    assert response.usage.input_tokens == 31 and response.complete


@pytest.mark.parametrize("body", [{}, {"contents": "hi"}, {"contents": [1]}, {"contents": [{"role": "user"}]}])
def test_malformed_request(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedBody):
        request(STUDIO, body)


# --- responses ---------------------------------------------------------------------------------


def answer_chunks() -> list[dict[str, Any]]:
    """A streamed answer as Gemini sends it: thinking and text in pieces, calls whole, usage restated."""
    usage = {"promptTokenCount": 900, "cachedContentTokenCount": 512, "totalTokenCount": 900}
    return [
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Let me ", "thought": True}]}, "index": 0}],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r-1",
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "look", "thought": True}]}, "index": 0}],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r-1",
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Checking "}]}, "index": 0}],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r-1",
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "both."}]}, "index": 0}],
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r-1",
        },
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "list_directory", "args": {"dir_path": "a"}}, "thoughtSignature": "c2ln"}],
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": usage | {"candidatesTokenCount": 20, "thoughtsTokenCount": 7, "totalTokenCount": 927},
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r-1",
        },
    ]


def expected_answer(complete: bool = True) -> Response:
    whole = {
        "candidates": [
            {"content": {"role": "model", "parts": [p for c in answer_chunks() for p in c["candidates"][0]["content"]["parts"]]}}
        ]
    }
    response = P.parse_json_response(STUDIO, whole)
    assert response.output is not None
    response.id, response.model, response.stop_reason, response.complete = "r-1", "gemini-2.5-pro", "STOP", complete
    response.usage = Usage(input_tokens=900, output_tokens=27, cache_read_tokens=512, reasoning_tokens=7)
    return response


def test_json_response() -> None:
    body = answer_chunks()[-1] | {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "Hi", "thought": True}, {"text": "Hello"}]}, "finishReason": "STOP"}
        ]
    }
    response = P.parse_json_response(STUDIO, body)
    assert response.output.text == "Hello" and response.output.reasoning == "Hi"
    assert response.usage == Usage(input_tokens=900, output_tokens=27, cache_read_tokens=512, reasoning_tokens=7)
    assert (response.id, response.model, response.stop_reason, response.complete) == ("r-1", "gemini-2.5-pro", "STOP", True)


def test_stream_equals_the_whole_answer_at_every_split() -> None:
    data = b"".join(f"data: {json.dumps(c)}\r\n\r\n".encode() for c in answer_chunks())
    expected = expected_answer()
    assert expected.output.text == "Checking both." and expected.output.reasoning == "Let me look"
    assert [c.name for c in expected.output.tool_calls] == ["list_directory"]
    for chunks in [None, P.byte_chunks(data), *P.two_piece_splits(data)]:
        assert P.stream_response(STUDIO_STREAM, data, chunks) == expected


def test_streamed_answer_resent_by_the_client_keeps_its_call_ids() -> None:
    """The ids the answer gets are the ids its resent history gets, so results pair up."""
    data = b"".join(f"data: {json.dumps(c)}\r\n\r\n".encode() for c in answer_chunks())
    answer = P.stream_response(STUDIO_STREAM, data)
    history = {"role": "model", "parts": [{"text": "Checking both."}, answer_chunks()[-1]["candidates"][0]["content"]["parts"][0]]}
    body = {"contents": [{"role": "user", "parts": [{"text": "go"}]}, history]}
    assert request(STUDIO, body).messages[1].fingerprint() == answer.output.fingerprint()


def test_json_array_stream_read_whole_and_cut() -> None:
    data = ("[" + ",\r\n".join(json.dumps(c, indent=2) for c in answer_chunks()) + "]").encode()
    call = request(VERTEX, conversation())
    whole = read_response(call, 200, {"content-type": "application/json"}, data, 1.0)
    assert whole.error is None and whole.response == expected_answer()
    cut = read_response(request(VERTEX, conversation()), 200, {"content-type": "application/json"}, data[:-40], 1.0)
    assert cut.error and "unreadable" in cut.error and cut.response.output is None


def test_stream_cut_before_finish_is_incomplete_and_never_raises() -> None:
    data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in answer_chunks())
    for n in range(0, len(data) + 1, 7):
        P.stream_response(STUDIO_STREAM, data[:n])
    cut = P.stream_response(STUDIO_STREAM, data[: data.rindex(b"data:")])
    assert cut.complete is False and cut.output.text == "Checking both." and not cut.output.tool_calls


def test_errors_in_json_and_in_the_stream() -> None:
    error = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}
    assert P.parse_json_response(STUDIO, error).error == "RESOURCE_EXHAUSTED: Resource has been exhausted"
    assert P.stream_response(STUDIO_STREAM, f"data: {json.dumps(error)}\n\n".encode()).error.startswith("RESOURCE_EXHAUSTED")
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    response = P.parse_json_response(STUDIO, blocked)
    assert response.stop_reason == "SAFETY" and response.output is None
    with pytest.raises(MalformedBody):
        P.parse_json_response(STUDIO, [1, 2])


def test_reader_follows_the_array_stream_chunk_by_chunk() -> None:
    data = ("[" + ",\r\n".join(json.dumps(c) for c in answer_chunks()) + "]").encode()
    reader = ResponseReader(request(VERTEX, conversation()), 200, {"content-type": "application/json"})
    for i in range(0, len(data), 13):
        reader.feed(data[i : i + 13])
    assert reader.finish(1.0).response == expected_answer()


# --- the demo upstream's Gemini ----------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream():
    with DemoUpstream() as server:
        yield server


SCRIPT = '[[script: tools lookup {"city": "Paris"} lookup {"city": "Rome"} ; think weighing both ; say Paris is warmer.]]'
PROMPT = f"Compare the weather. {SCRIPT}"


def test_demo_upstream_answers_gemini_in_every_form(upstream, no_proxy_env) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    with httpx.Client(base_url=upstream.base_url, timeout=10) as client:
        plain = client.post(STUDIO, json=body).json()
        sse = client.post(STUDIO_STREAM, json=body)
        array = client.post(VERTEX, json=body)
        tokens = client.post("/v1beta/models/m:countTokens", json=body).json()
        bad = client.post(STUDIO, json={"contents": [{"role": "user", "parts": [{"text": "[[script: nope]]"}]}]})
        failing = client.post(STUDIO, json={"contents": [{"role": "user", "parts": [{"text": "x [[status:503]]"}]}]})
    calls = [p["functionCall"] for p in plain["candidates"][0]["content"]["parts"]]
    assert calls == [{"name": "lookup", "args": {"city": "Paris"}}, {"name": "lookup", "args": {"city": "Rome"}}]
    assert plain["modelVersion"] == "gemini-2.5-pro" and plain["candidates"][0]["finishReason"] == "STOP"
    assert sse.headers["content-type"].startswith("text/event-stream") and sse.text.count("data: ") == 2
    assert array.headers["content-type"] == "application/json"
    chunks = array.json()
    assert isinstance(chunks, list) and [c["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["city"] for c in chunks] == [
        "Paris",
        "Rome",
    ]
    assert tokens["totalTokens"] > 0
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert failing.status_code == 503 and failing.json()["error"]["status"] == "UNAVAILABLE"
    # The continuation with both responses gets the next steps: thinking, then the answer.
    body["contents"] += [
        plain["candidates"][0]["content"],
        {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"output": "21C"}}}] * 2},
    ]
    with httpx.Client(base_url=upstream.base_url, timeout=10) as client:
        parts = client.post(STUDIO, json=body).json()["candidates"][0]["content"]["parts"]
    assert parts == [{"text": "weighing both", "thought": True}, {"text": "Paris is warmer."}]


def test_demo_upstream_structured_output_for_gemini(upstream, no_proxy_env) -> None:
    schema = {
        "type": "object",
        "properties": {"next_speaker": {"type": "string", "enum": ["user", "model"]}, "reasoning": {"type": "string"}},
    }
    body = {
        "contents": [{"role": "user", "parts": [{"text": "Who speaks next? [[script: say no]]"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema},
    }
    reply = httpx.post(upstream.base_url + STUDIO, json=body, timeout=10).json()
    assert json.loads(reply["candidates"][0]["content"]["parts"][0]["text"]) == {"next_speaker": "user", "reasoning": "Who speaks next?"}


# --- the google-genai SDK through mitmdump -----------------------------------------------------


@pytest.fixture
def proxy(mitmdump_factory, upstream, tmp_path, no_proxy_env):
    upstream.clear()
    return mitmdump_factory(
        f"reverse:{upstream.base_url}",
        "--set",
        f"lineage_calls_log={tmp_path / 'calls.jsonl'}",
        "--set",
        f"lineage_dir={tmp_path / 'traces'}",
        "-w",
        str(tmp_path / "flows.mitm"),
    )


def recorded_calls(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def offline_calls(flows_file: Path, tmp_path: Path) -> list[dict]:
    out = tmp_path / "offline-calls.jsonl"
    log = CallLog(out)
    replay(read_flows(flows_file), Pipeline(sinks=[log]))
    log.close()
    return recorded_calls(out)


def sdk_turn(client: genai.Client, stream: bool) -> list[list[types.Part]]:
    """One tool loop: the SDK's request, our function responses, the final answer."""
    contents = [types.Content(role="user", parts=[types.Part(text=PROMPT)])]
    config = types.GenerateContentConfig(
        system_instruction="You are terse.",
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup", parameters_json_schema={"type": "object"})])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    replies = []
    for _ in range(2):
        if stream:
            parts = [
                p
                for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents=contents, config=config)
                for p in chunk.candidates[0].content.parts
            ]
            text = "".join(p.text for p in parts if p.text and not p.thought)
            thought = "".join(p.text for p in parts if p.text and p.thought)
            parts = (
                ([types.Part(text=thought, thought=True)] if thought else [])
                + ([types.Part(text=text)] if text else [])
                + [p for p in parts if p.function_call]
            )
        else:
            parts = client.models.generate_content(model="gemini-2.5-flash", contents=contents, config=config).candidates[0].content.parts
        replies.append(parts)
        contents.append(types.Content(role="model", parts=parts))
        responses = [
            types.Part(
                function_response=types.FunctionResponse(
                    name=p.function_call.name, response={"output": f"{p.function_call.args['city']}: 21C"}
                )
            )
            for p in parts
            if p.function_call
        ]
        if responses:
            contents.append(types.Content(role="user", parts=responses))
    return replies


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_google_genai_sdk_through_mitmdump(proxy, upstream, tmp_path, stream) -> None:
    client = genai.Client(api_key=SECRET, http_options=types.HttpOptions(base_url=proxy.url, retry_options=None))
    replies = sdk_turn(client, stream)
    assert [p.function_call.args for p in replies[0]] == [{"city": "Paris"}, {"city": "Rome"}]
    assert [p.text for p in replies[1]] == ["weighing both", "Paris is warmer."]

    requests = upstream.requests
    assert [r.path.split("?")[0].rsplit(":", 1)[1] for r in requests] == ["streamGenerateContent" if stream else "generateContent"] * 2
    assert all(r.header("x-goog-api-key") == SECRET for r in requests)  # forwarded to the upstream, not kept
    sessions = [r.header("x-dynamo-session-id") for r in requests]
    assert sessions[0] == sessions[1] and sessions[0].startswith("sess-")

    proxy.stop()
    calls = recorded_calls(tmp_path / "calls.jsonl")
    first, second = calls
    assert [c["api"] for c in calls] == ["gemini", "gemini"] and first["stream"] is second["stream"] is stream
    assert first["system"] == "You are terse." and first["model"] == "gemini-2.5-flash"
    made = first["response"]["output"]["tool_calls"]
    assert [json.loads(c["arguments"]) for c in made] == [{"city": "Paris"}, {"city": "Rome"}]
    results = [r for m in second["new_messages"] for r in m["tool_results"]]
    assert [r["call_id"] for r in results] == [c["id"] for c in made] and [r["content"] for r in results] == ["Paris: 21C", "Rome: 21C"]
    assert second["response"]["output"] | {"tool_calls": []} == {
        **second["response"]["output"],
        "text": "Paris is warmer.",
        "reasoning": "weighing both",
    }
    for call in calls:
        assert call["status"] == 200 and call["error"] is None and call["response"]["complete"] is True
        assert call["response"]["usage"]["input_tokens"] > 0 and call["response"]["usage"]["cache_read_tokens"] is not None
    assert second["response"]["usage"]["cache_read_tokens"] > 0 and second["response"]["usage"]["reasoning_tokens"] > 0
    assert first["scope"]["agent_id"] == second["scope"]["agent_id"] == sessions[0]
    assert (first["scope"]["new_turn"], second["scope"]["new_turn"]) == (True, False)
    assert offline_calls(tmp_path / "flows.mitm", tmp_path) == calls
    trajectory = json.loads((tmp_path / "traces" / f"trajectory-{sessions[0]}.json").read_text())
    observed = [o for s in trajectory["steps"] for o in (s.get("observation") or {}).get("results", [])]
    assert [o["content"] for o in observed] == ["Paris: 21C", "Rome: 21C"]
    for path in (tmp_path / "calls.jsonl", tmp_path / "flows.mitm", *(tmp_path / "traces").iterdir()):
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.e2e
def test_array_stream_and_key_query_through_mitmdump(proxy, upstream, tmp_path) -> None:
    """Vertex path, the JSON-array stream (no alt=sse), the key in the query: passed through
    byte for byte, read, and the key never on disk."""
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    direct = httpx.post(f"{upstream.base_url}{VERTEX}?key={SECRET}", json=body, timeout=10)
    proxied = httpx.post(f"{proxy.url}{VERTEX}?key={SECRET}", json=body, timeout=10)
    assert proxied.status_code == 200 and proxied.content == direct.content
    assert upstream.requests[-1].path.endswith(f"?key={SECRET}")  # the upstream still gets its key
    proxy.stop()
    (call,) = recorded_calls(tmp_path / "calls.jsonl")
    assert call["api"] == "gemini" and call["stream"] is True and call["error"] is None
    assert call["path"] == VERTEX + "?key=<redacted>" and call["response"]["complete"] is True
    assert [c["name"] for c in call["response"]["output"]["tool_calls"]] == ["lookup", "lookup"]
    for path in (tmp_path / "calls.jsonl", tmp_path / "flows.mitm", proxy.log_path):
        assert SECRET.encode() not in path.read_bytes(), path
