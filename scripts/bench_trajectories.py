#!/usr/bin/env python3
"""What one call costs the trajectory writer, early and late in a long session.

A 500-call session of one agent, a tool call on every call, message sizes like a coding agent's
(a 12 KB system prompt, 3 KB tool results, 400-character answers, 300-character arguments). For
each call: `TrajectoryBuilder.add`, rendering the document, and the atomic file write — what the
writer thread does after every call with write_interval 0. Printed per window of 10 calls
ending at call 10, 100 and 500, over several runs:

    scripts/bench_trajectories.py [--calls 500] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addons"))

from agent_lineage.atif import TrajectoryBuilder
from agent_lineage.model import Call, Message, Response, Scope, ToolCall, ToolResult, Usage
from agent_lineage.trajectories import trajectory_file_name, write_atomically

SESSION = "0b5e7c1e-4c1d-4f7e-9a51-3f1f0e6f2a10"
SYSTEM = "You are a coding agent. " * 500  # about 12 KB
WINDOWS = (10, 100, 500)


def make_call(n: int) -> Call:
    t = 1_795_690_000.0 + 2 * n
    arguments = '{"command": "' + "grep -rn pattern src/ " * 14 + '"}'
    new = [Message("user", text="Please fix the failing test in the parser module.")] if n == 1 else [
        Message("user", tool_results=[ToolResult(f"toolu_{n - 1:05d}", "line of tool output\n" * 150)])
    ]
    return Call(
        exchange_id=f"exchange-{n:05d}",
        api="anthropic-messages",
        path="/v1/messages?beta=true",
        client="127.0.0.1 claude-cli/2.1.197 (external, sdk-cli)",
        headers={"user-agent": "claude-cli/2.1.197 (external, sdk-cli)"},
        t_start=t,
        model="claude-opus-4-8",
        system=SYSTEM,
        status=200,
        response=Response(
            model="claude-opus-4-8",
            output=Message("assistant", text="I will look at the code next. " * 13, tool_calls=[ToolCall(f"toolu_{n:05d}", "Bash", arguments)]),
            usage=Usage(input_tokens=20_000 + 900 * n, output_tokens=120, cache_read_tokens=19_000 + 900 * n, cache_write_tokens=900),
            stop_reason="tool_use",
        ),
        t_first_byte=t + 0.4,
        t_end=t + 1.6,
        new_messages=new,
        scope=Scope(
            session_id=SESSION,
            agent_id=SESSION,
            parent_id=None,
            depth=0,
            turn=1,
            new_turn=n == 1,
            client_name="claude-code",
            evidence={"agent": "harness:header:x-claude-code-session-id", "messages": f"prefix:{SESSION}"},
        ),
    )


def run_once(calls: list[Call], directory: Path) -> tuple[list[tuple[float, float, float]], dict[int, int]]:
    """Per call: seconds in add, render and write; file size after each window's last call."""
    builder = TrajectoryBuilder()
    path = directory / trajectory_file_name(SESSION)
    timings, sizes = [], {}
    for n, call in enumerate(calls, 1):
        t0 = time.perf_counter()
        builder.add(call)
        t1 = time.perf_counter()
        data = builder.render(SESSION)
        t2 = time.perf_counter()
        write_atomically(path, data)
        t3 = time.perf_counter()
        timings.append((t1 - t0, t2 - t1, t3 - t2))
        if n in WINDOWS:
            sizes[n] = len(data)
    return timings, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    calls = [make_call(n) for n in range(1, args.calls + 1)]
    runs = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.runs):
            runs.append(run_once(calls, Path(directory)))
    print(f"{args.calls}-call session, {args.runs} runs; ms per call over calls n-9..n of every run\n")
    print(f"{'call n':>7} {'file KB':>8} {'add':>7} {'render':>7} {'write':>7} {'total':>7} {'p95':>7}")
    for window in (w for w in WINDOWS if w <= args.calls):
        rows = [timings[i] for timings, _ in runs for i in range(window - 10, window)]
        totals = sorted(sum(row) for row in rows)
        mean = [statistics.fmean(row[k] for row in rows) * 1000 for k in range(3)]
        p95 = totals[int(0.95 * (len(totals) - 1))] * 1000
        size = runs[0][1][window] / 1024
        print(f"{window:>7} {size:>8.0f} {mean[0]:>7.3f} {mean[1]:>7.3f} {mean[2]:>7.3f} {sum(mean):>7.3f} {p95:>7.3f}")


if __name__ == "__main__":
    main()
