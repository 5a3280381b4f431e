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
            return self._dispatch() if self._data else self._reset()
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


def incremental_decoder(content_encoding: str | None) -> Decoder | None:
    """A chunk-at-a-time decoder for a Content-Encoding; None for identity; ValueError if unknown."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity", "none"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":
        return _DeflateDecoder().decompress
    if encoding == "br":
        import brotli  # a mitmproxy dependency

        return brotli.Decompressor().process
    if encoding == "zstd":
        return _zstd_decompressor()
    raise ValueError(f"unsupported content-encoding {content_encoding!r}")


def _zstd_decompressor() -> Decoder:
    """mitmproxy 11 ships `zstandard`; mitmproxy 12 uses `compression.zstd` (or its backport)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError:
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress
    return zstd.ZstdDecompressor().decompress


class _DeflateDecoder:
    """`deflate` is zlib-wrapped by the RFC but raw in practice: detect on the first bytes."""

    def __init__(self) -> None:
        self._obj: zlib._Decompress | None = None
        self._head = b""  # first bytes, until the two of a zlib header have arrived

    def decompress(self, data: bytes) -> bytes:
        if self._obj is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            wrapped = (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return self._obj.decompress(data)


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    decoder = incremental_decoder(content_encoding)
    return body if decoder is None else decoder(body)
