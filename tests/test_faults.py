"""Faults through a real mitmdump, the addon's beside bare mitmdump's: upstream 4xx, 5xx and 529,
a reset mid-stream, a close before any header, a slow first byte, a client that goes away
mid-stream; the proxy killed (-9) at random points of streamed sessions; the trace directory
read-only or its disk full.

HOSTILE_SLOW_SECONDS (default 3) sets the slow first byte (30 for the issue's figure), and
HOSTILE_KILL_TRIALS (default 6) the number of kill -9 trials (20 for the issue's figure).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import Mitmdump
from faulty_upstream import FaultyUpstream, stream_events

pytestmark = pytest.mark.e2e

SLOW_SECONDS = float(os.environ.get("HOSTILE_SLOW_SECONDS", "3"))
KILL_TRIALS = int(os.environ.get("HOSTILE_KILL_TRIALS", "6"))
FAULTS = ["status-400", "status-429", "status-500", "status-529", "reset", "close-early", f"slow-{SLOW_SECONDS:g}", ""]


def chat_body(tag: str) -> bytes:
    return orjson.dumps({"model": "faulty", "stream": True, "messages": [{"role": "user", "content": f"question {tag}"}]})


def outcome(client: httpx.Client, fault: str, tag: str) -> tuple:
    """What the client saw: status and raw body bytes, or the kind of failure."""
    received = []
    try:
        with client.stream(
            "POST", f"/v1/chat/completions?fault={fault}&tag={tag}", content=chat_body(tag), headers={"content-type": "application/json"}
        ) as response:
            for chunk in response.iter_raw():
                received.append(chunk)
            return response.status_code, b"".join(received)
    except httpx.HTTPError as e:
        return ("failed", type(e).__name__, b"".join(received))


def calls(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture
def upstream():
    with FaultyUpstream() as server:
        yield server


def test_upstream_faults_reach_the_client_as_bare_mitmdump_passes_them_and_are_recorded(upstream, tmp_path, no_proxy_env):
    seen = {}
    for addon in (False, True):
        workdir = tmp_path / ("addon" if addon else "bare")
        workdir.mkdir()
        options = ["--set", f"lineage_dir={workdir / 'traces'}", "--set", f"lineage_calls_log={workdir / 'calls.jsonl'}"] if addon else []
        proxy = Mitmdump(workdir, f"reverse:{upstream.url}", *options, addon=addon)
        try:
            with httpx.Client(base_url=proxy.url, timeout=SLOW_SECONDS + 60) as client:
                seen[addon] = [outcome(client, fault, f"{fault or 'ok'}-{i}") for i, fault in enumerate(FAULTS)]
        finally:
            proxy.stop()
            log = proxy.output()
        assert "Traceback" not in log
    by_tag = {FAULTS[i]: seen[True][i] for i in range(len(FAULTS))}
    # A reset mid-stream: the addon streams event streams, so the client has the events sent before
    # the reset, then the cut; bare mitmdump buffers the body and answers 502 instead.
    assert by_tag["reset"] == ("failed", "RemoteProtocolError", b"".join(stream_events("reset-4")[:2]))
    reset = FAULTS.index("reset")
    assert seen[False][reset][0] == 502
    del seen[True][reset], seen[False][reset]
    assert seen[True] == seen[False]  # else the addon changes nothing the client sees, fault or not
    assert by_tag[""] == (200, b"".join(stream_events("ok-7")))
    assert by_tag[f"slow-{SLOW_SECONDS:g}"][0] == 200  # a slow first byte is no timeout
    recorded = {c["path"].split("fault=")[1].split("&")[0]: c for c in calls(tmp_path / "addon" / "calls.jsonl")}
    assert set(recorded) == set(FAULTS)  # every call recorded, failed or not
    for status in (400, 429, 500, 529):
        assert recorded[f"status-{status}"]["error"].startswith(f"HTTP {status}")
    assert recorded["reset"]["error"] and "answer reset-4 part 0" in recorded["reset"]["response"]["output"]["text"]
    assert recorded["close-early"]["error"]
    for fault in ("", f"slow-{SLOW_SECONDS:g}"):
        assert recorded[fault]["error"] is None and recorded[fault]["response"]["complete"]


def test_a_client_that_goes_away_mid_stream_is_recorded_and_the_proxy_serves_on(tmp_path, no_proxy_env):
    with FaultyUpstream(event_delay=0.3) as upstream:
        proxy = Mitmdump(
            tmp_path,
            f"reverse:{upstream.url}",
            "--set",
            f"lineage_calls_log={tmp_path / 'calls.jsonl'}",
            "--set",
            f"lineage_dir={tmp_path / 'traces'}",
        )
        try:
            with httpx.Client(base_url=proxy.url, timeout=30) as client:
                with client.stream(
                    "POST", "/v1/chat/completions?tag=gone", content=chat_body("gone"), headers={"content-type": "application/json"}
                ) as response:
                    next(response.iter_raw())
                # closed after the first chunk; the next client is served in full
                assert outcome(client, "", "next") == (200, b"".join(stream_events("next")))
            deadline = time.monotonic() + 10
            while len(calls(tmp_path / "calls.jsonl")) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proxy.stop()
        assert "Traceback" not in proxy.output()
    recorded = {c["path"].split("tag=")[1]: c for c in calls(tmp_path / "calls.jsonl")}
    assert recorded["gone"]["error"] and not recorded["gone"]["response"]["complete"]
    assert recorded["next"]["error"] is None


# --- kill -9 during streamed sessions --------------------------------------------------------

WRITE_INTERVAL = 0.2


def test_kill_9_at_random_points_leaves_valid_files_with_every_call_done_a_write_interval_earlier(tmp_path, no_proxy_env):
    rng = random.Random(14)
    checked = 0
    with FaultyUpstream(event_delay=0.01) as upstream:
        for trial in range(KILL_TRIALS):
            workdir = tmp_path / f"trial-{trial}"
            workdir.mkdir()
            traces = workdir / "traces"
            proxy = Mitmdump(
                workdir, f"reverse:{upstream.url}", "--set", f"lineage_dir={traces}", "--set", f"lineage_write_interval={WRITE_INTERVAL}"
            )
            done: list[tuple[str, float]] = []  # (tag, when the client had the whole answer)
            kill_at = time.monotonic() + rng.uniform(0.3, 2.0)
            try:
                with httpx.Client(base_url=proxy.url, timeout=10) as client:
                    messages = [{"role": "user", "content": f"session {trial}"}]
                    for call in range(1000):
                        if time.monotonic() >= kill_at:
                            break
                        tag = f"t{trial}c{call}"
                        body = orjson.dumps({"model": "faulty", "stream": True, "messages": messages})
                        with client.stream(
                            "POST", f"/v1/chat/completions?tag={tag}", content=body, headers={"content-type": "application/json"}
                        ) as response:
                            b"".join(response.iter_raw())
                        done.append((tag, time.monotonic()))
                        answer = "".join(f"answer {tag} part {i}. " for i in range(4))
                        messages = [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": f"next {call}"}]
            finally:
                killed = time.monotonic()
                proxy.process.kill()
                proxy.stop()
            # A kill in the middle of a write can leave that write's temp file (`.NAME.tmp`), never a
            # torn trajectory: the files readers open are whole.
            files = [f for f in traces.glob("*") if not f.name.startswith(".")]
            assert all(f.name.endswith(".tmp") for f in traces.glob(".*")), list(traces.glob(".*"))
            text = b"".join(f.read_bytes() for f in files)
            for f in files:
                orjson.loads(f.read_bytes())  # every file whole
            # Every call the client had in full one write interval (plus slack for the writer's
            # thread on a loaded machine) before the kill is on disk.
            for tag, finished in done:
                if killed - finished > WRITE_INTERVAL + 0.5:
                    assert f"answer {tag} part 3".encode() in text, (trial, tag)
                    checked += 1
    assert checked > 0


# --- a trace directory that cannot be written ------------------------------------------------


def tiny_tmpfs(path: Path) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], capture_output=True).returncode == 0


def test_a_full_disk_logs_one_error_keeps_forwarding_and_writing_resumes_when_space_returns(tmp_path, no_proxy_env):
    traces = tmp_path / "traces"
    if not tiny_tmpfs(traces):
        pytest.skip("needs root to mount a tiny tmpfs")
    try:
        filler = traces / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        with FaultyUpstream() as upstream:
            proxy = Mitmdump(tmp_path, f"reverse:{upstream.url}", "--set", f"lineage_dir={traces}", "--set", "lineage_write_interval=0")
            try:
                with httpx.Client(base_url=proxy.url, timeout=30) as client:
                    for i in range(5):  # five sessions while the disk is full: all forwarded
                        assert outcome(client, "", f"full{i}") == (200, b"".join(stream_events(f"full{i}")))
                    time.sleep(0.5)
                    errors = [line for line in proxy.output().splitlines() if "cannot write" in line]
                    filler.unlink()  # space returns
                    assert outcome(client, "", "after") == (200, b"".join(stream_events("after")))
                    time.sleep(0.5)
            finally:
                proxy.stop()
            log = proxy.output()
        assert len(errors) == 1, errors  # one clear error, not one per call
        assert "No space left on device" in errors[0]
        assert "Traceback" not in log
        files = sorted(traces.iterdir())
        assert all(not f.name.startswith(".") for f in files), files  # nothing half-written
        text = b"".join(f.read_bytes() for f in files)
        for tag in ["after", *(f"full{i}" for i in range(5))]:  # pending sessions were written once space returned
            assert f"answer {tag} part 3".encode() in text, tag
    finally:
        subprocess.run(["umount", str(traces)], capture_output=True)


def test_a_read_only_directory_is_one_error_and_retried_until_it_works(tmp_path, caplog):
    """Root writes through file modes, so the refusal is the file system's, stood in for here."""
    import logging
    from unittest import mock

    from agent_lineage.trajectories import TrajectoryFiles, TrajectoryWriter
    from test_trajectories import agent_call

    refusals = iter([PermissionError(13, "Read-only file system")] * 3)
    real_write = TrajectoryFiles.write

    def refusing_write(self, session_id):
        error = next(refusals, None)
        if error is not None and session_id in self.dirty:
            raise error
        real_write(self, session_id)

    with (
        caplog.at_level(logging.WARNING, logger="agent_lineage"),
        mock.patch.object(TrajectoryFiles, "write", refusing_write),
        mock.patch("agent_lineage.trajectories.RETRY_SECONDS", 0.05),
    ):
        writer = TrajectoryWriter(tmp_path / "traces", 0)
        writer.add(agent_call(1, session="ro", agent="ro", new_turn=True, user="x"))
        time.sleep(0.5)
        writer.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "cannot write trajectories" in m]) == 1
    assert len([m for m in messages if "again" in m]) == 1
    assert [p.name for p in (tmp_path / "traces").iterdir()] == ["trajectory-ro.json"]
