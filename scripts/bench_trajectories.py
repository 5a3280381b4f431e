#!/usr/bin/env python3
"""What one call costs the trajectory writer, early and late in a long session.

A long session of one agent, a tool call on every call, message sizes like a coding agent's
(a 12 KB system prompt, 3 KB tool results, 400-character answers, 300-character arguments).
Printed at calls 10, 100, 1,000 and 5,000: the cost of `TrajectoryBuilder.add` per call, and of
one rewrite of the session's file (rendering from the cached step fragments, then the atomic
write) with the bytes it writes — what the writer thread does once per write interval:

    scripts/bench_trajectories.py [--calls 5000] [--runs 3]
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
from agent_lineage.trajectories import REWRITE_BYTES_PER_SECOND, trajectory_file_name, write_atomically

SESSION = "0b5e7c1e-4c1d-4f7e-9a51-3f1f0e6f2a10"
SYSTEM = "You are a coding agent. " * 500  # about 12 KB
WINDOWS = (10, 100, 1000, 5000)


def make_call(n: int) -> Call:
    t = 1_795_690_000.0 + 2 * n
    arguments = '{"command": "' + "grep -rn pattern src/ " * 14 + '"}'
    new = (
        [Message("user", text="Please fix the failing test in the parser module.")]
        if n == 1
        else [Message("user", tool_results=[ToolResult(f"toolu_{n - 1:05d}", "line of tool output\n" * 150)])]
    )
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
            output=Message(
                "assistant", text="I will look at the code next. " * 13, tool_calls=[ToolCall(f"toolu_{n:05d}", "Bash", arguments)]
            ),
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


def run_once(calls: list[Call], directory: Path, windows: tuple[int, ...]) -> dict[int, tuple[float, float, float, int]]:
    """At each window's last call: seconds per call in `add` (mean over its last 10 calls), one
    render (after a render of the call before, as in the live writer) and one atomic write of
    the whole file at that point, and the file's size."""
    builder = TrajectoryBuilder()
    path = directory / trajectory_file_name(SESSION)
    results: dict[int, tuple[float, float, float, int]] = {}
    add_seconds: list[float] = []
    for n, call in enumerate(calls, 1):
        if n in windows:
            builder.render(SESSION)  # as the writer has: every earlier step already serialised
        t0 = time.perf_counter()
        builder.add(call)
        add_seconds.append(time.perf_counter() - t0)
        if n in windows:
            t1 = time.perf_counter()
            data = builder.render(SESSION)
            t2 = time.perf_counter()
            write_atomically(path, data)
            t3 = time.perf_counter()
            results[n] = (statistics.fmean(add_seconds[-10:]), t2 - t1, t3 - t2, len(data))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    windows = tuple(w for w in WINDOWS if w <= args.calls)
    calls = [make_call(n) for n in range(1, args.calls + 1)]
    runs = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.runs):
            runs.append(run_once(calls, Path(directory), windows))
    print(f"{args.calls}-call session, {args.runs} runs, medians; one rewrite = render + atomic write of the whole file\n")
    print(f"{'':>25} {'one rewrite':>30}   {'busy session, interval 1 s':>30}")
    print(
        f"{'call n':>7} {'file MB':>8} {'add ms':>8} {'render ms':>10} {'write ms':>9} {'total ms':>9}   {'rewrite every':>13} {'MB/s':>6} {'writer ms/s':>11}"  # noqa: E501
    )
    for n in windows:
        add, render, write, size = (statistics.median(run[n][k] for run in runs) for k in range(4))
        every = max(1.0, size / REWRITE_BYTES_PER_SECOND)  # the live writer's interval for this file
        print(
            f"{n:>7} {size / 2**20:>8.2f} {add * 1000:>8.3f} {render * 1000:>10.2f} {write * 1000:>9.2f} {(render + write) * 1000:>9.2f}"
            f"   {every:>11.1f} s {size / 2**20 / every:>6.2f} {(render + write) * 1000 / every:>11.2f}"
        )
    print(
        "\nThe live writer rewrites a changed session's file at most once per lineage_write_interval, and"
        f"\na big one once per size / {REWRITE_BYTES_PER_SECOND / 2**20:g} MB/s."
    )


if __name__ == "__main__":
    main()
