"""The package as users install it: a wheel built from this checkout, installed into a fresh
virtualenv outside it, runs under `mitmdump -s` with nothing from the checkout on the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent_lineage.demo.upstream import DemoUpstream
from conftest import ROOT, Mitmdump

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv holding the wheel and its dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(work)], check=True, cwd=work)
    [wheel] = work.glob("agent_lineage-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", str(wheel)], check=True, cwd=work)
    return venv / "bin"


def clean_env() -> dict[str, str]:
    """No PYTHONPATH and no proxy: only what the venv itself holds."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return env | {"NO_PROXY": "127.0.0.1"}


def test_the_installed_addon_runs_under_mitmdump_outside_the_checkout(installed, tmp_path):
    path = subprocess.run(
        [installed / "agent-lineage", "addon-path"], capture_output=True, text=True, check=True, env=clean_env()
    ).stdout.strip()
    assert Path(path).is_file() and ROOT not in Path(path).parents
    assert Path(path).is_relative_to(installed.parent)
    with DemoUpstream() as upstream:
        for how in (["-s", path], ["proxy"]):
            upstream.clear()
            traces = tmp_path / f"traces-{how[0]}"
            program = installed / ("mitmdump" if how[0] == "-s" else "agent-lineage")
            proxy = Mitmdump(
                tmp_path, f"reverse:{upstream.base_url}", "--set", f"lineage_dir={traces}", command=[str(program), *how], env=clean_env()
            )
            try:
                reply = httpx.post(
                    f"{proxy.url}/v1/chat/completions",
                    json={"model": "demo-model", "messages": [{"role": "user", "content": "hello from an installed package"}]},
                    timeout=10,
                )
            finally:
                proxy.stop()
            assert reply.status_code == 200, proxy.output()
            [received] = upstream.requests
            assert received.header("x-dynamo-session-id").startswith("sess-")
            assert len(list(traces.glob("trajectory-*.json"))) == 1, proxy.output()
