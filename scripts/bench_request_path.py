#!/usr/bin/env python3
"""CPU the addon spends on one LLM request, in process, against orjson's parse of its body.

Feeds a real Claude Code request (about 76 KB, tests/fixtures/real/cc_c_subagent.mitm) through
the Driver as the request hook does, under one session id per round, and times separately:

- the request hook (what the request waits for before it is forwarded): with harness headers
  that decide its lineage, only the headers are read here;
- the catch-up (the body read and scoped right after the request is forwarded);
- orjson.loads of the same body, in the same rounds (the yardstick).

Rounds alternate with the yardstick, so the machine's load hits both alike; medians over rounds
and their range are printed.

    scripts/bench_request_path.py [--rounds 15] [--requests 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "addons"))

import orjson  # noqa: E402

from agent_lineage.driver import Driver  # noqa: E402
from agent_lineage.offline import read_flows  # noqa: E402
from agent_lineage.pipeline import Pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=40, help="requests per round")
    args = parser.parse_args()
    posts = [f for f in read_flows(ROOT / "tests/fixtures/real/cc_c_subagent.mitm") if f.request.method == "POST"]
    template = max(posts, key=lambda f: len(f.request.raw_content or b""))
    driver = Driver(Pipeline())
    hook, catch_up, parse = [], [], []
    for _ in range(args.rounds):
        flows = [template.copy() for _ in range(args.requests)]
        for flow in flows:
            flow.id = str(uuid.uuid4())
        hook_s = catch_up_s = 0.0
        for flow in flows:
            t0 = time.perf_counter()
            driver.request(flow)
            t1 = time.perf_counter()
            driver.catch_up()
            t2 = time.perf_counter()
            hook_s += t1 - t0
            catch_up_s += t2 - t1
            driver.in_flight.pop(flow.id, None)  # the response half is not measured here
        hook.append(hook_s / args.requests)
        catch_up.append(catch_up_s / args.requests)
        t0 = time.perf_counter()
        for flow in flows:
            orjson.loads(flow.request.raw_content)
        parse.append((time.perf_counter() - t0) / args.requests)

    def row(label: str, values: list[float]) -> None:
        ratios = sorted(v / p for v, p in zip(values, parse))
        print(
            f"{label:34} {statistics.median(values) * 1000:8.3f} ms {statistics.median(ratios):8.2f}x   ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        )

    print(f"{len(template.request.raw_content) / 1024:.0f} KB Claude Code request, {args.rounds} rounds of {args.requests}")
    print(f"{'':34} {'median':>11} {'/ parse':>9}   (range over rounds)")
    row("request hook (before forwarding)", hook)
    row("catch-up (after forwarding)", catch_up)
    row("both", [h + c for h, c in zip(hook, catch_up)])
    print(f"{'orjson.loads of the body':34} {statistics.median(parse) * 1000:8.3f} ms")


if __name__ == "__main__":
    main()
