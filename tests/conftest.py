"""Shared test helpers: a real mitmdump running the addon (the one way tests start it), free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "lineage.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT / "addons"))
sys.path.insert(0, str(ROOT / "tools"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


READY = "agent-lineage: ready"  # the addon's info line once mitmdump runs with it loaded
STARTUP_ERRORS = ("Addon error", "Error logged during startup", "error in script", "Traceback")


class Mitmdump:
    """A real mitmdump subprocess on 127.0.0.1 with the addon loaded (unless `addon=False`),
    started once it listens and, with the addon, once the addon says it is ready.

    `command` replaces `mitmdump -s ADDON` (an installed package's programs); `prefix` runs it
    inside another network namespace (then `port` is one free there)."""

    def __init__(
        self,
        workdir: Path,
        mode: str,
        *args: str,
        addon: bool = True,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        port: int | None = None,
        ready_timeout: float = 30.0,
        verbosity: tuple[str, int] = ("info", 0),  # termlog_verbosity, flow_detail
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"mitmdump-{self.port}.log"
        self.confdir = workdir / "mitmproxy-conf"
        self.addon = addon
        program = command or [str(Path(sys.executable).parent / "mitmdump"), *(["-s", str(ADDON)] if addon else [])]
        argv = [
            *(prefix or []),
            *program,
            "--mode", mode,
            "--listen-host", "127.0.0.1",
            "--listen-port", str(self.port),
            "--set", f"confdir={self.confdir}",
            "--set", f"termlog_verbosity={verbosity[0]}",
            "--set", f"flow_detail={verbosity[1]}",
            *args,
        ]  # fmt: skip
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(ready_timeout)
        except Exception:
            self.stop()
            raise RuntimeError(self.output()) from None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output()
            if self.process.poll() is not None or any(e in output for e in STARTUP_ERRORS):
                raise RuntimeError("mitmdump failed to start")
            if f"listening at 127.0.0.1:{self.port}" in output and (READY in output or not self.addon):
                return
            time.sleep(0.05)
        raise TimeoutError("mitmdump did not get ready")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, kill: bool = False) -> int | None:
        """Stop mitmdump (flows, calls and trajectories are complete once it has exited)."""
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture
def mitmdump_factory(tmp_path: Path) -> Iterator:
    started: list[Mitmdump] = []

    def start(mode: str, *args: str, addon: bool = True) -> Mitmdump:
        proxy = Mitmdump(tmp_path, mode, *args, addon=addon)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients in tests talk to 127.0.0.1 directly, whatever proxy the machine is set up with."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
