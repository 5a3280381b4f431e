"""The offline feeder: saved flows (`mitmdump -w FILE`) replayed through the same Pipeline.

Events are replayed in the order the live addon saw them: a request when its body had fully
arrived, a response when it ended. That order, not the order of flows in the file (mitmdump
writes them as they complete), is what makes the offline Calls equal the live ones. This module
and addons/lineage.py are the only ones that import mitmproxy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.io import FlowReader

from . import flows
from .calls import ResponseReader
from .model import Call
from .pipeline import Pipeline
from .websocket import ResponsesSocket, is_responses_upgrade

Progress = Callable[[int, int], None]  # (bytes read, total bytes)


def read_flows(path: str | Path, progress: Progress | None = None) -> list[http.HTTPFlow]:
    """The HTTP flows of a saved file, in file order."""
    total = os.path.getsize(path)
    found = []
    with open(path, "rb") as f:
        for flow in FlowReader(f).stream():
            if isinstance(flow, http.HTTPFlow):
                found.append(flow)
            if progress is not None:
                progress(f.tell(), total)
    return found


def replay(flows_in_file: list[http.HTTPFlow], pipeline: Pipeline) -> list[Call]:
    """Feed saved flows through the pipeline as the live addon would have; the LLM Calls finished."""
    in_flight: dict[str, ResponseReader] = {}
    sockets: dict[str, ResponsesSocket] = {}
    finished: list[Call | None] = []
    for kind, flow, message in _events(flows_in_file):
        if kind == "request":
            exchange = flows.request_exchange(flow)
            if is_responses_upgrade(exchange.method, exchange.path, exchange.request_headers):
                sockets[flow.id] = ResponsesSocket(pipeline, exchange)
                continue
            outcome = pipeline.request(exchange)
            if outcome is not None:
                status, headers, t_first_byte = flows.response_parts(flow)
                in_flight[flow.id] = pipeline.response_reader(outcome.call, status, headers, t_first_byte)
        elif kind == "message" and flow.id in sockets:
            finished.append(sockets[flow.id].message(message.from_client, message.content, message.timestamp))
        elif flow.id in sockets:
            end = flow.websocket.timestamp_end if flow.websocket else None
            finished.append(sockets.pop(flow.id).close(end, flows.error_text(flow)))
        elif flow.id in in_flight:
            reader = in_flight.pop(flow.id)
            if flow.response is not None:
                reader.feed(flow.response.raw_content or b"")
            finished.append(pipeline.finish(reader, flows.end_time(flow), flows.error_text(flow)))
    return [call for call in finished if call is not None]


def _events(flows_in_file: list[http.HTTPFlow]) -> Iterator[tuple[str, http.HTTPFlow, Any]]:
    """(kind, flow, websocket message) in the order the live addon's hooks fired."""
    events = []
    for order, flow in enumerate(flows_in_file):
        request = flow.request
        events.append((request.timestamp_end or request.timestamp_start, 0, order, 0, "request", flow, None))
        for n, message in enumerate(flow.websocket.messages if flow.websocket else []):
            events.append((message.timestamp, 1, order, n, "message", flow, message))
        end = flow.websocket.timestamp_end if flow.websocket else flows.end_time(flow)
        events.append((end or math.inf, 2, order, 0, "end", flow, None))
    events.sort(key=lambda e: e[:4])
    for *_, kind, flow, message in events:
        yield kind, flow, message
