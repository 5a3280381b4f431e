"""The Responses API over a WebSocket, as Codex speaks it in ChatGPT-subscription mode.

The client sends `{"type": "response.create", ...request fields...}` messages (the HTTP body's
fields, flattened, often with `previous_response_id` and only the new input items); the server
answers each with the usual Responses events as JSON messages, `response.completed` (or
`.failed` / `.incomplete` / `error`) last. Each `response.create` becomes one Call, read by the
Responses codec exactly as a streamed HTTP response would be. Lineage headers cannot be stamped
per message: only the upgrade request carries them; the messages' scopes are still recorded.
"""

from __future__ import annotations

from dataclasses import replace

import orjson

from .calls import ResponseReader
from .model import Call, Exchange, endpoint
from .pipeline import Pipeline

TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
EVENT_STREAM = {"content-type": "text/event-stream"}


def is_responses_upgrade(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "GET" and headers.get("upgrade", "").lower() == "websocket" and endpoint(path).endswith("/responses")


class ResponsesSocket:
    """One WebSocket connection: its requests in flight, fed message by message (live or saved)."""

    def __init__(self, pipeline: Pipeline, upgrade: Exchange) -> None:
        self.pipeline = pipeline
        self.upgrade = upgrade  # headers, path and client every message's Call inherits
        self.sent = 0
        self.current: ResponseReader | None = None

    def message(self, from_client: bool, content: bytes, t: float) -> Call | None:
        """Read one message; the Call it finished, if any."""
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            return None  # not a Responses message (pings, other protocols): nothing to record
        if not isinstance(data, dict):
            return None
        if from_client:
            return self._create(data, t) if data.get("type") == "response.create" else None
        if self.current is None:
            return None
        if self.current.call.t_first_byte is None:
            self.current.call.t_first_byte = t
        self.current.feed(b"data: " + content + b"\n\n")
        return self._finish(t, None) if data.get("type") in TERMINAL_EVENTS else None

    def close(self, t: float | None, error: str | None) -> Call | None:
        """The connection ended; the Call it cut short, if any."""
        if self.current is None:
            return None
        return self._finish(t, error or "websocket closed before the response ended")

    def _create(self, data: dict, t: float) -> Call | None:
        superseded = self._finish(t, "superseded by the next response.create") if self.current else None
        body: dict = data["response"] if isinstance(data.get("response"), dict) and "input" not in data else data
        fields = {k: v for k, v in body.items() if k != "type"}
        self.sent += 1
        exchange = replace(
            self.upgrade,
            id=f"{self.upgrade.id}/{self.sent}",
            method="POST",
            request_body=orjson.dumps(fields),
            t_request=t,
        )
        outcome = self.pipeline.request(exchange)
        if outcome is not None:
            self.current = self.pipeline.response_reader(outcome.call, 101, EVENT_STREAM, None)
        return superseded

    def _finish(self, t: float | None, error: str | None) -> Call:
        reader, self.current = self.current, None
        assert reader is not None
        return self.pipeline.finish(reader, t, error)
