"""`agent-lineage replay`: an LLM API upstream that answers from saved flows, so an agent re-runs
against a capture with no key and no network (docs/replay.md).

Each request is matched by its canonical key (replay_key.py) to a recorded request and answered
with that request's recorded response: status and headers as recorded (hop-by-hop ones aside),
JSON bodies whole, streamed (SSE) bodies again as a stream, in the chunks they arrived in: the
addon records each streamed chunk's size and time in the flow (driver.CHUNKS_KEY); with
`timing="recorded"` the replay waits the recorded time to first byte and each chunk's recorded gap.
A capture saved without that record (or a body whose ids were re-mapped to other lengths) is sent
one chunk per SSE event, which is how the LLM APIs send them, spread evenly over the recorded time.

Ids the live client made up (session, agent, tool-output ids) are paired with the recorded
request's ids in the same places; a recorded answer that quotes a recorded id is sent with the
live one instead (Codex's `wait_agent` names the subagent id its `spawn_agent` returned).

Modes: `replay` answers a miss with HTTP 404 and a JSON body naming the nearest recorded request
and the first field that differs; `hybrid` forwards a miss to the upstream and records the
exchange; `record` forwards everything and records it. Recorded exchanges go to a new flow file,
secrets blanked, readable by mitmproxy and by this command. This module reads mitmproxy flows, so
it imports mitmproxy; the matching is in the pure replay_key.py.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPSConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import orjson
from mitmproxy import connection, http
from mitmproxy.io import FlowWriter

from .driver import CHUNKS_KEY
from .model import REDACTED, SECRET_HEADERS
from .offline import read_flows
from .replay_key import RequestKey, first_difference, request_key, similarity

log = logging.getLogger("agent_lineage.replay")

MODES = ("replay", "record", "hybrid")
TIMINGS = ("fast", "recorded")
MISS_STATUS = 404  # not one the SDKs retry (408, 409, 429, 5xx are): a miss fails at once
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
SSE_EVENT_END = re.compile(rb"\r?\n\r?\n")
PREVIEW = 160


@dataclass
class Recorded:
    """One recorded request and its answer."""

    number: int  # position in the capture, from 0
    method: str
    path: str
    key: RequestKey
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    first_byte: float  # seconds from the request's end to the response's first byte
    duration: float  # seconds from the first byte to the end
    chunks: list[tuple[int, float]] | None = None  # a stream's chunks as they arrived: (bytes, seconds after the first)

    @property
    def streamed(self) -> bool:
        return any(k.lower() == "content-type" and "text/event-stream" in v for k, v in self.headers)

    @property
    def encoded(self) -> bool:
        return any(k.lower() == "content-encoding" and v.strip().lower() not in ("", "identity") for k, v in self.headers)

    def describe(self) -> str:
        return f"#{self.number} {self.method} {self.path}"


@dataclass
class Miss:
    method: str
    path: str
    reason: str
    nearest: Recorded | None = None
    where: str | None = None  # the first differing field of the canonical request
    recorded: Any = None
    received: Any = None

    def message(self) -> str:
        text = f"replay miss: {self.method} {self.path}: {self.reason}"
        if self.nearest is not None:
            text += f"; nearest recorded request {self.nearest.describe()}"
        if self.where is not None:
            recorded, received = _preview(self.recorded, self.received), _preview(self.received, self.recorded)
            text += f", first difference at {self.where}: recorded {recorded}, received {received}"
        return text

    def body(self) -> bytes:
        detail: dict[str, Any] = {"method": self.method, "path": self.path, "reason": self.reason}
        if self.nearest is not None:
            detail["nearest"] = {"number": self.nearest.number, "method": self.nearest.method, "path": self.nearest.path}
        if self.where is not None:
            detail |= {
                "field": self.where,
                "recorded": _preview(self.recorded, self.received),
                "received": _preview(self.received, self.recorded),
            }
        # Shaped like both APIs' errors, so SDKs and CLIs print the message.
        return orjson.dumps({"type": "error", "error": {"type": "replay_miss", "message": self.message()}, "replay_miss": detail})


@dataclass
class Stats:
    served: int = 0
    repeated: int = 0  # served again after every recorded request of that key was used
    missed: int = 0
    forwarded: int = 0
    misses: list[Miss] = field(default_factory=list)

    def summary(self) -> str:
        return f"served {self.served} ({self.repeated} repeated), missed {self.missed}, forwarded {self.forwarded}"


class Capture:
    """The recorded requests of saved flows, by key; picks the answer for a live request."""

    def __init__(self, recorded: list[Recorded], ignore: Sequence[re.Pattern[str]] = ()) -> None:
        self.recorded = recorded
        self.ignore = ignore
        self.by_key: dict[str, list[Recorded]] = {}
        for entry in recorded:
            self.by_key.setdefault(entry.key.digest, []).append(entry)
        self.used: dict[str, int] = {}
        self.live_ids: dict[str, str] = {}  # recorded id -> the live id in its place
        self.lock = threading.Lock()

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], ignore: Sequence[re.Pattern[str]] = ()) -> Capture:
        recorded: list[Recorded] = []
        for path in paths:
            for flow in read_flows(path):
                entry = _recorded(len(recorded), flow, ignore)
                if entry is not None:
                    recorded.append(entry)
        return cls(recorded, ignore)

    def add(self, flow: http.HTTPFlow) -> None:
        """Learn a forwarded exchange (hybrid mode), so the same request is answered next time."""
        with self.lock:
            entry = _recorded(len(self.recorded), flow, self.ignore)
            if entry is not None:
                self.recorded.append(entry)
                self.by_key.setdefault(entry.key.digest, []).append(entry)

    def answer(self, method: str, path: str, body: bytes) -> tuple[Recorded, bool] | Miss:
        """(the recorded answer, whether it was used before), or the Miss that explains why none."""
        key = request_key(method, path, body, self.ignore)
        with self.lock:
            candidates = self.by_key.get(key.digest)
            if not candidates:
                return self._miss(method, path, key)
            used = self.used.get(key.digest, 0)
            self.used[key.digest] = used + 1
            entry = candidates[min(used, len(candidates) - 1)]
            for recorded_id, live_id in zip(entry.key.ids, key.ids):
                if recorded_id != live_id:
                    self.live_ids[recorded_id] = live_id
            return entry, used >= len(candidates)

    def live_body(self, entry: Recorded) -> bytes:
        """The recorded body with the recorded ids the live client replaced put back as its own."""
        body = entry.body
        if entry.encoded:
            return body
        with self.lock:
            swaps = [(r, v) for r, v in self.live_ids.items() if r.encode() in body]
        for recorded_id, live_id in swaps:
            body = body.replace(recorded_id.encode(), live_id.encode())
        return body

    def _miss(self, method: str, path: str, key: RequestKey) -> Miss:
        if method.upper() == "GET" and path.split("?")[0].endswith("/responses"):
            reason = "no recorded request has this key (a Responses WebSocket cannot be replayed)"
        else:
            reason = "no recorded request has this key"
        if not self.recorded:
            return Miss(method, path, "the capture holds no request")
        route = [e for e in self.recorded if e.method == method.upper() and e.path.split("?")[0] == path.split("?")[0]]
        nearest = max(route or self.recorded, key=lambda e: similarity(e.key.canonical, key.canonical))
        found = first_difference(nearest.key.canonical, key.canonical)
        if found is None:  # same canonical request, differing only in ids' order of appearance
            return Miss(method, path, reason, nearest)
        where, recorded, received = found
        return Miss(method, path, reason, nearest, where, recorded, received)


class Recorder:
    """Appends forwarded exchanges to a new flow file, secrets blanked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file: BinaryIO = open(self.path, "wb")
        self.writer = FlowWriter(self.file)
        self.lock = threading.Lock()

    def write(self, flow: http.HTTPFlow) -> None:
        with self.lock:
            self.writer.add(flow)
            self.file.flush()

    def close(self) -> None:
        with self.lock:
            self.file.close()


