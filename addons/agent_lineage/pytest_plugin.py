"""pytest plugin: regression tests of agents against captured traffic, offline, with trajectory goldens.

    def test_agent_fixes_the_bug(lineage, tmp_path):
        run = lineage("tests/captures/fix_bug.mitm", upstream="https://api.anthropic.com")
        subprocess.run(["claude", "-p", "Fix the bug."], env=os.environ | run.env("claude"), cwd=..., check=True)
        run.assert_trajectory_matches("tests/goldens/fix_bug.json")

`lineage(capture, upstream=...)` starts `mitmdump` with the agent-lineage addon in reverse mode:
in front of a replay upstream answering from `capture` (`agent-lineage replay`), or, with
`pytest --lineage-update`, in front of the real `upstream`, saving the traffic to `capture`. The
run hands out the base URL and environment for each kind of client, collects the trajectories
the addon wrote, and `assert_trajectory_matches(golden)` compares them with exactly the
semantics of `agent-lineage diff`, printing its lines on failure; `--lineage-update` rewrites the
golden instead. Registered through the `pytest11` entry point of the agent-lineage package.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from . import addon_path
from .shape import diff_shapes, shape_of
from .validate import validate_trajectory

REPLAY_KEY = "sk-replay"  # what clients send as their key when replaying: nothing checks it
START_TIMEOUT = 30.0
STARTUP_ERRORS = ("error in script", "Error logged during startup", "Addon error", "Traceback")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agent-lineage")
    group.addoption(
        "--lineage-update",
        action="store_true",
        default=False,
        help="agent-lineage: record captures against the real upstreams and rewrite trajectory goldens",
    )


class LineageRun:
    """One agent run through mitmdump + the addon, against a capture (or recording one)."""

    def __init__(self, capture: Path, upstream: str | None, workdir: Path, recording: bool, ignore: list[str]) -> None:
        self.capture = capture
        self.recording = recording
        self.workdir = workdir
        self.traces = workdir / "traces"
        self.replay: Any = None  # the ReplayServer, when replaying
        self.mitmdump: subprocess.Popen | None = None
        self.log_path = workdir / "mitmdump.log"
        if recording:
            if not upstream:
                raise pytest.UsageError("lineage(...): recording (--lineage-update) needs the real upstream= URL")
            target = upstream
            self.saved = workdir / "capture.mitm"
        else:
            if not capture.is_file():
                pytest.fail(
                    f"no capture {capture}: record it once with `pytest --lineage-update` (against {upstream or 'the real API'})",
                    pytrace=False,
                )
            from .replay import Capture, ReplayServer  # imports mitmproxy: only when a test asks for it

            self.replay = ReplayServer(Capture.from_files([capture], [re.compile(p) for p in ignore])).start()
            target = self.replay.url
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._start_mitmdump(target)

    def _start_mitmdump(self, target: str) -> None:
        command = [
            _mitmdump(),
            "--mode", f"reverse:{target}",
            "--listen-host", "127.0.0.1",
            "--listen-port", str(self.port),
            "--set", f"confdir={self.workdir / 'mitmproxy-conf'}",
            "--set", "termlog_verbosity=warn",
            "--set", "flow_detail=0",
            "-s", addon_path(),
            "--set", f"lineage_dir={self.traces}",
            "--set", "lineage_write_interval=0",
        ]  # fmt: skip
        if self.recording:
            command += ["-w", str(self.saved)]
        self.log = open(self.log_path, "wb")
        self.mitmdump = subprocess.Popen(command, cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.mitmdump.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)  # mitmdump listens before it loads scripts, and exits when one fails
        output = self.output()
        if self.mitmdump.poll() is not None or any(e in output for e in STARTUP_ERRORS):
            self.close()
            pytest.fail(f"mitmdump did not start:\n{output}", pytrace=False)

    # -- what the test points its clients at ----------------------------------------------------

    def env(self, client: str) -> dict[str, str]:
        """Environment for a client: 'anthropic' (SDK), 'openai' (SDK), 'claude' (Claude Code) or
        'codex' (Codex; writes its config.toml into a fresh CODEX_HOME). Keys are the real ones
        from the environment when recording, a placeholder when replaying."""
        anthropic_key = os.environ.get("ANTHROPIC_API_KEY", REPLAY_KEY) if self.recording else REPLAY_KEY
        openai_key = os.environ.get("OPENAI_API_KEY", REPLAY_KEY) if self.recording else REPLAY_KEY
        if client == "anthropic":
            return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": anthropic_key}
        if client == "openai":
            return {"OPENAI_BASE_URL": f"{self.url}/v1", "OPENAI_API_KEY": openai_key}
        if client == "claude":
            return {
                "ANTHROPIC_BASE_URL": self.url,
                "ANTHROPIC_API_KEY": anthropic_key,
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry or update checks to miss
                "DISABLE_AUTOUPDATER": "1",
            }
        if client == "codex":
            home = self.workdir / "codex-home"
            home.mkdir(exist_ok=True)
            (home / "config.toml").write_text(self.codex_config())
            return {"CODEX_HOME": str(home), "OPENAI_API_KEY": openai_key}
        raise ValueError(f"unknown client {client!r}: anthropic, openai, claude or codex")

    def codex_config(self) -> str:
        """A Codex config.toml whose model provider is this run's proxy (Responses over HTTP)."""
        return (
            'model_provider = "lineage"\n\n[model_providers.lineage]\nname = "agent-lineage"\n'
            f'base_url = "{self.url}/v1"\nwire_api = "responses"\nenv_key = "OPENAI_API_KEY"\n'
        )

    # -- results ----------------------------------------------------------------------------------

    def trajectories(self) -> list[Path]:
        """The trajectory files of the run (stops the proxy, so every file is complete)."""
        self.close()
        return sorted(self.traces.glob("trajectory-*.json"))

    @property
    def misses(self) -> list[str]:
        return [miss.message() for miss in self.replay.stats.misses] if self.replay is not None else []

    def assert_trajectory_matches(self, golden: str | Path, tokens: bool = False) -> None:
        """The run's trajectory has the golden's shape (`agent-lineage diff` semantics), or the test
        fails with diff's lines; with --lineage-update the golden is rewritten instead."""
        golden = Path(golden)
        produced = self.trajectories()
        if len(produced) != 1:
            names = ", ".join(p.name for p in produced) or "none"
            pytest.fail(
                f"expected one trajectory (one root session), the run wrote {len(produced)}: {names}{self._miss_note()}", pytrace=False
            )
        actual = _valid_trajectory(produced[0])
        if self.recording:
            golden.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(produced[0], golden)
            return
        if not golden.is_file():
            pytest.fail(f"no golden {golden}: write it with `pytest --lineage-update`", pytrace=False)
        differences = diff_shapes(shape_of(_valid_trajectory(golden)), shape_of(actual), tokens=tokens)
        if differences:
            lines = "\n".join(differences)
            pytest.fail(f"trajectory differs from {golden} (agent-lineage diff):\n{lines}{self._miss_note()}", pytrace=False)

    def _miss_note(self) -> str:
        if not self.misses:
            return ""
        return f"\n\nthe replay missed {len(self.misses)} request(s):\n" + "\n".join(self.misses)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """Stop mitmdump and the replay upstream; when recording, move the capture into place."""
        if self.mitmdump is not None:
            if self.mitmdump.poll() is None:
                self.mitmdump.terminate()
                try:
                    self.mitmdump.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.mitmdump.kill()
                    self.mitmdump.wait()
            self.mitmdump = None
            self.log.close()
            if self.recording and self.saved.exists():
                self.capture.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.saved, self.capture)
        if self.replay is not None and self.replay.thread is not None:
            self.replay.stop()


