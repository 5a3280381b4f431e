"""Property-based tests (hypothesis) of everything that reads client or upstream bytes: the request
and response codecs of every wire API (JSON and SSE), the SSE parser, the body decoders, the scope
tracker, and the addon in-process. Inputs are valid traffic mutated (tests/hostile.py): values of
the wrong type, deep nesting, lone surrogates, cut and flipped bytes, random chunking, wrong
content types and encodings, huge single events.

The properties: no exception ever escapes and none is logged; a request we cannot read raises
only MalformedBody (the addon forwards it unchanged and logs it once); every call we can read is
recorded (calls log and a trajectory file that is valid JSON); nothing forwarded changes by a byte.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import orjson
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy.http import Headers
from mitmproxy.test import taddons, tflow, tutils

import hostile as H
import lineage  # addons/lineage.py, on sys.path through conftest
from agent_lineage.calls import ResponseReader, start_call
from agent_lineage.codecs import MalformedBody
from agent_lineage.harness import load_table
from agent_lineage.ids import MAX_ID_BYTES
from agent_lineage.model import Exchange
from agent_lineage.pipeline import CallLog, Pipeline
from agent_lineage.sse import SSEParser, decode_body, incremental_decoder
from agent_lineage.trajectories import TrajectoryFiles, trajectory_file_name


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def agent_lineage_log() -> Iterator[list[logging.LogRecord]]:
    """What the core logs meanwhile (hypothesis cannot use pytest's per-test caplog)."""
    handler = _Records()
    logger = logging.getLogger("agent_lineage")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@contextmanager
def example_context(*addons: object) -> Iterator[taddons.context]:
    """taddons.context for one hypothesis example. mitmproxy 12 keeps a context's log handler for
    the rest of the pytest test (it keys them by test), and once that context's event loop is
    closed the handler breaks every later log call: take it out with the context."""
    with taddons.context(*addons) as tctx:
        try:
            yield tctx
        finally:
            legacy = getattr(tctx.master, "_legacy_log_events", None)
            if legacy is not None:
                legacy.uninstall()


def assert_no_traceback(records: list[logging.LogRecord]) -> None:
    failures = [r.getMessage() for r in records if r.exc_info or r.levelno >= logging.ERROR]
    assert not failures, failures


def exchange(path: str, body: bytes, encoding: str | None = None, headers: dict[str, str] | None = None) -> Exchange:
    request_headers = {"content-type": "application/json", **(headers or {})}
    if encoding:
        request_headers["content-encoding"] = encoding
    return Exchange("x1", "POST", path, request_headers, body, 1000.0, "127.0.0.1 hostile/1.0")


def record(pipeline_calls: Path, traces: Path) -> list[dict]:
    """The calls log's lines; every trajectory written is valid JSON."""
    for file in traces.glob("*.json"):
        orjson.loads(file.read_bytes())
    assert not list(traces.glob(".*.tmp")), "a temp file was left behind"
    return [orjson.loads(line) for line in pipeline_calls.read_bytes().splitlines()]


HARNESS_TABLE = load_table()


@contextmanager
def recording_pipeline() -> Iterator[tuple[Pipeline, Path, Path]]:
    """A fresh pipeline per example, recording into a temp directory (the harness table is
    parsed once: YAML parsing would dominate the run time)."""
    with tempfile.TemporaryDirectory() as tmp, mock.patch("agent_lineage.pipeline.load_table", return_value=HARNESS_TABLE):
        traces, calls = Path(tmp) / "traces", Path(tmp) / "calls.jsonl"
        pipeline = Pipeline(sinks=[TrajectoryFiles(traces, replace_existing=True), CallLog(calls)])
        yield pipeline, calls, traces


# --- request codecs -------------------------------------------------------------------------


@given(st.data())
def test_request_codecs_raise_only_malformed_body_and_record_what_they_read(data):
    path = data.draw(st.sampled_from(H.PATHS), label="path")
    request, reply, _ = H.SEEDS[path]
    body, encoding = data.draw(H.json_body(request).flatmap(H.encoded), label="body")
    with agent_lineage_log() as records, recording_pipeline() as (pipeline, calls, traces):
        outcome = pipeline.request(exchange(path, body, encoding))
        if outcome is None:  # unreadable: said once, as a warning
            assert [r.levelno for r in records] == [logging.WARNING]
            assert "forwarded unchanged" in records[0].getMessage()
            return
        reader = pipeline.response_reader(outcome.call, 200, {"content-type": "application/json"}, 1000.5)
        reader.feed(H.dumps(reply))
        pipeline.finish(reader, 1001.0)
        pipeline.close()
        assert_no_traceback(records)
        assert [c["exchange_id"] for c in record(calls, traces)] == ["x1"]
        assert list(traces.glob("trajectory-*.json"))


@given(st.sampled_from(H.PATHS), st.integers(1025, 20_000))
def test_deeply_nested_request_is_malformed_not_a_crash(path, depth):
    body = b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    try:
        start_call(exchange(path, body))
    except MalformedBody:
        pass


# --- response readers -----------------------------------------------------------------------


@given(st.data())
def test_response_readers_never_raise_and_the_call_is_recorded(data):
    path = data.draw(st.sampled_from(H.PATHS), label="path")
    request, reply, stream = H.SEEDS[path]
    if data.draw(st.booleans(), label="sse"):
        body = data.draw(H.sse_body(stream), label="sse body")
    else:
        body = data.draw(H.json_body(reply), label="json body")
    body, encoding = data.draw(H.encoded(body), label="encoding")
    headers = {"content-type": data.draw(H.content_types, label="content-type")}
    if encoding:
        headers["content-encoding"] = encoding
    status = data.draw(st.sampled_from([200, 200, 400, 429, 500, 529]), label="status")
    with agent_lineage_log() as records, recording_pipeline() as (pipeline, calls, traces):
        outcome = pipeline.request(exchange(path, H.dumps(request)))
        assert outcome is not None
        reader = pipeline.response_reader(outcome.call, status, headers, 1000.5)
        for chunk in data.draw(H.chunked(body), label="chunks"):
            reader.feed(chunk)
            pipeline.learn_answered(reader)
        pipeline.finish(reader, 1001.0, data.draw(st.sampled_from([None, "connection reset"]), label="error"))
        pipeline.close()
        assert_no_traceback(records)
        assert [c["exchange_id"] for c in record(calls, traces)] == ["x1"]


@given(st.sampled_from(H.PATHS), st.binary(max_size=4096), H.content_types)
def test_random_bytes_as_a_response_never_raise(path, body, content_type):
    request, _, _ = H.SEEDS[path]
    call = start_call(exchange(path, H.dumps(request)))
    reader = ResponseReader(call, 200, {"content-type": content_type})
    reader.feed(body)
    reader.answered()
    reader.finish(1001.0)


# --- SSE parser and decoders ----------------------------------------------------------------


@given(st.binary(max_size=2048) | st.sampled_from([s for _, _, s in H.SEEDS.values()]).flatmap(H.mutated_bytes), st.data())
def test_sse_parser_is_total_and_chunking_never_changes_its_events(stream, data):
    whole = SSEParser()
    expected = [*whole.feed(stream), *whole.close()]
    chunked = SSEParser()
    events = []
    for chunk in data.draw(H.chunked(stream)):
        events += chunked.feed(chunk)
    events += chunked.close()
    assert events == expected


@given(st.sampled_from([b"data: ", b""]), st.sampled_from([70_000, 3_000_000]), st.integers(1, 64))
def test_huge_single_event_in_small_chunks_is_one_event(prefix, size, chunk_size):
    stream = prefix + b"x" * size + b"\n\n"
    parser = SSEParser()
    step = max(chunk_size, size // 200)  # a few hundred chunks: linear time, whatever the size
    events = [e for i in range(0, len(stream), step) for e in parser.feed(stream[i : i + step])]
    events += parser.close()
    assert [len(e.data) for e in events] == ([size] if prefix else [])


@given(st.binary(max_size=4096), st.sampled_from(["gzip", "deflate", "br", "zstd"]), st.data())
def test_decoders_split_anywhere_give_the_whole_decode(payload, encoding, data):
    body, _ = data.draw(H.encoded(payload).filter(lambda e: e[1] == encoding) | st.just((payload, encoding)))
    try:
        whole = decode_body(body, encoding)
    except Exception:  # a corrupt body: the readers turn this into a recorded problem
        return
    decoder = incremental_decoder(encoding)
    assert b"".join(decoder(chunk) for chunk in data.draw(H.chunked(body))) == whole


# --- the scope tracker, with hostile lineage and harness headers ----------------------------

hostile_ids = st.one_of(
    st.text(max_size=40),
    st.text(min_size=1).map(lambda s: (s * 10_240)[:10_240]),
    st.sampled_from(["../../etc/passwd", "..", ".", "a/b", "a\\b", "\r\nx-evil: 1", "\x00", "é" * 200, "a" * 256, "a" * 257, " "]),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)
ID_HEADERS = [
    "x-dynamo-session-id",
    "x-dynamo-parent-session-id",
    "x-claude-code-session-id",
    "x-claude-code-agent-id",
    "session-id",
    "thread-id",
    "x-codex-parent-thread-id",
    "x-session-affinity",
]


def valid_header_value(value: str) -> bool:
    return 0 < len(value.encode()) <= MAX_ID_BYTES and value.isascii() and value.isprintable() and "\r" not in value


@given(
    st.lists(
        st.tuples(st.sampled_from(H.PATHS), st.dictionaries(st.sampled_from(ID_HEADERS), hostile_ids, max_size=4)), min_size=1, max_size=6
    )
)
def test_tracker_stamps_only_valid_ids_whatever_the_client_sends(requests):
    with agent_lineage_log() as records, recording_pipeline() as (pipeline, calls, traces):
        for i, (path, headers) in enumerate(requests):
            request, reply, _ = H.SEEDS[path]
            sent = exchange(path, H.dumps(request), headers=headers)
            sent.id = f"x{i}"
            outcome = pipeline.request(sent)
            assert outcome is not None
            for name, value in outcome.headers.items():
                assert value is None or valid_header_value(value), (name, value)
            reader = pipeline.response_reader(outcome.call, 200, {"content-type": "application/json"}, 1000.5)
            reader.feed(H.dumps(reply))
            pipeline.finish(reader, 1001.0)
        pipeline.close()
        assert_no_traceback(records)
        assert len(record(calls, traces)) == len(requests)
        for file in traces.iterdir():
            assert file.resolve().parent == traces.resolve()


# --- through the addon (taddons): never a changed byte forwarded ----------------------------


def addon_flow(path: str, body: bytes, headers: list[tuple[bytes, bytes]]):
    fields = [(b"content-type", b"application/json"), (b"user-agent", b"hostile/1.0"), *headers]
    request = tutils.treq(method=b"POST", path=path.encode(), headers=Headers(fields), content=b"", timestamp_start=1000.0)
    request.raw_content = body
    return tflow.tflow(req=request)


@given(st.data())
def test_addon_forwards_every_byte_unchanged_and_logs_an_unreadable_request_once(data):
    path = data.draw(st.sampled_from(H.PATHS), label="path")
    request, reply, stream = H.SEEDS[path]
    body, encoding = data.draw(H.json_body(request).flatmap(H.encoded), label="body")
    headers = [(b"content-encoding", encoding.encode())] if encoding else []
    response_body = data.draw(H.sse_body(stream), label="response")
    chunks = data.draw(H.chunked(response_body), label="chunks")
    addon = lineage.Lineage()
    with tempfile.TemporaryDirectory() as tmp, example_context(addon) as tctx, agent_lineage_log() as records:
        tctx.configure(addon, lineage_dir=str(Path(tmp) / "traces"), lineage_calls_log=str(Path(tmp) / "calls.jsonl"))
        flow = addon_flow(path, body, headers)
        before = flow.request.copy()
        addon.request(flow)
        assert flow.request.raw_content == before.raw_content
        changed = {k.lower() for k, _ in set(flow.request.headers.fields) ^ set(before.headers.fields)}
        assert changed <= {b"x-dynamo-session-id", b"x-dynamo-parent-session-id"}
        if flow.id not in addon.driver.in_flight:
            assert len([r for r in records if "forwarded unchanged" in r.getMessage()]) == 1
        flow.response = tutils.tresp(headers=Headers([(b"content-type", b"text/event-stream")]), content=b"")
        addon.responseheaders(flow)
        if callable(flow.response.stream):
            assert [flow.response.stream(c) for c in [*chunks, b""]] == [*chunks, b""]
        addon.response(flow)
        addon.done()
        assert_no_traceback(records)


# --- file names of hostile and long ids -----------------------------------------------------


@given(hostile_ids, st.integers(1, 1000))
def test_trajectory_file_names_are_short_and_stay_in_their_directory(session_id, part):
    name = trajectory_file_name(session_id, part)
    assert len(name.encode()) <= 255 and name.isascii() and name.isprintable()
    assert "/" not in name and "\\" not in name and not name.startswith(".")


def test_a_256_byte_id_gets_its_trajectory_file_with_the_id_inside(tmp_path):
    session_id = "s" * MAX_ID_BYTES
    with recording_pipeline() as (pipeline, calls, traces):
        request, reply, _ = H.SEEDS[H.PATHS[0]]
        outcome = pipeline.request(exchange(H.PATHS[0], H.dumps(request), headers={"x-dynamo-session-id": session_id}))
        assert outcome is not None and outcome.headers["x-dynamo-session-id"] == session_id
        reader = pipeline.response_reader(outcome.call, 200, {"content-type": "application/json"}, 1000.5)
        reader.feed(H.dumps(reply))
        pipeline.finish(reader, 1001.0)
        pipeline.close()
        (file,) = traces.glob("trajectory-*.json")
        assert file.name == trajectory_file_name(session_id) and len(file.name) < 100
        assert orjson.loads(file.read_bytes())["session_id"] == session_id