class ReplayServer(ThreadingHTTPServer):
    """The replay upstream on (host, port); `start()` serves from a thread, `stop()` ends it."""

    daemon_threads = True

    def __init__(
        self,
        capture: Capture,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: str = "replay",
        upstream: str | None = None,
        timing: str = "fast",
        record_to: str | Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if timing not in TIMINGS:
            raise ValueError(f"timing must be one of {', '.join(TIMINGS)}")
        if mode != "replay" and not upstream:
            raise ValueError(f"--mode {mode} forwards to an upstream: give --upstream URL")
        if upstream and urlsplit(upstream).scheme not in ("http", "https"):
            raise ValueError(f"upstream must be an http:// or https:// URL, not {upstream!r}")
        self.capture = capture
        self.mode = mode
        self.upstream = upstream.rstrip("/") if upstream else None
        self.timing = timing
        self.recorder = Recorder(record_to) if record_to and mode != "replay" else None
        self.stats = Stats()
        self.thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ReplayServer:
        self.thread = threading.Thread(target=self.serve_forever, name="agent-lineage-replay", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.shutdown()
            self.thread.join(timeout=10)
            self.thread = None
        self.server_close()
        if self.recorder is not None:
            self.recorder.close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server: ReplayServer
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streaming
    disable_nagle_algorithm = True  # each SSE event leaves as its own write

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        t_request = time.time()
        body = self._read_body()
        server = self.server
        if server.mode == "record":
            return self._forward(body, t_request)
        found = server.capture.answer(self.command, self.path, body)
        if isinstance(found, Miss):
            if server.mode == "hybrid":
                return self._forward(body, t_request)
            server.stats.missed += 1
            server.stats.misses.append(found)
            log.error("%s", found.message())
            return self._send(MISS_STATUS, [("content-type", "application/json")], found.body())
        entry, repeated = found
        server.stats.served += 1
        server.stats.repeated += repeated
        body_out = server.capture.live_body(entry)
        if entry.streamed and not entry.encoded:
            self._stream(entry, body_out)
        else:
            if server.timing == "recorded":
                time.sleep(entry.first_byte + entry.duration)
            self._send(entry.status, entry.headers, body_out)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() not in ("date", "server"):
                self.send_header(name, value)
        self.send_header("date", self.date_time_string())

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._start(status, headers)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _stream(self, entry: Recorded, body: bytes) -> None:
        pieces = _pieces(entry, body)
        recorded = self.server.timing == "recorded"
        if recorded:
            time.sleep(entry.first_byte)
        self._start(entry.status, entry.headers)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        sent_at = time.monotonic()
        try:
            for piece, offset in pieces:
                if recorded and offset > 0:
                    time.sleep(max(0.0, sent_at + offset - time.monotonic()))
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _forward(self, body: bytes, t_request: float) -> None:
        """Send the request to the upstream, stream its answer back, and record the exchange."""
        server = self.server
        assert server.upstream is not None
        target = urlsplit(server.upstream)
        path = target.path + self.path
        kind = HTTPSConnection if target.scheme == "https" else HTTPConnection
        upstream = kind(target.netloc, timeout=600)
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"]
        try:
            upstream.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            upstream.putheader("host", target.netloc)
            for name, value in headers:
                upstream.putheader(name, value)
            upstream.putheader("content-length", str(len(body)))
            upstream.endheaders(body)
            t_sent = time.time()
            response = upstream.getresponse()
        except OSError as e:
            upstream.close()
            message = f"cannot reach the upstream {server.upstream}: {e}"
            log.error("%s", message)
            return self._send(
                502, [("content-type", "application/json")], orjson.dumps({"error": {"type": "replay_upstream", "message": message}})
            )
        t_first = time.time()
        answer_headers = list(response.getheaders())
        self._start(response.status, answer_headers)
        chunks: list[bytes] = []
        if self.command == "HEAD":
            self.send_header("content-length", response.getheader("content-length") or "0")
            self.end_headers()
        else:
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            try:
                while chunk := response.read1(65536):
                    chunks.append(chunk)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
        upstream.close()
        server.stats.forwarded += 1
        flow = _flow(
            self.command, server.upstream + self.path, headers, body, response.status, answer_headers, b"".join(chunks),
            (t_request, t_sent, t_first, time.time()),
        )  # fmt: skip
        if server.recorder is not None:
            server.recorder.write(flow)
        if server.mode == "hybrid":
            server.capture.add(flow)


# -- helpers ------------------------------------------------------------------------------


def _recorded(number: int, flow: http.HTTPFlow, ignore: Sequence[re.Pattern[str]]) -> Recorded | None:
    """A saved flow as a recorded answer; None for one without a complete response or a WebSocket."""
    response = flow.response
    if response is None or flow.websocket is not None or response.status_code == 101:
        return None
    request = flow.request
    t_request_end = request.timestamp_end or request.timestamp_start
    t_first = response.timestamp_start or t_request_end
    t_end = response.timestamp_end or t_first
    return Recorded(
        number=number,
        method=request.method.upper(),
        path=request.path,
        key=request_key(request.method, request.path, request.raw_content, ignore),
        status=response.status_code,
        headers=list(response.headers.items(multi=True)),
        body=response.raw_content or b"",
        first_byte=max(0.0, t_first - t_request_end),
        duration=max(0.0, t_end - t_first),
        chunks=_chunk_record(flow.metadata.get(CHUNKS_KEY)),
    )


def _chunk_record(value: Any) -> list[tuple[int, float]] | None:
    """The addon's record of a stream's chunks, if it is one (saved flows are input: check it)."""
    if not isinstance(value, list):
        return None
    record = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int) and isinstance(item[1], (int, float))):
            return None
        record.append((item[0], float(item[1])))
    return record or None


