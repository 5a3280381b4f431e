"""TrajectoryWriter / TrajectoryFiles: atomic, debounced, crash-safe trajectory files."""

from __future__ import annotations

import itertools
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from agent_lineage import trajectories
from agent_lineage.model import Call, Usage
from agent_lineage.trajectories import TrajectoryFiles, TrajectoryWriter, write_trajectories
from agent_lineage.validate import validate_trajectory
from test_atif import ROOT, agent_call

ADDONS = Path(__file__).resolve().parent.parent / "addons"
TESTS = Path(__file__).resolve().parent
BASE = f"trajectory-{ROOT}.json"


def session_calls(count: int, session: str = ROOT, start: int = 1) -> list[Call]:
    """A root agent working through `count` calls, each answering the previous call's tool call."""
    calls = [
        agent_call(
            start, session=session, agent=session, new_turn=True, user="go", tools=[(f"{session}-t{start}", "Bash", {"command": "ls"})]
        )
    ]
    for n in range(start + 1, start + count):
        calls.append(
            agent_call(
                n,
                session=session,
                agent=session,
                results=[(f"{session}-t{n - 1}", "out")],
                tools=[(f"{session}-t{n}", "Bash", {"command": "ls"})],
            )
        )
    return calls


def exchange_ids(path: Path) -> list[str]:
    """The exchanges recorded as agent steps in a valid trajectory file (subagents included)."""
    document = orjson.loads(path.read_bytes())
    assert validate_trajectory(document) == []
    found = []
    stack = [document]
    while stack:
        trajectory = stack.pop()
        found += [s["extra"]["agent_lineage"]["exchange_id"] for s in trajectory["steps"] if s["source"] == "agent"]
        stack += trajectory.get("subagent_trajectories", [])
    return found


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def steps_in(path: Path) -> int:
    try:
        return len(exchange_ids(path))
    except FileNotFoundError:
        return 0


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str]]:
    """Every file write: (monotonic time, file name)."""
    seen: list[tuple[float, str]] = []
    real = trajectories.write_atomically

    def spy(path: Path, data: bytes) -> None:
        real(path, data)
        seen.append((time.monotonic(), path.name))

    monkeypatch.setattr(trajectories, "write_atomically", spy)
    return seen


