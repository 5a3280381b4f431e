"""SSEParser and the incremental content decoders: chunk boundaries anywhere must not matter."""

from __future__ import annotations

import gzip
import random
import time
import zlib

import brotli
import pytest
from mitmproxy.net import encoding as mitmproxy_encoding

from agent_lineage.sse import Event, SSEParser, decode_body, incremental_decoder
from payloads import byte_chunks, random_chunks, two_piece_splits


def parse(chunks: list[bytes], close: bool = True) -> list[Event]:
    parser = SSEParser()
    events = [e for chunk in chunks for e in parser.feed(chunk)]
    if close:
        events += list(parser.close())
    return events


# A stream exercising every line kind: named and unnamed events, multi-line data, comments,
# a field without a colon, no space after the colon, an extra space kept, ignored fields,
# a data-less event (dispatches nothing and resets the name), an empty data line, and non-ASCII.
STREAM_LINES = [
    ": keep-alive comment",
    "event: message_start",
    'data: {"type":"message_start"}',
    "",
    "data: first line",
    "data:second line",
    "data:  two spaces keep one",
    "",
    "id: 42",
    "retry: 3000",
    "event: ping",
    "data",
    "",
    "event: orphan",
    "",
    "data: after an orphan event name",
    ": a comment between the fields",
    "",
    "event: unicode",
    "data: héllo wörld — 日本語 🎉 ĳ",
    "",
    "data:",
    "",
]
EXPECTED = [
    Event("message_start", '{"type":"message_start"}'),
    Event("message", "first line\nsecond line\n two spaces keep one"),
    Event("ping", ""),
    Event("message", "after an orphan event name"),
    Event("unicode", "héllo wörld — 日本語 🎉 ĳ"),
    Event("message", ""),
]


def stream(eol: str) -> bytes:
    return "".join(line + eol for line in STREAM_LINES).encode()


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings_whole(eol: str) -> None:
    assert parse([stream(eol)]) == EXPECTED
    # Events are dispatched without waiting for close(); only a final lone CR is held back, in
    # case the next chunk starts with its LF, so the last event of a CR-only stream waits.
    assert parse([stream(eol)], close=False) == (EXPECTED[:-1] if eol == "\r" else EXPECTED)


def test_mixed_line_endings() -> None:
    data = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\rdata: 3\n\n"
    assert parse([data]) == [Event("a", "1"), Event("b", "2"), Event("message", "3")]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_two_piece_split(eol: str) -> None:
    data = stream(eol)
    for chunks in two_piece_splits(data):
        assert parse(chunks) == EXPECTED, chunks


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_one_byte_at_a_time(eol: str) -> None:
    assert parse(byte_chunks(stream(eol))) == EXPECTED


def test_random_chunks_with_empty_chunks() -> None:
    rng = random.Random(7)
    data = stream("\r\n")
    for _ in range(200):
        chunks = random_chunks(data, rng, max_size=9)
        chunks.insert(rng.randrange(len(chunks) + 1), b"")
        assert parse(chunks) == EXPECTED


def test_crlf_split_between_cr_and_lf_is_one_line_break() -> None:
    # A CR ending a chunk may be half of a CRLF: it must not produce an extra blank line,
    # which would dispatch the event early and lose the second data line into a new event.
    parser = SSEParser()
    assert list(parser.feed(b"data: a\r")) == []
    assert list(parser.feed(b"\ndata: b\r")) == []
    assert list(parser.feed(b"\n\r")) == []
    assert list(parser.feed(b"\n")) == [Event("message", "a\nb")]


def test_utf8_split_inside_every_multibyte_sequence() -> None:
    text = "é日🎉ĳ"
    data = f"data: {text}\n\n".encode()
    for chunks in two_piece_splits(data):
        assert parse(chunks) == [Event("message", text)]
    assert parse(byte_chunks(data)) == [Event("message", text)]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert parse([b"data: \xff\xfeok\n\n"]) == [Event("message", "\ufffd\ufffdok")]


def test_events_are_yielded_as_soon_as_complete() -> None:
    parser = SSEParser()
    assert list(parser.feed(b"event: a\ndata: 1\n")) == []
    assert list(parser.feed(b"\nevent: b\ndata: 2\n\nda")) == [Event("a", "1"), Event("b", "2")]
    assert list(parser.feed(b"ta: 3\n\n")) == [Event("message", "3")]
    assert list(parser.close()) == []


@pytest.mark.parametrize(
    "tail",
    [b"data: last\n\n", b"data: last\n", b"data: last", b"data: last\r", b"data: last\r\n", b"data: last\r\n\r\n"],
)
def test_close_dispatches_a_final_event_without_its_blank_line(tail: bytes) -> None:
    data = b"event: first\ndata: 1\n\nevent: second\n" + tail
    expected = [Event("first", "1"), Event("second", "last")]
    assert parse([data]) == expected
    for chunks in two_piece_splits(data):
        assert parse(chunks) == expected


