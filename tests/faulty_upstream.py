"""A raw-socket LLM upstream that fails on request: the fault is named in the request path's query
(`?fault=...`), so a test (or scripts/soak) asks for exactly the failure it wants:

    status-<n>        answer HTTP <n> with an error body (4xx, 5xx, Dynamo's 529)
    reset             stream a few events, then reset the connection (RST)
    close-early       close the connection before sending any header
    slow-<seconds>    send the first byte after <seconds>, then a normal stream
    (none)            a normal streamed Chat Completions answer

Every stream's text names the request (`answer <tag>`, tag from `?tag=`), so a test can tell
which call's answer reached which client and which trajectory.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from urllib.parse import parse_qs, urlsplit

import orjson


def stream_events(tag: str, pieces: int = 4) -> list[bytes]:
    head = {"id": f"chatcmpl-{tag}", "object": "chat.completion.chunk", "model": "faulty"}
    events = [
        b"data: " + orjson.dumps(head | {"choices": [{"index": 0, "delta": {"content": f"answer {tag} part {i}. "}}]}) + b"\n\n"
        for i in range(pieces)
    ]
    events.append(b"data: " + orjson.dumps(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


class FaultyUpstream:
    def __init__(self, event_delay: float = 0.0) -> None:
        self.event_delay = event_delay
        self.requests: list[tuple[str, dict[str, list[str]]]] = []  # path, headers (lower-cased, every field)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> FaultyUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(120)
        buffer = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers: dict[str, list[str]] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers.setdefault(name.strip().lower(), []).append(value.strip())
                length = int(headers.get("content-length", ["0"])[0])
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                self.requests.append((path, headers))
                if not self._answer(conn, path):
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, path: str) -> bool:
        """Answer one request; False when the connection is gone (closed or reset on purpose)."""
        query = parse_qs(urlsplit(path).query)
        fault = query.get("fault", [""])[0]
        tag = query.get("tag", ["0"])[0]
        if fault == "close-early":
            return False
        if fault.startswith("status-"):
            status = int(fault.removeprefix("status-"))
            body = orjson.dumps({"error": {"type": "upstream_error", "message": f"status {status} for {tag}"}})
            conn.sendall(
                f"HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body
            )
            return True
        if fault.startswith("slow-"):
            time.sleep(float(fault.removeprefix("slow-")))
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        events = stream_events(tag)
        for i, event in enumerate(events):
            if fault == "reset" and i == 2:
                time.sleep(0.3)  # the events sent so far reach the client before the cut
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
                return False
            conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            if self.event_delay:
                time.sleep(self.event_delay)
        conn.sendall(b"0\r\n\r\n")
        return True
