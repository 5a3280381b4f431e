"""Decompression bombs in requests and responses (gzip, deflate, br, zstd): observing a body is
bounded by `max_decoded_bytes` (the `lineage_max_decoded` option). Beyond it the call is recorded
as not observed, the bytes are forwarded as they came, and decoding stops early: memory and time
stay bounded by the limit, not by what the body would expand to."""

from __future__ import annotations

import functools
import time
import tracemalloc
import zlib
from pathlib import Path

import brotli
import orjson
import pytest

import hostile as H
import payloads as P
from agent_lineage.calls import NotObserved, ResponseReader, start_call
from agent_lineage.model import Exchange
from agent_lineage.pipeline import CallLog, Pipeline
from agent_lineage.settings import Settings
from agent_lineage.sse import BodyTooLarge, decode_body, incremental_decoder

ENCODINGS = ["gzip", "deflate", "br", "zstd"]
LIMIT = 2**20  # 1 MB in the tests; the default is 64 MB
EXPANDED = 16 * 2**20  # what each bomb would decode to


@functools.cache
def bomb(encoding: str, payload: bytes = b"") -> bytes:
    """`payload` followed by 16 MB of spaces (JSON-neutral), compressed: a body of 0.1-17 KB."""
    data = payload + b" " * EXPANDED
    if encoding == "gzip":
        compressor = zlib.compressobj(9, wbits=31)
        return compressor.compress(data) + compressor.flush()
    if encoding == "deflate":
        return zlib.compress(data, 9)
    if encoding == "br":
        return brotli.compress(data, quality=5)
    return H._zstd_compress(data)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_decoding_stops_at_the_limit_in_bounded_memory_and_time(encoding):
    body = bomb(encoding)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(BodyTooLarge):
            decode_body(body, encoding, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # brotli cannot stop mid-slice: one slice of input may give up to ~10 MB (sse.BROTLI_SLICE)
    assert peak < (24 if encoding == "br" else 8) * 2**20, peak
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_body_just_under_the_limit_decodes_whole_in_any_chunks(encoding):
    data = b"x" * (LIMIT - 10)
    body = _compress(encoding, data)
    decoder = incremental_decoder(encoding, LIMIT)
    assert b"".join(decoder(body[i : i + 777]) for i in range(0, len(body), 777)) == data
    with pytest.raises(BodyTooLarge):
        decode_body(_compress(encoding, data + b"x" * 11), encoding, LIMIT)


def _compress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        compressor = zlib.compressobj(wbits=31)
        return compressor.compress(data) + compressor.flush()
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "br":
        return brotli.compress(data, quality=5)
    return H._zstd_compress(data)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_request_bomb_is_recorded_as_not_observed_and_not_stamped(encoding, tmp_path: Path):
    request, _, _ = H.SEEDS[P.CHAT_PATH]
    body = bomb(encoding, orjson.dumps(request))
    exchange = Exchange("x1", "POST", P.CHAT_PATH, {"content-encoding": encoding}, body, 1000.0, "127.0.0.1 t")
    with pytest.raises(NotObserved):
        start_call(exchange, LIMIT)
    pipeline = Pipeline(Settings(max_decoded_bytes=LIMIT), [CallLog(tmp_path / "calls.jsonl")])
    assert pipeline.request(exchange) is None  # forwarded unchanged, no lineage stamped
    pipeline.close()
    (line,) = (tmp_path / "calls.jsonl").read_bytes().splitlines()
    record = orjson.loads(line)
    assert record["exchange_id"] == "x1" and record["scope"] is None
    assert record["error"] == f"request body not observed: it decodes to more than {LIMIT} bytes (lineage_max_decoded)"


@pytest.mark.parametrize("encoding", [*ENCODINGS, None])
@pytest.mark.parametrize("content_type", ["application/json", "text/event-stream"])
def test_a_response_bomb_is_recorded_as_not_observed(encoding, content_type):
    request, reply, _ = H.SEEDS[P.CHAT_PATH]
    call = start_call(Exchange("x1", "POST", P.CHAT_PATH, {}, orjson.dumps(request), 1000.0, "c"))
    headers = {"content-type": content_type} | ({"content-encoding": encoding} if encoding else {})
    reader = ResponseReader(call, 200, headers, LIMIT)
    body = bomb(encoding, orjson.dumps(reply)) if encoding else orjson.dumps(reply) + b" " * (LIMIT + 1)
    started = time.perf_counter()
    for i in range(0, len(body), 16384):  # as the network delivers it
        reader.feed(body[i : i + 16384])
    call = reader.finish(1001.0)
    assert time.perf_counter() - started < 5
    assert call.error == f"response body not observed: it decodes to more than {LIMIT} bytes (lineage_max_decoded)"
    assert call.response.output is None


# --- through the addon (taddons): the option, and the bytes forwarded as they came ----------


@pytest.fixture
def addon(tmp_path: Path):
    from mitmproxy.test import taddons

    import lineage  # addons/lineage.py

    addon = lineage.Lineage()
    with taddons.context(addon) as tctx:
        tctx.configure(
            addon, lineage_dir=str(tmp_path / "traces"), lineage_calls_log=str(tmp_path / "calls.jsonl"), lineage_max_decoded="1m"
        )
        addon.tctx = tctx
        yield addon
        addon.done()


def test_the_option_takes_sizes_and_refuses_nonsense(addon):
    from mitmproxy import exceptions

    assert addon.pipeline.settings.max_decoded_bytes == LIMIT
    for bad in ("0", "lots", "-1m"):
        with pytest.raises(exceptions.OptionsError):
            addon.tctx.configure(addon, lineage_max_decoded=bad)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_bombs_pass_the_addon_byte_for_byte_and_are_recorded_as_not_observed(addon, tmp_path, encoding):
    from mitmproxy.http import Headers
    from mitmproxy.test import tflow, tutils

    request, reply, stream = H.SEEDS[P.CHAT_PATH]
    request_bomb = bomb(encoding, orjson.dumps(request))
    fields = Headers([(b"content-type", b"application/json"), (b"content-encoding", encoding.encode())])
    flow = tflow.tflow(req=tutils.treq(method=b"POST", path=P.CHAT_PATH.encode(), headers=fields, content=b""))
    flow.request.raw_content = request_bomb
    before = flow.request.copy()
    addon.request(flow)
    assert flow.request.raw_content == request_bomb and flow.request.headers.fields == before.headers.fields

    plain = dict(request)  # a readable request whose streamed answer is a bomb
    flow = tflow.tflow(
        req=tutils.treq(
            method=b"POST",
            path=P.CHAT_PATH.encode(),
            headers=Headers([(b"content-type", b"application/json")]),
            content=orjson.dumps(plain),
        )
    )
    addon.request(flow)
    flow.response = tutils.tresp(
        headers=Headers([(b"content-type", b"text/event-stream"), (b"content-encoding", encoding.encode())]), content=b""
    )
    addon.responseheaders(flow)
    body = bomb(encoding, stream)
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    assert [flow.response.stream(c) for c in [*chunks, b""]] == [*chunks, b""]
    addon.response(flow)
    addon.done()
    errors = [orjson.loads(line)["error"] for line in (tmp_path / "calls.jsonl").read_bytes().splitlines()]
    assert errors == [
        f"request body not observed: it decodes to more than {LIMIT} bytes (lineage_max_decoded)",
        f"response body not observed: it decodes to more than {LIMIT} bytes (lineage_max_decoded)",
    ]
