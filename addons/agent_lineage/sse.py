"""Incremental server-sent-events parsing and content decoding, fed one network chunk at a time.

Chunks may split an event, a line, a CRLF pair or a UTF-8 sequence anywhere: the parser keeps
only the unfinished line and the event being built, never the whole stream.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class Event:
    event: str  # the `event:` field, or "message" when absent (per the SSE spec)
    data: str


class SSEParser:
    def __init__(self) -> None:
        self._pending: list[bytes] = []  # pieces of the unfinished line, joined once it ends
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> Iterator[Event]:
        if b"\n" not in chunk and b"\r" not in chunk and not (self._pending and self._pending[-1].endswith(b"\r")):
            # No line ends here: keep the piece without re-copying the line so far, so that a long
            # line (a `response.completed` carrying a whole response) in many small chunks stays linear.
            if chunk:
                self._pending.append(chunk)
            return
        buf = b"".join(self._pending) + chunk
        # A CR at the very end may be the first half of a CRLF: wait for the next chunk.
        hold = buf.endswith(b"\r")
        if hold:
            buf = buf[:-1]
        lines = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        rest = lines.pop() + (b"\r" if hold else b"")
        self._pending = [rest] if rest else []
        for raw in lines:
            event = self._line(raw.decode("utf-8", "replace"))
            if event is not None:
                yield event

    def close(self) -> Iterator[Event]:
        """End of stream: a final event without its blank line still counts (servers forget it)."""
        pending = b"".join(self._pending)
        self._pending = []
        if pending.strip(b"\r"):
            event = self._line(pending.rstrip(b"\r").decode("utf-8", "replace"))
            if event is not None:
                yield event
        if self._data:
            yield self._dispatch()

    def _line(self, line: str) -> Event | None:
        if not line:
            if self._data:
                return self._dispatch()
            self._reset()
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _reset(self) -> None:
        self._event = ""
        self._data = []

    def _dispatch(self) -> Event:
        event = Event(self._event or "message", "\n".join(self._data))
        self._reset()
        return event


Decoder = Callable[[bytes], bytes]
BROTLI_SLICE = 8  # brotli 1.1 has no output limit: feed it this many bytes at a time (at most ~10 MB out each)


class BodyTooLarge(ValueError):
    """A body that decodes to more than the limit we observe (a decompression bomb, or just huge)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"decodes to more than {limit} bytes (lineage_max_decoded)")
        self.limit = limit


def incremental_decoder(content_encoding: str | None, limit: int | None = None) -> Decoder | None:
    """A chunk-at-a-time decoder for a Content-Encoding; None for identity; ValueError if unknown.

    With a `limit`, the decoder raises BodyTooLarge as soon as its output would pass `limit`
    bytes in total, having produced at most about that much: a small compressed body that
    expands to gigabytes costs neither the memory nor the time of expanding it.
    """
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity", "none"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return _ZlibDecoder(limit, 16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":
        return _ZlibDecoder(limit, None).decompress
    if encoding == "br":
        return _BrotliDecoder(limit).decompress
    if encoding == "zstd":
        return _zstd_decoder(limit)
    raise ValueError(f"unsupported content-encoding {content_encoding!r}")


class _Budget:
    """Counts decoded bytes against the limit."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.produced = 0

    def room(self) -> int:
        """How many more bytes may come out (-1: no limit, as zlib's max_length wants it)."""
        return -1 if self.limit is None else self.limit - self.produced

    def take(self, data: bytes) -> bytes:
        self.produced += len(data)
        if self.limit is not None and self.produced > self.limit:
            raise BodyTooLarge(self.limit)
        return data


class _ZlibDecoder:
    """gzip, or `deflate`: zlib-wrapped by the RFC but raw in practice, told apart by the first
    two bytes. zlib stops at `max_length`: asking for one byte more than the room left tells an
    over-long body from one that fits exactly."""

    def __init__(self, limit: int | None, wbits: int | None) -> None:
        self._budget = _Budget(limit)
        self._obj = zlib.decompressobj(wbits) if wbits is not None else None
        self._head = b""  # deflate: first bytes, until the two of a zlib header have arrived

    def decompress(self, data: bytes) -> bytes:
        if self._obj is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            wrapped = (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        room = self._budget.room()
        return self._budget.take(self._obj.decompress(data, room + 1 if room >= 0 else 0))


class _BrotliDecoder:
    def __init__(self, limit: int | None) -> None:
        import brotli  # a mitmproxy dependency

        self._budget = _Budget(limit)
        self._obj = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        if self._budget.limit is None:
            return self._obj.process(data)
        return b"".join(self._budget.take(self._obj.process(data[i : i + BROTLI_SLICE])) for i in range(0, len(data), BROTLI_SLICE))


def _zstd_decoder(limit: int | None) -> Decoder:
    """mitmproxy 11 ships `zstandard`; mitmproxy 12 uses `compression.zstd` (or its backport),
    which stops at `max_length` like zlib. `zstandard`'s decompressobj has no such bound: its
    stream writer hands output over in pieces to a sink that counts them."""
    budget = _Budget(limit)
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return _ZstandardDecoder(budget).decompress
    decompressor = zstd.ZstdDecompressor()

    def decompress(data: bytes) -> bytes:
        if decompressor.eof:
            return b""  # bytes after the end of the frame (zlib keeps them apart too)
        room = budget.room()
        return budget.take(decompressor.decompress(data, room + 1 if room >= 0 else -1))

    return decompress


class _ZstandardDecoder:
    def __init__(self, budget: _Budget) -> None:
        import zstandard

        self._budget = budget
        self._out: list[bytes] = []
        self._writer = zstandard.ZstdDecompressor().stream_writer(self, write_size=65536, closefd=False)  # type: ignore[arg-type]  # a sink with write()

    def write(self, data: bytes) -> int:  # the stream writer's sink
        self._out.append(self._budget.take(data))
        return len(data)

    def decompress(self, data: bytes) -> bytes:
        self._writer.write(data)
        out, self._out = b"".join(self._out), []
        return out


def decode_body(body: bytes, content_encoding: str | None, limit: int | None = None) -> bytes:
    """A whole body decoded (BodyTooLarge beyond `limit` decoded bytes, the identity included)."""
    decoder = incremental_decoder(content_encoding, limit)
    data = body if decoder is None else decoder(body)
    if limit is not None and len(data) > limit:
        raise BodyTooLarge(limit)
    return data
