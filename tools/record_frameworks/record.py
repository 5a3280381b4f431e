"""Record one framework app through `mitmdump -w` and write its flows and ground truth.

    .venv-3.11/bin/python tools/record_frameworks/record.py autogen [--python VENV_PYTHON] [--out DIR]

Runs, on 127.0.0.1 only: mitmdump in reverse mode in front of the app's scripted upstream, and
the app (`app_<framework>.py`, in the framework's own venv) pointed at mitmdump. The app writes
one truth row per request it sent (truth.py); here the rows are paired with the recorded flows
by the `x-request-id` of the upstream's answer (and checked by the request body's SHA-256:
byte-identical requests pair exactly too), the flows are sorted
by `request.timestamp_start` as in tests/fixtures/real, and `<framework>.mitm` plus
`<framework>.truth.json` are written to tests/fixtures/frameworks/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.io import FlowReader, FlowWriter

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tools"))
from lineage_tools.corpus import summarize  # noqa: E402

VENVS = REPO.parent / "frameworks-venvs"
# recording -> the venv it runs in (its app is app_<recording>.py)
RECORDINGS = {
    "autogen": "autogen",
    "llamaindex": "llamaindex",
    "smolagents": "smolagents",
    "agno": "agno",
    "agno_responses": "agno",
    "crewai": "crewai",
}
REDACTED_PATH = "/home/user/project"
# Fields and headers that could tell one session from another on the wire.
ID_FIELDS = ("user", "metadata", "prompt_cache_key", "previous_response_id", "conversation", "safety_identifier", "store", "service_tier")
PLAIN_HEADERS = {"host", "accept", "accept-encoding", "connection", "content-length", "content-type", "authorization", "user-agent"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def run_app(framework: str, python: str, work: Path, timeout: float) -> tuple[Path, dict[str, Any]]:
    """mitmdump in front of the app's upstream; the app's own run. Returns the flows file and the rows."""
    upstream, proxy = free_port(), free_port()
    flows_file, rows_file = work / "raw.mitm", work / "rows.json"
    mitmdump = Path(sys.executable).with_name("mitmdump")
    dump = subprocess.Popen(
        [
            str(mitmdump),
            "-q",
            "--listen-host",
            "127.0.0.1",
            "-p",
            str(proxy),
            "--mode",
            f"reverse:http://127.0.0.1:{upstream}",
            "-w",
            str(flows_file),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_listening(proxy, 30)
        env = {
            **os.environ,
            "PYTHONPATH": str(HERE),
            "OPENAI_API_KEY": "sk-scripted-not-a-key",
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
        }
        app = [
            python,
            str(HERE / f"app_{framework}.py"),
            "--base-url",
            f"http://127.0.0.1:{proxy}/v1",
            "--upstream-port",
            str(upstream),
            "--rows",
            str(rows_file),
        ]
        subprocess.run(app, check=True, timeout=timeout, env=env, cwd=work)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=30)
    return flows_file, json.loads(rows_file.read_text())


def body_hash(flow: http.HTTPFlow) -> str:
    return hashlib.sha256(flow.request.raw_content or b"").hexdigest()


def match(flows: list[http.HTTPFlow], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The truth row of each flow, paired by the response's `x-request-id`; fails unless they pair
    one to one, each row's body hash is its flow's, and every request had a truth scope."""
    by_id = {row["request_id"]: row for row in rows}
    if len(by_id) != len(rows) or None in by_id:
        raise SystemExit("some requests got no x-request-id: not answered by the scripted upstream (a request to another host?)")
    matched = []
    for flow in flows:
        row = by_id.pop(flow.response.headers.get("x-request-id") if flow.response else None, None)
        if row is None or row["sha256"] != body_hash(flow):
            raise SystemExit(f"no truth row for flow {flow.request.method} {flow.request.path} at {flow.request.timestamp_start}")
        matched.append(row)
    if by_id:
        raise SystemExit(f"{len(by_id)} truth rows never reached the proxy, e.g. {next(iter(by_id.values()))}")
    untagged = [r for r in matched if r["kind"] is None]
    if untagged:
        raise SystemExit(f"{len(untagged)} requests were sent outside any truth scope, e.g. {untagged[0]['path']}")
    return matched


def labels(flows: list[http.HTTPFlow], rows: list[dict[str, Any]], client: str) -> list[dict[str, Any]]:
    seen_agents: set[tuple[str, str]] = set()
    opened_turns: set[tuple[str, int]] = set()
    out = []
    for index, (flow, row) in enumerate(zip(flows, rows)):
        agent_flow = row["kind"] == "agent"
        key = (row["root_session_id"], row["agent_id"])
        first = agent_flow and key not in seen_agents
        seen_agents.add(key)
        turn_key = (row["root_session_id"], row["turn_index"])
        new_turn = agent_flow and row["parent_agent_id"] is None and turn_key not in opened_turns
        if new_turn:
            opened_turns.add(turn_key)
        out.append(
            {
                "index": index,
                "method": flow.request.method,
                "path": flow.request.path,
                "client": client,
                "kind": row["kind"],
                "side_type": row["side_type"],
                "root_session_id": row["root_session_id"],
                "agent_id": row["agent_id"] if agent_flow else None,
                "parent_agent_id": row["parent_agent_id"] if agent_flow else None,
                "agent_name": row["agent_name"] if agent_flow else None,
                "invocation": 1,
                "turn_index": row["turn_index"],
                "starts_new_turn": new_turn,
                "first_request_of_agent": first,
                "stream": bool(_body(flow).get("stream")),
            }
        )
    return out