def test_close_without_pending_data_yields_nothing() -> None:
    assert parse([b""]) == []
    assert parse([b": just a comment"]) == []
    assert parse([b"event: named but no data\n"]) == []
    parser = SSEParser()
    list(parser.feed(b"data: x"))
    assert list(parser.close()) == [Event("message", "x")]
    assert list(parser.close()) == []  # closing twice is harmless


def test_long_line_in_small_chunks_is_linear() -> None:
    # A `response.completed` line can be megabytes (it repeats the whole response). Re-copying the
    # unfinished line on every chunk made this quadratic: 4 MB in 1 KB chunks took ~16 s.
    payload = "x" * (4 << 20)
    data = f"event: big\ndata: {payload}\n\n".encode()
    parser = SSEParser()
    start = time.perf_counter()
    events = [e for i in range(0, len(data), 1024) for e in parser.feed(data[i : i + 1024])]
    assert time.perf_counter() - start < 2.0
    assert events == [Event("big", payload)]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    assert parse([b"event: a\ndata: 1\n\ndata: 2\n\n"]) == [Event("a", "1"), Event("message", "2")]


# --- content decoding --------------------------------------------------------------------------

PLAIN = stream("\n") * 40 + "é日🎉".encode() * 100


def _zlib(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


ENCODED = {
    "gzip": gzip.compress(PLAIN),
    "x-gzip": gzip.compress(PLAIN),
    "deflate": _zlib(PLAIN, zlib.MAX_WBITS),  # zlib-wrapped, as the RFC says
    "deflate-raw": _zlib(PLAIN, -zlib.MAX_WBITS),  # raw, as many servers send it
    "br": brotli.compress(PLAIN),
    "zstd": mitmproxy_encoding.encode(PLAIN, "zstd"),  # zstandard or compression.zstd, as mitmproxy has it
}


def _decode(encoding: str, chunks: list[bytes]) -> bytes:
    decoder = incremental_decoder(encoding.removesuffix("-raw"))
    assert decoder is not None
    return b"".join(decoder(chunk) for chunk in chunks)


@pytest.mark.parametrize("encoding", list(ENCODED))
@pytest.mark.parametrize("size", [1, 2, 7, 64, 1 << 20])
def test_incremental_decoder_in_small_chunks(encoding: str, size: int) -> None:
    data = ENCODED[encoding]
    assert _decode(encoding, [data[i : i + size] for i in range(0, len(data), size)]) == PLAIN


@pytest.mark.parametrize("encoding", list(ENCODED))
def test_incremental_decoder_random_chunks_and_empty_chunks(encoding: str) -> None:
    rng = random.Random(3)
    data = ENCODED[encoding]
    chunks = [b""] + random_chunks(data, rng, max_size=50)
    chunks.insert(len(chunks) // 2, b"")
    assert _decode(encoding, chunks) == PLAIN


@pytest.mark.parametrize("encoding", ["deflate", "deflate-raw"])
def test_deflate_detection_with_a_one_byte_first_chunk(encoding: str) -> None:
    # The zlib header is two bytes: a decoder that decides on the first chunk alone would
    # take a wrapped stream for raw deflate when that chunk is one byte long.
    data = ENCODED[encoding]
    assert _decode(encoding, [data[:1], data[1:]]) == PLAIN


@pytest.mark.parametrize("encoding", [None, "", "identity", "IDENTITY", " none "])
def test_identity_has_no_decoder(encoding: str | None) -> None:
    assert incremental_decoder(encoding) is None
    assert decode_body(b"abc", encoding) == b"abc"


@pytest.mark.parametrize("encoding", ["GZIP", " gzip ", "Br", "ZSTD"])
def test_encoding_names_are_case_and_space_insensitive(encoding: str) -> None:
    key = encoding.strip().lower()
    assert decode_body(ENCODED[key], encoding) == PLAIN


@pytest.mark.parametrize("encoding", list(ENCODED))
def test_decode_body_whole(encoding: str) -> None:
    assert decode_body(ENCODED[encoding], encoding.removesuffix("-raw")) == PLAIN


@pytest.mark.parametrize("encoding", ["compress", "gzip, br", "snappy", "bogus"])
def test_unknown_encoding_raises_value_error(encoding: str) -> None:
    with pytest.raises(ValueError, match="content-encoding"):
        incremental_decoder(encoding)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_compressed_sse_through_decoder_and_parser(encoding: str) -> None:
    rng = random.Random(11)
    wire = ENCODED[encoding]
    decoder = incremental_decoder(encoding)
    parser = SSEParser()
    events = [e for chunk in random_chunks(wire, rng, max_size=13) for e in parser.feed(decoder(chunk))]
    events += list(parser.close())
    assert events == parse([PLAIN])
    assert events[: len(EXPECTED)] == EXPECTED
