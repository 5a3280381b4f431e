"""Shared fixtures: a real mitmdump running addons/lineage.py, and a local upstream behind it."""

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


class Mitmdump:
    """A real `mitmdump -s addons/lineage.py` subprocess on 127.0.0.1."""

    def __init__(self, workdir: Path, mode: str, *args: str, addon: bool = True) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"mitmdump-{self.port}.log"
        self.confdir = workdir / "mitmproxy-conf"
        command = [
            str(Path(sys.executable).parent / "mitmdump"),
            "--mode", mode,
            "--listen-host", "127.0.0.1",
            "--listen-port", str(self.port),
            "--set", f"confdir={self.confdir}",
            "--set", "termlog_verbosity=warn",
            "--set", "flow_detail=0",
        ]
        if addon:
            command += ["-s", str(ADDON)]
        command += list(args)
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, self.process)
            # mitmdump listens before it loads scripts, and exits when a script fails to load.
            time.sleep(0.3)
            if self.process.poll() is not None or "error in script" in self.output():
                raise RuntimeError("mitmdump failed to start")
        except Exception:
            self.stop()
            raise RuntimeError(self.output()) from None

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, kill: bool = False) -> int | None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=15)
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
