"""`lineage_priority`: x-dynamo-request-priority by scope, into a real Dynamo 1.6.1 frontend.

Dynamo 1.6.1 reads the header into the request's `nvext.agent_hints.priority` (an integer; a
value that is not one is dropped), which its request trace shows when it records payloads
(`DYN_REQUEST_TRACE_RECORDS=request_end,request_payload`). What its router and engines then do
with the hint is Dynamo's business: this proves the hint arrives, per scope, and is accepted.
"""

from __future__ import annotations

import json

import httpx
import pytest

from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.model import Exchange
from agent_lineage.pipeline import Pipeline
from agent_lineage.settings import Settings, parse_priority
from conftest import Mitmdump
from dynamo_support import dynamo

LEVELS = "main=5,subagent=5,side=-1"


def chat(label: str, messages: list[dict], headers: dict[str, str], **fields) -> tuple[dict, dict]:
    return {"x-request-id": label, **headers}, {"model": dynamo.MODEL_NAME, "max_tokens": 8, "messages": messages, **fields}


SESSION = {"x-claude-code-session-id": "5e55-1on"}
TOOLS = [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}]  # agents declare tools
REQUESTS = {
    # label: (headers, body, the priority Dynamo should have parsed)
    "main": (*chat("main", [{"role": "user", "content": "Fix the build, please."}], SESSION, tools=TOOLS), 5),
    "subagent": (
        *chat("subagent", [{"role": "user", "content": "Look at the logs."}], SESSION | {"x-claude-code-agent-id": "a1"}, tools=TOOLS),
        5,
    ),
    "probe": (*chat("probe", [{"role": "user", "content": "test"}], SESSION, max_tokens=1), -1),
    # A priority the client sends itself is left alone.
    "own": (*chat("own", [{"role": "user", "content": "Urgent."}], SESSION | {"x-dynamo-request-priority": "9"}, tools=TOOLS), 9),
}


@pytest.mark.dynamo
@pytest.mark.e2e
def test_priority_by_scope_reaches_dynamo(tmp_path, no_proxy_env):
    dynamo.setup(log=lambda message: print(message, flush=True))
    trace = tmp_path / "trace.jsonl"
    env = {"DYN_LOGGING_JSONL": "1", "DYN_REQUEST_TRACE_RECORDS": "request_end,request_payload"}
    with dynamo.Dynamo(tmp_path / "run", trace=trace, env=env) as frontend:
        proxy = Mitmdump(tmp_path, f"reverse:{frontend.url}", "--set", f"lineage_priority={LEVELS}")
        try:
            with httpx.Client(base_url=proxy.url, timeout=60) as client:
                for headers, body, _ in REQUESTS.values():
                    assert client.post("/v1/chat/completions", headers=headers, json=body).status_code == 200
        finally:
            proxy.stop()
    parsed = priorities_in_trace(trace)  # complete once the frontend has stopped (it buffers)
    assert parsed == {label: expected for label, (_, _, expected) in REQUESTS.items()}


def priorities_in_trace(trace) -> dict[str, int | None]:
    """x-request-id -> the `nvext.agent_hints.priority` Dynamo recorded in the request's payload."""
    labels, hints = {}, {}
    for line in trace.read_text().splitlines():
        event = json.loads(line).get("event", {})
        if event.get("event_type") == "request_end":
            request = event.get("request") or {}
            labels[request.get("request_id")] = request.get("x_request_id")
        elif event.get("event_type") == "request_payload":
            payload = event.get("payload") or {}
            agent_hints = ((payload.get("request") or {}).get("nvext") or {}).get("agent_hints") or {}
            hints[payload.get("request_id")] = agent_hints.get("priority")
    return {labels[request_id]: priority for request_id, priority in hints.items() if request_id in labels}


# --- the pure core: off by default, levels per scope --------------------------------------------


def stamped(settings: Settings, headers: dict[str, str], body: dict) -> dict[str, str | None]:
    outcome = Pipeline(settings).request(Exchange("x", "POST", "/v1/chat/completions", headers, json.dumps(body).encode(), 1.0))
    assert outcome is not None
    return outcome.headers


def test_priority_is_off_by_default_and_follows_the_scope():
    _, main, _ = REQUESTS["main"]
    assert "x-dynamo-request-priority" not in stamped(Settings(), SESSION, main)
    levels = Settings(priority=parse_priority(LEVELS))
    for label, (headers, body, expected) in REQUESTS.items():
        sent = {k: v for k, v in headers.items() if k != "x-request-id"}
        assert stamped(levels, sent, body).get("x-dynamo-request-priority") == (None if label == "own" else str(expected)), label
    # Only the scopes named get one; no stamping at all means no hint either.
    assert "x-dynamo-request-priority" not in stamped(Settings(priority={"side": 0}), SESSION, main)
    assert stamped(Settings(stamp=False, priority=parse_priority(LEVELS)), SESSION, main) == {}


@pytest.mark.parametrize("text", ["main", "main=high", "agent=1", "main=1,,side"])
def test_bad_priority_option_is_refused(text, mitmdump_factory, no_proxy_env):
    with pytest.raises(ValueError):
        parse_priority(text)
    with DemoUpstream() as upstream, pytest.raises(RuntimeError, match="lineage_priority"):
        mitmdump_factory(f"reverse:{upstream.base_url}", "--set", f"lineage_priority={text}")
