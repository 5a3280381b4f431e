"""The offline feeder: saved flows (`mitmdump -w FILE`) replayed through the same Pipeline.

Events are replayed in the order the live addon saw them: a request when its body had fully
arrived, a response when it ended. That order, not the order of flows in the file (mitmdump
writes them as they complete), is what makes the offline Calls equal the live ones; both feeders
drive the same Driver. This module and addon.py are the only ones that import mitmproxy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.exceptions import FlowReadException
from mitmproxy.io import FlowReader

from . import flows
from .driver import ANSWERED_KEY, Driver
from .model import Call
from .pipeline import Pipeline

Progress = Callable[[int, int], None]  # (bytes read, total bytes)


@dataclass(slots=True)
class FlowFile:
    """The HTTP flows of a saved file, in file order, and where reading stopped if it is cut short."""

    flows: list[http.HTTPFlow]
    size: int
    stopped_at: int | None = None  # byte offset after the last flow read whole
    problem: str | None = None


def read_flow_file(path: str | Path, progress: Progress | None = None) -> FlowFile:
    """Every flow that can be read; a truncated or corrupt tail (a killed mitmdump) ends the reading."""
    result = FlowFile([], os.path.getsize(path))
    with open(path, "rb") as f:
        good = 0
        try:
            for flow in FlowReader(f).stream():
                good = f.tell()
                if isinstance(flow, http.HTTPFlow):
                    result.flows.append(flow)
                if progress is not None:
                    progress(good, result.size)
        except FlowReadException as e:
            result.stopped_at, result.problem = good, str(e)
    return result


def read_flows(path: str | Path, progress: Progress | None = None) -> list[http.HTTPFlow]:
    """The HTTP flows of a saved file that can be read, in file order."""
    return read_flow_file(path, progress).flows


def replay(flows_in_file: list[http.HTTPFlow], pipeline: Pipeline) -> list[Call]:
    """Feed saved flows through the pipeline as the live addon did; the LLM Calls finished."""
    driver = Driver(pipeline)
    finished: list[Call | None] = []
    for kind, flow, message in _events(flows_in_file):
        if kind == "request":
            driver.request(flow)
            if flow.websocket is not None:
                driver.websocket_start(flow)
        elif kind == "message":
            finished.append(driver.websocket_message(flow, message))
        elif kind == "answered":
            driver.answered(flow)
        elif flow.id in driver.sockets:
            finished.append(driver.websocket_end(flow))
        elif flow.error is not None:
            finished.append(driver.error(flow))
        else:
            finished.append(driver.response(flow))
    return [call for call in finished if call is not None]


def _events(flows_in_file: list[http.HTTPFlow]) -> Iterator[tuple[str, http.HTTPFlow, Any]]:
    """(kind, flow, websocket message) in the order the live addon's hooks fired."""
    events: list[tuple[float, int, int, int, str, http.HTTPFlow, Any]] = []
    for order, flow in enumerate(flows_in_file):
        request = flow.request
        t_request = request.timestamp_end or request.timestamp_start
        events.append((t_request, 0, order, 0, "request", flow, None))
        for n, message in enumerate(flow.websocket.messages if flow.websocket else []):
            events.append((message.timestamp, 1, order, n, "message", flow, message))
        answered = flow.metadata.get(ANSWERED_KEY)
        if isinstance(answered, (int, float)) and flow.response is not None:
            events.append((max(answered, t_request), 1, order, 0, "answered", flow, None))
        end = flow.websocket.timestamp_end if flow.websocket else flows.end_time(flow)
        events.append((end or math.inf, 2, order, 0, "end", flow, None))
    events.sort(key=lambda e: e[:4])
    for *_, kind, flow, message in events:
        yield kind, flow, message
