"""Requests whose headers decide their lineage are stamped before their body is read; the
decisions, the stamps and the trajectories are the same as when every body is read first, live
and offline."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx
import orjson
import pytest

from agent_lineage import offline
from agent_lineage.cli import main as cli
from agent_lineage.demo.upstream import DemoUpstream
from agent_lineage.lineage import PARENT_HEADER, SESSION_HEADER
from agent_lineage.pipeline import Pipeline

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = sorted(FIXTURES.rglob("*.mitm"))
HARNESS_IDS = ("x-claude-code-session-id", "x-claude-code-agent-id")


def replayed(path: Path, headers_first: bool) -> tuple[bytes, list[tuple[str | None, str | None]], int]:
    """Replay a recording: the Calls (as JSON), the lineage each request went out with, and how
    many requests were stamped from their headers alone."""
    flows = offline.read_flows(path)
    pipeline = Pipeline()
    decide = pipeline.headers_before_body
    early = 0

    def counted(exchange):
        nonlocal early
        headers = decide(exchange) if headers_first else None
        early += headers is not None
        return headers

    pipeline.headers_before_body = counted
    calls = offline.replay(flows, pipeline)
    stamps = [(f.request.headers.get(SESSION_HEADER), f.request.headers.get(PARENT_HEADER)) for f in flows]
    return orjson.dumps(calls), stamps, early


def test_every_recording_gets_the_same_stamps_and_calls_with_or_without_reading_bodies_first(caplog):
    caplog.set_level(logging.ERROR, logger="agent_lineage")
    early_total = 0
    for path in RECORDINGS:
        calls, stamps, early = replayed(path, headers_first=True)
        assert (calls, stamps) == replayed(path, headers_first=False)[:2], path.name
        early_total += early
    assert not [r for r in caplog.records if "from its headers" in r.getMessage()]
    assert early_total >= 20  # Claude Code and Codex recordings: every request after a session's first


@pytest.fixture(scope="module")
def upstream():
    with DemoUpstream(chunk_delay=0.001) as server:
        yield server


def claude_code_requests() -> list[tuple[dict[str, str], bytes]]:
    flows = [f for f in offline.read_flows(FIXTURES / "real/cc_c_subagent.mitm") if f.request.method == "POST"]
    skip = ("host", "content-length", "accept-encoding", "x-api-key")
    return [({k: v for k, v in f.request.headers.items() if k.lower() not in skip}, f.request.content) for f in flows]


@pytest.mark.e2e
def test_live_stamps_and_trajectories_equal_offline_for_concurrent_harness_sessions(mitmdump_factory, upstream, tmp_path, no_proxy_env):
    live = tmp_path / "live"
    saved = tmp_path / "flows.mitm"
    proxy = mitmdump_factory(f"reverse:{upstream.base_url}", "--set", f"lineage_dir={live}", "-w", str(saved))
    requests = claude_code_requests()

    def session(n: int) -> None:  # one Claude Code session (with its subagent) under its own id
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            for headers, body in requests:
                headers = {k: f"{v}-{n}" if k.lower() in HARNESS_IDS else v for k, v in headers.items()}
                client.post("/v1/messages?beta=true", headers=headers, content=body).raise_for_status()

    threads = [threading.Thread(target=session, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    proxy.stop()

    flows = offline.read_flows(saved)
    live_stamps = [(f.request.headers.get(SESSION_HEADER), f.request.headers.get(PARENT_HEADER)) for f in flows]
    assert len(flows) == 4 * len(requests) and all(agent for agent, _ in live_stamps)
    offline.replay(flows, Pipeline())  # re-stamps each saved request from the client's own headers
    assert [(f.request.headers.get(SESSION_HEADER), f.request.headers.get(PARENT_HEADER)) for f in flows] == live_stamps
    assert cli(["convert", str(saved), "-o", str(tmp_path / "offline")]) == 0
    written = {p.name: p.read_bytes() for p in sorted(live.glob("trajectory-*.json"))}
    assert len(written) == 4
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "offline").glob("trajectory-*.json"))} == written
