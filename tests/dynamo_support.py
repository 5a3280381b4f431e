"""scripts/dynamo as a module, and reading what a Dynamo frontend recorded.

`scripts/dynamo` is a command for people and, loaded here, the library tests use:
`setup()`, `find_python312()`, `Dynamo(run_dir, trace=..., replay=...)`, `encode_replies()`,
`replay_annotation()`.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "dynamo"


def _load():
    loader = importlib.machinery.SourceFileLoader("agent_lineage_scripts_dynamo", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses and friends look modules up by name
    loader.exec_module(module)
    return module


dynamo = _load()


def read_trace(path: Path) -> list[dict]:
    """The `request_end` events of a Dynamo request trace (JSONL); a line still being written is
    skipped."""
    events = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line).get("event", {})
            except ValueError:
                continue
            if event.get("event_type") == "request_end":
                events.append(event)
    return events


def requests_seen(frontend_log: Path, trace: Path) -> dict[str, dict]:
    """What the frontend did with each request, by its `x-request-id`: `status` (the frontend's own
    outcome, "success"), `worker` (decode worker id), `session` and `parent` (the lineage it parsed,
    None when there was none).

    The request trace has the worker and the parsed lineage of every request, but names the
    x-request-id only when a request carries lineage; the frontend's JSON log (DYN_LOGGING_JSONL=1)
    ties every x-request-id to the frontend's request id, which the trace always has."""
    ids: dict[str, str] = {}
    status: dict[str, str] = {}
    if frontend_log.exists():
        for line in frontend_log.read_text(errors="replace").splitlines():
            if not line.startswith("{") or "x_request_id" not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            label, request_id = record.get("x_request_id"), record.get("request_id")
            if record.get("message") == "request received" and label and request_id:
                ids[request_id] = label
            elif record.get("message") == "request completed" and label:
                status[label] = record.get("status")
    seen = {}
    for event in read_trace(trace):
        request = event.get("request") or {}
        label = request.get("x_request_id") or ids.get(request.get("request_id", ""))
        if not label:
            continue
        context = event.get("agent_context") or {}
        seen[label] = {
            "status": status.get(label),
            "worker": (request.get("worker") or {}).get("decode_worker_id"),
            "session": context.get("session_id"),
            "parent": context.get("parent_session_id"),
        }
    return seen