def _body(flow: http.HTTPFlow) -> dict[str, Any]:
    try:
        body = json.loads(flow.request.raw_content or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def wire_identifiers(flows: list[http.HTTPFlow]) -> dict[str, Any]:
    """What the framework sends that could identify a session: id fields, unusual headers, user agents."""
    fields: Counter = Counter()
    headers: Counter = Counter()
    agents: Counter = Counter()
    values: dict[str, set[str]] = {}
    for flow in flows:
        for name, value in flow.request.headers.items():
            values.setdefault(name.lower(), set()).add(value)
        body = _body(flow)
        fields.update(k for k in ID_FIELDS if k in body)
        names = {n.lower() for n in flow.request.headers}
        headers.update(n for n in names - PLAIN_HEADERS if not n.startswith("x-stainless-"))
        if any(n.startswith("x-stainless-") for n in names):
            headers["x-stainless-*"] += 1
        agents[flow.request.headers.get("user-agent", "")] += 1
    varying = sorted(name for name, seen in values.items() if len(seen) > 1 and name != "content-length")
    return {
        "body_fields": dict(fields),
        "headers": dict(headers),
        "headers_that_vary": varying,
        "user_agents": dict(agents),
        "body_keys": sorted({k for f in flows for k in _body(f)}),
    }


def redact(flow: http.HTTPFlow, paths: list[str]) -> None:
    for message in (flow.request, flow.response):
        if message is None or not message.raw_content:
            continue
        content = message.raw_content
        for path in paths:
            content = content.replace(path.encode(), REDACTED_PATH.encode())
        message.raw_content = content


def table(out: Path) -> str:
    """The fixtures README's table, from the truth files in `out`."""
    lines = [
        "| recording | framework and version | flows | LLM calls | side | sessions | agents | subagents | turns | streamed | on the wire that could identify a session |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("*.truth.json")):
        truth = json.loads(path.read_text())
        s, wire = truth["summary"], truth["wire"]
        versions = ", ".join(f"{name} {v}" for name, v in truth["framework"].items())
        streamed = sum(f["stream"] for f in truth["flows"])
        ids = [f"`{k}`" for k in wire["body_fields"]] + [f"`{h}`" for h in wire["headers"]]
        ids += [f"varying `{h}`" for h in wire["headers_that_vary"]] + [f"user agent `{ua}`" for ua in wire["user_agents"]]
        lines.append(
            f"| {truth['recording']} | {versions} | {s['flows']} | {s['llm_calls']} | {s['side_requests']} | {s['sessions']} | {s['agents']} | {s['subagents']} | {s['turns']} | {streamed} | {', '.join(ids)} |"  # noqa: E501
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("framework", choices=[*RECORDINGS, "table"], help="the app to record, or `table`: print the fixtures README table")
    parser.add_argument("--python", help="the framework venv's python (default: ../frameworks-venvs/<framework>/bin/python)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "frameworks")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    if args.framework == "table":
        print(table(args.out))
        return
    python = args.python or str(VENVS / RECORDINGS[args.framework] / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix=f"record-{args.framework}-") as tmp:
        flows_file, recorded = run_app(args.framework, python, Path(tmp), args.timeout)
        with open(flows_file, "rb") as f:
            flows = sorted(
                (fl for fl in FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)), key=lambda fl: fl.request.timestamp_start
            )
        rows = match(flows, recorded["rows"])
        for flow in flows:
            redact(flow, [tmp, str(REPO), str(Path.home())])
    flow_labels = labels(flows, rows, recorded["client"])
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.framework
    with open(args.out / f"{name}.mitm", "wb") as f:
        writer = FlowWriter(f)
        for flow in flows:
            writer.add(flow)
    truth = {
        "file": f"{name}.mitm",
        "recording": name,
        "client": recorded["client"],
        "framework": recorded["framework"],
        "flow_order": "sorted by request.timestamp_start",
        "app": recorded["app"],
        "prompts": recorded["prompts"],
        "summary": summarize(flow_labels),
        "wire": wire_identifiers(flows),
        "checks": [],
        "flows": flow_labels,
    }
    (args.out / f"{name}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(json.dumps({"file": truth["file"], "framework": truth["framework"], **truth["summary"]}))


if __name__ == "__main__":
    main()
