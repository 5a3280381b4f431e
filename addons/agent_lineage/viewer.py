"""`agent-lineage view`: trajectories as one self-contained HTML page.

The page is static: its CSS and JS (viewer_assets/) are inlined, each session's trajectory is
embedded as JSON in a `<script type="application/json">` element and parsed only when that
session is opened, and the browser builds every node itself with `textContent`, so nothing from
a trajectory is ever parsed as HTML. The page makes no request at all: it works from file://.

One session opens straight into its view; several (a directory, or several files) open on an
index of sessions whose rows are computed here, so the index needs no session's JSON parsed.
Any ATIF trajectory works; what agent-lineage adds under `extra` (docs/atif-extra.md), when
present, adds turns, lineage ids, evidence and side requests.

Each LLM step also shows the prefix reuse `agent-lineage kv` reports for its request (docs/kv.md),
computed here over all the sessions of the page in their order, at kv's default workers and cache:
the same figures `agent-lineage kv` gives for the same files in the same order.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from . import kv

ASSETS = "viewer_assets"


class NotATrajectory(Exception):
    """A file that is not JSON, or JSON that is not an ATIF trajectory."""


@dataclass
class Session:
    """One trajectory file, read and ready to embed."""

    path: Path
    document: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The session's row of the index page."""
        agents = list(_trajectories(self.document))
        steps = [step for trajectory in agents for step in trajectory.get("steps", [])]
        starts = [(_epoch(step.get("timestamp")), step) for step in steps]
        times = sorted(t for t, _ in starts if t is not None)
        ends = [t + _latency_ms(step) / 1000 for t, step in starts if t is not None]
        metrics = self.document.get("final_metrics") or {}
        lineage = (self.document.get("extra") or {}).get("agent_lineage") or {}
        agent = self.document.get("agent") or {}
        return {
            "file": self.path.name,
            "session_id": self.document.get("session_id", ""),
            "agent": agent.get("name", ""),
            "model": agent.get("model_name", ""),
            "start": times[0] if times else None,
            "end": max(ends) if ends else None,
            "agents": len(agents),
            "llm_calls": sum(1 for step in steps if step.get("source") == "agent"),
            "turns": len(lineage.get("turns") or []) or None,
            "side_requests": len(lineage.get("side_requests") or []),
            "prompt_tokens": metrics.get("total_prompt_tokens"),
            "completion_tokens": metrics.get("total_completion_tokens"),
            "cached_tokens": metrics.get("total_cached_tokens"),
        }


def read_session(path: Path) -> Session:
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise NotATrajectory(f"{path}: not JSON ({e})") from None
    if not isinstance(document, dict) or not isinstance(document.get("steps"), list):
        raise NotATrajectory(f"{path}: not an ATIF trajectory (no steps)")
    return Session(path, document)


def trajectory_files(directory: Path) -> list[Path]:
    """The JSON files directly in a directory, in name order (convert writes trajectory-*.json)."""
    return sorted(p for p in directory.iterdir() if p.suffix == ".json" and p.is_file())


def render(sessions: list[Session], title: str) -> str:
    """The whole page: the index (when there are several sessions) and every session's data."""
    data = [f'<script type="application/json" id="index">{_embed([s.summary() for s in sessions])}</script>']
    for number, (session, reuse) in enumerate(zip(sessions, step_reuse(sessions))):
        data.append(f'<script type="application/json" id="session-{number}">{_embed(session.document)}</script>')
        data.append(f'<script type="application/json" id="reuse-{number}">{_embed(reuse)}</script>')
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        # No request may leave the page, whatever a trajectory holds.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>\n{_asset('viewer.css')}</style>\n</head>\n<body>\n"
        '<div id="app"><p class="loading">Loading…</p></div>\n'
        + "\n".join(data)
        + f"\n<script>\n{_asset('viewer.js')}</script>\n</body>\n</html>\n"
    )


def step_reuse(sessions: list[Session]) -> list[dict[str, Any]]:
    """Per session: the KV figures of each LLM step, as steps[agent id][step id], each with the
    tokens of its prompt shared with an earlier request by relation (kv.reuse) and the tokens a
    worker's cache served when routed by lineage (kv.simulate)."""
    requests: list[kv.Request] = []
    owners: list[int] = []
    for number, session in enumerate(sessions):
        found = kv.from_trajectory(session.document, str(number))
        requests += found
        owners += [number] * len(found)
    shared = kv.reuse(requests)
    routed = kv.simulate(requests, "lineage", kv.DEFAULT_WORKERS, kv.DEFAULT_CACHE_TOKENS).per_request
    pages: list[dict[str, Any]] = [{"workers": kv.DEFAULT_WORKERS, "cache_tokens": kv.DEFAULT_CACHE_TOKENS, "steps": {}} for _ in sessions]
    for number, request, reuse, cached in zip(owners, requests, shared, routed):
        step_id = request.label.rsplit(":", 1)[1]  # the label is source:agent:step_id
        pages[number]["steps"].setdefault(request.agent, {})[step_id] = {
            "prompt_tokens": request.tokens,
            "same_agent": reuse.same_agent,
            "parent": reuse.parent,
            "sibling": reuse.sibling,
            "other_session": reuse.other_session,
            "cached_lineage": cached,
        }
    return pages


def _embed(value: Any) -> str:
    """JSON that cannot end its <script> element: every `<` (as in `</script>` or `<!--`) is
    written as the JSON escape `\\u003c`, which JSON.parse reads back as `<`."""
    return orjson.dumps(value).decode().replace("<", "\\u003c")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(ASSETS, name).read_text(encoding="utf-8")


def _trajectories(document: dict[str, Any]):
    """A trajectory and every subagent trajectory embedded in it, depth first."""
    stack = [document]
    while stack:
        trajectory = stack.pop()
        yield trajectory
        stack.extend(reversed([t for t in trajectory.get("subagent_trajectories") or [] if isinstance(t, dict)]))


def _latency_ms(step: dict[str, Any]) -> float:
    latency = ((step.get("metrics") or {}).get("extra") or {}).get("latency_ms")
    return latency if isinstance(latency, int | float) else 0


def _epoch(timestamp: Any) -> float | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
