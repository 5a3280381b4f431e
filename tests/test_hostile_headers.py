"""Hostile lineage input: the client's x-dynamo-* headers (kept, cleaned or removed by the policy in
agent_lineage/hints.py) and hostile harness ids, in-process through the addon (taddons)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from mitmproxy.http import Headers
from mitmproxy.test import taddons, tflow, tutils

import hostile as H
import lineage  # addons/lineage.py
import payloads as P
from agent_lineage.hints import client_hints
from agent_lineage.ids import MAX_ID_BYTES


@pytest.mark.parametrize(
    ("name", "value", "forwarded"),
    [
        ("x-dynamo-request-priority", "5", "5"),
        ("x-dynamo-request-priority", " -2147483648 ", "-2147483648"),
        ("x-dynamo-request-priority", "2147483648", None),  # beyond 32 bits
        ("x-dynamo-request-priority", "high", None),
        ("x-dynamo-request-priority", "1.5", None),
        ("x-dynamo-request-priority", "5, 7", None),  # sent twice
        ("x-dynamo-request-strict-priority", "1", "1"),
        ("x-dynamo-request-strict-priority", "", None),
        ("x-dynamo-meta-policy-class", "interactive", "interactive"),
        ("x-dynamo-meta-policy-class", "a b", None),
        ("x-dynamo-meta-policy-class", "x" * 129, None),
        ("x-dynamo-meta-policy-class", "é", None),
        ("x-dynamo-future-hint", "anything printable", "anything printable"),
        ("x-dynamo-future-hint", "\x7f", None),
    ],
)
def test_client_hints_policy(name, value, forwarded):
    changes = client_hints({name: value, "x-other": "\x00"})
    assert changes.get(name, value) == forwarded
    assert "x-other" not in changes


@pytest.fixture
def addon(tmp_path: Path):
    addon = lineage.Lineage()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, lineage_dir=str(tmp_path / "traces"), lineage_calls_log=str(tmp_path / "calls.jsonl"))
        yield addon
        addon.done()


def send(addon, headers: list[tuple[bytes, bytes]], path: str = P.CHAT_PATH):
    request, reply, _ = H.SEEDS[path]
    fields = Headers([(b"content-type", b"application/json"), *headers])
    flow = tflow.tflow(req=tutils.treq(method=b"POST", path=path.encode(), headers=fields, content=orjson.dumps(request)))
    addon.request(flow)
    flow.response = tutils.tresp(headers=Headers([(b"content-type", b"application/json")]), content=orjson.dumps(reply))
    addon.responseheaders(flow)
    addon.response(flow)
    return flow


def dynamo_fields(flow) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in flow.request.headers.fields if k.lower().startswith(b"x-dynamo-")]


@pytest.mark.parametrize("lineage", [[], [(b"x-dynamo-session-id", b"client-session")]], ids=["body-decides", "headers-decide"])
def test_invalid_hints_are_not_forwarded_valid_ones_are(addon, caplog, lineage):
    hints = [
        (b"x-dynamo-request-priority", b"urgent"),
        (b"X-Dynamo-Request-Strict-Priority", b"3"),
        (b"x-dynamo-meta-policy-class", b"batch"),
    ]
    with caplog.at_level("WARNING", logger="agent_lineage"):
        flow = send(addon, [*lineage, *hints])
    assert not caplog.records
    fields = dict(dynamo_fields(flow))
    assert b"x-dynamo-request-priority" not in fields
    assert fields[b"x-dynamo-request-strict-priority"] == b"3" and fields[b"x-dynamo-meta-policy-class"] == b"batch"


HOSTILE_IDS = [
    b"../../../../tmp/escape",
    b"..",
    b"a/b\\c",
    b"id\x01with\x1bcontrol",
    b"x" * 10_240,
    "sess-é-中".encode(),
    b"\xff\xfe\xfd",
    b"s" * MAX_ID_BYTES,
    b"s" * (MAX_ID_BYTES + 1),
]


@pytest.mark.parametrize("raw", HOSTILE_IDS, ids=lambda raw: repr(raw[:20]))
@pytest.mark.parametrize("header", [b"x-dynamo-session-id", b"x-claude-code-session-id", b"session-id"])
def test_hostile_ids_stamp_one_valid_lineage_and_write_inside_the_directory(addon, tmp_path, header, raw):
    flow = send(addon, [(header, raw), (header, raw), (b"x-dynamo-parent-session-id", raw)], P.ANTHROPIC_PATH)
    fields = dynamo_fields(flow)
    names = [k for k, _ in fields]
    assert names.count(b"x-dynamo-session-id") == 1 and names.count(b"x-dynamo-parent-session-id") <= 1
    for _, value in fields:
        assert 0 < len(value) <= MAX_ID_BYTES and all(0x21 <= b <= 0x7E for b in value), value
    addon.done()
    traces = (tmp_path / "traces").resolve()
    files = list(traces.iterdir())
    assert len(files) == 1 and files[0].parent == traces and not files[0].name.startswith(".")
    assert not list(tmp_path.parent.glob("escape*"))
    stamped = {value.decode() for _, value in fields}  # the root is the agent or its parent
    assert orjson.loads(files[0].read_bytes())["session_id"] in stamped
