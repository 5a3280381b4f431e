"""The built-in demo: the demo upstream behind a real mitmdump running the addon in reverse mode,
and the scripted demo agent (one session per wire API) driven through it.

    agent-lineage demo [--traces DIR] [--no-stream]
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from .. import addon_path
from .driver import run_demo
from .upstream import DemoUpstream


class DemoFailed(RuntimeError):
    pass


def mitmdump_command() -> str:
    """The mitmdump of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "mitmdump"
    found = str(beside) if beside.exists() else shutil.which("mitmdump")
    if not found:
        raise DemoFailed("mitmdump not found: install the project (pip install -e .) in this environment")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoFailed(f"mitmdump exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise DemoFailed("mitmdump did not start listening")


def run(traces: Path, stream: bool = True) -> list[Path]:
    """Play the demo; the trajectory files it wrote."""
    traces.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with DemoUpstream() as upstream:
        port = _free_port()
        command = [
            mitmdump_command(), "-q", "-s", addon_path(),
            "--mode", f"reverse:{upstream.base_url}",
            "--listen-host", "127.0.0.1", "--listen-port", str(port),
            "--set", f"lineage_dir={traces}",
        ]  # fmt: skip
        proxy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            _wait_listening(port, proxy)
            time.sleep(0.3)  # mitmdump listens before loading scripts; a script error exits it
            if proxy.poll() is not None:
                raise DemoFailed(f"mitmdump exited: {proxy.stdout.read().decode(errors='replace') if proxy.stdout else ''}")
            summaries = run_demo(f"http://127.0.0.1:{port}", stream=stream)
        finally:
            proxy.terminate()
            output, _ = proxy.communicate(timeout=30)
        if proxy.returncode not in (0, -15):
            raise DemoFailed(f"mitmdump failed ({proxy.returncode}):\n{output.decode(errors='replace')}")
    for summary in summaries:
        print(f"  {summary.api:20} {summary.requests} requests through the proxy: {summary.answers[-1]!r}")
    # Ids are deterministic, so a second run rewrites the same files: report what this run wrote.
    return sorted(p for p in traces.glob("trajectory-*.json") if p.stat().st_mtime >= started - 1)