def test_files_are_replaced_atomically_with_a_complete_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def check_replace(src: str | Path, dst: str | Path) -> None:
        src, dst = Path(src), Path(dst)
        assert src.parent == dst.parent  # same directory: the rename is atomic
        assert validate_trajectory(orjson.loads(src.read_bytes())) == []
        replaced.append((src.name, dst.name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", check_replace)
    files = TrajectoryFiles(tmp_path)
    for call in session_calls(3):
        files.add(call)
        files.write(ROOT)
    assert replaced == [(f".{BASE}.tmp", BASE)] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [BASE]


def test_a_reader_never_sees_a_torn_file(tmp_path: Path) -> None:
    writer = TrajectoryWriter(tmp_path, 0)
    path = tmp_path / BASE
    torn: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                orjson.loads(data)
            except orjson.JSONDecodeError:
                torn.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    for call in session_calls(150):
        writer.add(call)
    writer.close()
    done.set()
    reader.join()
    assert torn == []
    assert steps_in(path) == 150


def test_zero_interval_writes_after_every_call(tmp_path: Path, writes: list[tuple[float, str]]) -> None:
    writer = TrajectoryWriter(tmp_path, 0)
    for n, call in enumerate(session_calls(5), 1):
        writer.add(call)
        wait_for(lambda n=n: steps_in(tmp_path / BASE) == n)
    writer.close()
    assert len(writes) == 5


def test_a_write_interval_debounces_and_close_writes_the_rest(tmp_path: Path, writes: list[tuple[float, str]]) -> None:
    writer = TrajectoryWriter(tmp_path, 0.2)
    for call in session_calls(40):
        writer.add(call)
        time.sleep(0.01)
    writer.close()
    assert 2 <= len(writes) <= 6, writes
    times = [t for t, _ in writes]
    assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(times[:-1]))  # close may write sooner
    assert steps_in(tmp_path / BASE) == 40


def test_a_big_file_is_rewritten_less_often_than_the_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = 50_000  # bytes per second: a 10 KB file waits 0.2 s for its next rewrite
    rewrites: list[tuple[float, int]] = []  # (monotonic time, bytes)
    real = trajectories.write_atomically

    def spy(path: Path, data: bytes) -> None:
        real(path, data)
        rewrites.append((time.monotonic(), len(data)))

    monkeypatch.setattr(trajectories, "write_atomically", spy)
    writer = TrajectoryWriter(tmp_path, 0.01, rewrite_bytes_per_second=budget)
    for call in session_calls(80):
        writer.add(call)
        time.sleep(0.01)
    writer.close()
    assert steps_in(tmp_path / BASE) == 80
    assert rewrites[-1][1] > 20_000
    assert len(rewrites) <= 25, rewrites  # the 10 ms interval alone would rewrite it about 80 times
    # Each rewrite waits for its predecessor's bytes / budget (close writes the rest at once).
    for (earlier, size), (later, _) in itertools.pairwise(rewrites[:-1]):
        assert later - earlier >= max(0.01, size / budget) * 0.99


def test_sessions_are_debounced_separately(tmp_path: Path, writes: list[tuple[float, str]]) -> None:
    writer = TrajectoryWriter(tmp_path, 30)
    writer.add(session_calls(1)[0])
    writer.add(session_calls(1, session="sess-2")[0])
    wait_for(lambda: len(writes) == 2)  # each session's first call is written at once
    writer.close()
    assert sorted(name for _, name in writes) == [BASE, "trajectory-sess-2.json"]


def test_eviction_writes_now_and_a_later_call_continues_in_a_new_part(tmp_path: Path) -> None:
    writer = TrajectoryWriter(tmp_path, 30)
    calls = session_calls(4)
    for call in calls[:3]:
        writer.add(call)
    writer.session_evicted(ROOT)
    wait_for(lambda: steps_in(tmp_path / BASE) == 3)  # not 30 s later
    writer.add(calls[3])
    second = tmp_path / f"trajectory-{ROOT}.2.json"
    wait_for(lambda: steps_in(second) == 1)
    writer.close()
    first = orjson.loads((tmp_path / BASE).read_bytes())
    assert first["continued_trajectory_ref"] == second.name
    assert validate_trajectory(first) == []
    assert orjson.loads(second.read_bytes())["extra"]["agent_lineage"]["continues"] == BASE
    assert exchange_ids(tmp_path / BASE) + exchange_ids(second) == [c.exchange_id for c in calls]


def test_a_file_from_an_earlier_run_is_continued_live_and_replaced_offline(tmp_path: Path) -> None:
    write_trajectories(session_calls(2), tmp_path)
    writer = TrajectoryWriter(tmp_path, 0)
    writer.add(session_calls(1, start=10)[0])
    writer.close()
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [f"trajectory-{ROOT}.2.json", BASE]
    assert steps_in(tmp_path / BASE) == 2
    assert orjson.loads((tmp_path / BASE).read_bytes())["continued_trajectory_ref"] == f"trajectory-{ROOT}.2.json"

    assert write_trajectories(session_calls(3), tmp_path) == [tmp_path / BASE]
    assert steps_in(tmp_path / BASE) == 3


def test_a_session_id_never_leads_outside_the_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A path in an id is not a path in its file name (it is named by a digest); a symlink
    planted in the directory is refused, once."""
    directory = tmp_path / "traces"
    (directory / "trajectory-a").mkdir(parents=True)  # so that a/../../x would resolve
    outside = tmp_path / "outside.json"
    (directory / "trajectory-link.json").symlink_to(outside)
    files = TrajectoryFiles(directory)
    with caplog.at_level(logging.ERROR, logger="agent_lineage"):
        for session in ("a/../../escape", "link", "link"):
            assert files.add(agent_call(1, session=session, agent=session, new_turn=True, user="x")) is None
    files.close()
    assert not outside.exists() and not (tmp_path / "escape.json").exists()
    assert [p.parent for p in files.written] == [directory.resolve()]
    assert orjson.loads(next(iter(files.written)).read_bytes())["session_id"] == "a/../../escape"
    assert len([r for r in caplog.records if "refusing" in r.message]) == 1  # once per session


def test_the_directory_is_created(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    assert write_trajectories(session_calls(1), directory) == [directory / BASE]


def test_the_live_writer_ends_with_the_same_bytes_as_write_trajectories(tmp_path: Path) -> None:
    calls = [
        agent_call(0, side="probe", usage=Usage()),
        *session_calls(3, start=1),
        agent_call(4, tools=[("ta", "Agent", {"prompt": "A"}), ("tb", "Agent", {"prompt": "B"})]),
        agent_call(5, agent="b", parent=ROOT, user="B", delegated_by="tb", tools=[("tb1", "Agent", {"prompt": "deep"})]),
        agent_call(6, agent="deep", parent="b", user="deep", delegated_by="tb1"),
        agent_call(7, agent="a", parent=ROOT, user="A"),
        *session_calls(2, session="sess-2", start=8),
        agent_call(10, results=[("ta", "A done"), ("tb", "B done")], delegations={"ta": "a"}),
    ]
    writer = TrajectoryWriter(tmp_path / "live", 0.05)
    for call in calls:
        writer.add(call)
    writer.close()
    offline = write_trajectories(calls, tmp_path / "offline")
    assert [p.name for p in offline] == [BASE, "trajectory-sess-2.json"]
    for path in offline:
        assert (tmp_path / "live" / path.name).read_bytes() == path.read_bytes()


def test_the_writer_outlives_a_call_it_cannot_fold_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = agent_call(1, new_turn=True, user="x")
    bad.response.usage = None  # type: ignore[assignment]
    writer = TrajectoryWriter(tmp_path, 0)
    with caplog.at_level(logging.ERROR, logger="agent_lineage"):
        writer.add(bad)
        writer.add(agent_call(2))
        writer.close()
        writer.close()  # idempotent
    assert exchange_ids(tmp_path / BASE) == ["ex-2"]
    assert any("cannot record a call" in r.message for r in caplog.records)


# -- kill -9 ----------------------------------------------------------------------------------

CHILD = """
import sys, time
sys.path[:0] = [{addons!r}, {tests!r}]
from test_atif import agent_call
from agent_lineage.trajectories import TrajectoryWriter

writer = TrajectoryWriter(sys.argv[1], float(sys.argv[2]))
print("ready", flush=True)
n = 0
while True:
    n += 1
    session = ("sess-a", "sess-b")[n % 2]
    previous = [(f"t{{n - 2}}", "x" * 2000)] if n > 2 else []
    call = agent_call(n, session=session, agent=session, new_turn=n <= 2, user="go" if n <= 2 else None,
                      results=previous, tools=[(f"t{{n}}", "Bash", {{"command": "y" * 300}})])
    writer.add(call)
    print(call.exchange_id, time.time(), flush=True)
    time.sleep(0.003)
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_leaves_valid_files_with_every_call_older_than_the_interval(tmp_path: Path, seed: int) -> None:
    interval = 0.2
    slack = 0.1  # the write itself and the hand-over to the writer thread
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(addons=str(ADDONS), tests=str(TESTS)), str(tmp_path), str(interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout))  # type: ignore[arg-type]
    reader.start()
    wait_for(lambda: "ready\n" in lines, timeout=20)
    time.sleep(random.Random(seed).uniform(0.5, 1.2))
    killed_at = time.time()
    child.kill()
    child.wait()
    reader.join()
    added = [(exchange, float(t)) for exchange, t in (line.split() for line in lines[1:] if line.count(" ") == 1)]
    must_have = {exchange for exchange, t in added if t < killed_at - interval - slack}
    on_disk: set[str] = set()
    for path in tmp_path.glob("trajectory-*.json"):
        on_disk |= set(exchange_ids(path))  # parses and validates
    assert len(added) > 50
    assert must_have and must_have <= on_disk, sorted(must_have - on_disk)