@pytest.fixture
def lineage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LineageRun]]:
    """`lineage(capture, upstream=None, ignore=())` -> a LineageRun (see the module docstring).
    The test's temporary directories are left out of the replay's request keys (`ignore` adds
    more regular expressions)."""
    runs: list[LineageRun] = []
    recording = bool(request.config.getoption("--lineage-update"))

    def start(capture: str | Path, upstream: str | None = None, ignore: tuple[str, ...] | list[str] = ()) -> LineageRun:
        workdir = tmp_path_factory.mktemp("lineage")
        patterns = [_temporary_root(tmp_path_factory.getbasetemp()), *ignore]
        run = LineageRun(Path(capture), upstream, workdir, recording, patterns)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def _temporary_root(basetemp: Path) -> str:
    """A pattern for this and every other pytest run's base temporary directory
    (/tmp/pytest-of-USER/pytest-NNN): the recording run had another NNN."""
    if re.fullmatch(r"pytest-\d+", basetemp.name):
        return re.escape(str(basetemp.parent)) + r"/pytest-\d+"
    return re.escape(str(basetemp))


def _mitmdump() -> str:
    beside = Path(sys.executable).parent / "mitmdump"
    return str(beside) if beside.exists() else shutil.which("mitmdump") or "mitmdump"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _valid_trajectory(path: Path) -> dict[str, Any]:
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        pytest.fail(f"{path}: not a trajectory ({e})", pytrace=False)
    problems = validate_trajectory(document)
    if problems:
        pytest.fail(f"{path} is not a valid ATIF trajectory: {problems[0]}", pytrace=False)
    return document
