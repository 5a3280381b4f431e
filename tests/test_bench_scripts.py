"""The benchmark scripts still run and print their tables (tiny sizes: a smoke run, no figures judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_request_path_benchmark_prints_the_hook_and_the_catch_up_against_the_parse():
    out = run("bench_request_path.py", "--rounds", "2", "--requests", "3")
    assert "request hook (before forwarding)" in out and "catch-up (after forwarding)" in out
    assert "orjson.loads of the body" in out


def test_trajectory_benchmark_prints_a_row_per_window():
    out = run("bench_trajectories.py", "--calls", "100", "--runs", "1")
    rows = [line.split()[0] for line in out.splitlines() if line.startswith(" ") and line.strip()[:1].isdigit()]
    assert rows == ["10", "100"]


@pytest.mark.e2e
def test_proxy_benchmark_prints_ratios_to_bare_mitmdump(no_proxy_env):
    out = run("bench_proxy", "--requests", "3", "--sessions", "2", "--session-requests", "1")
    assert "throughput, 8 clients" in out and "2 sessions: first byte, round 2" in out
    assert "resident memory after the run" in out