def _pieces(entry: Recorded, body: bytes) -> list[tuple[bytes, float]]:
    """The body in the chunks it arrived in, each with its offset after the first (seconds); or,
    without that record, one piece per SSE event spread evenly over the recorded duration."""
    if entry.chunks and sum(size for size, _ in entry.chunks) == len(body):
        pieces, start = [], 0
        for size, offset in entry.chunks:
            pieces.append((body[start : start + size], offset))
            start += size
        return pieces
    events = _sse_events(body)
    gap = entry.duration / max(len(events) - 1, 1)
    return [(event, n * gap) for n, event in enumerate(events)]


def _sse_events(body: bytes) -> list[bytes]:
    """The body cut after each blank line that ends an SSE event (a trailing partial event kept)."""
    events, start = [], 0
    for match in SSE_EVENT_END.finditer(body):
        events.append(body[start : match.end()])
        start = match.end()
    if start < len(body):
        events.append(body[start:])
    return events


def _flow(
    method: str,
    url: str,
    request_headers: list[tuple[str, str]],
    request_body: bytes,
    status: int,
    response_headers: list[tuple[str, str]],
    response_body: bytes,
    times: tuple[float, float, float, float],  # request read, sent upstream, first byte, end
) -> http.HTTPFlow:
    t_request, t_sent, t_first, t_end = times
    secret = {name.lower() for name in SECRET_HEADERS}
    kept = [(k.encode(), (REDACTED if k.lower() in secret else v).encode()) for k, v in request_headers]
    request = http.Request.make(method, url, b"", http.Headers(kept))
    request.raw_content = request_body
    request.headers["content-length"] = str(len(request_body))
    request.timestamp_start, request.timestamp_end = t_request, t_sent
    response = http.Response.make(status, b"", http.Headers([(k.encode(), v.encode()) for k, v in response_headers]))
    response.raw_content = response_body
    response.timestamp_start, response.timestamp_end = t_first, t_end
    address = (urlsplit(url).hostname or "", urlsplit(url).port or 0)
    client = connection.Client(peername=("127.0.0.1", 0), sockname=("127.0.0.1", 0), timestamp_start=t_request)
    flow = http.HTTPFlow(client, connection.Server(address=address))
    flow.request, flow.response = request, response
    return flow


def _preview(value: Any, other: Any = None) -> str:
    """The value, cut to PREVIEW characters around where it first differs from `other`."""
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if len(text) <= PREVIEW:
        return repr(text)
    start = 0
    if isinstance(other, str):
        start = next((n for n, (a, b) in enumerate(zip(text, other)) if a != b), min(len(text), len(other)))
        start = max(0, start - PREVIEW // 4)
    cut = text[start : start + PREVIEW]
    return repr(("…" if start else "") + cut + ("…" if start + PREVIEW < len(text) else ""))
