"""No secret on disk: every byte the project writes — trajectories, the calls log, flows saved with
`-w`, mitmdump's log at its quietest and its most verbose — is scanned for the test's keys, sent
in headers (Authorization, x-api-key, x-goog-api-key, cookies), in URL queries (`?key=`), and pasted
into a prompt. Header and URL keys must appear nowhere. A key pasted into a prompt is content: it
is in the flows the user saved and, by default, in trajectories; `lineage_mask_keys` masks such
well-known key patterns in trajectories and the calls log."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from agent_lineage.cli import main as cli
from conftest import Mitmdump
from faulty_upstream import FaultyUpstream

pytestmark = pytest.mark.e2e

HEADER_KEYS = {
    "authorization": "Bearer sk-proj-HEADERKEY0123456789abcdefABCDEF",
    "x-api-key": "sk-ant-api03-XAPIKEY0123456789abcdefABCDEF",
    "x-goog-api-key": "AIzaGOOGHEADER0123456789abcdefABCDEFGHIJ",
    "cookie": "session=COOKIEKEY0123456789abcdef",
}
URL_KEY = "AIzaURLQUERY0123456789abcdefABCDEFGHIJK"
PROMPT_KEYS = [
    "sk-proj-PROMPTKEY0123456789abcdefABCDEF",
    "AKIAPROMPT0123456789",
    "ghp_PROMPT0123456789abcdefABCDEFGHIJKLMN",
    "xoxb-PROMPT-0123456789-abcdef",
]
NEVER = [value.split(" ")[-1].split("=")[-1] for value in HEADER_KEYS.values()] + [URL_KEY]


def run_session(tmp_path: Path, verbosity: tuple[str, int], mask: bool) -> dict[str, bytes]:
    """One proxy run with every output on; what it wrote, by file."""
    with FaultyUpstream() as upstream:
        options = [
            "--set", f"lineage_dir={tmp_path / 'traces'}",
            "--set", f"lineage_calls_log={tmp_path / 'calls.jsonl'}",
            "--set", f"lineage_mask_keys={'true' if mask else 'false'}",
            "-w", str(tmp_path / "flows.mitm"),
        ]  # fmt: skip
        proxy = Mitmdump(tmp_path, f"reverse:{upstream.url}", *options, verbosity=verbosity)
        try:
            prompt = "my keys, please keep them safe: " + " ".join(PROMPT_KEYS)
            body = orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": prompt}]})
            with httpx.Client(base_url=proxy.url, timeout=30) as client:
                for path in (
                    f"/v1/chat/completions?key={URL_KEY}&tag=a",
                    f"/v1/chat/completions?fault=reset&key={URL_KEY}&tag=b",
                    f"/v1/chat/completions?fault=status-500&key={URL_KEY}",
                ):
                    try:
                        client.post(path, content=body, headers={"content-type": "application/json", **HEADER_KEYS}).read()
                    except httpx.HTTPError:
                        pass
                client.post("/v1/chat/completions", content=b"{not json", headers=HEADER_KEYS, params={"key": URL_KEY}).read()
        finally:
            proxy.stop()
    assert cli(["view", str(tmp_path / "traces"), "-o", str(tmp_path / "viewer.html")]) == 0  # the viewer's page is written too
    return {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "mitmproxy-conf" not in p.parts}


@pytest.mark.parametrize(
    "verbosity",
    [("info", 0), ("info", 1), ("debug", 4)],
    ids=["no-flows", "default", "most-verbose"],
)
def test_header_and_url_keys_are_written_nowhere(tmp_path, no_proxy_env, verbosity):
    written = run_session(tmp_path, verbosity, mask=False)
    assert {"calls.jsonl", "flows.mitm", "viewer.html"} <= set(written) and any(name.startswith("traces/") for name in written)
    assert any(name.startswith("mitmdump-") for name in written)
    leaks = [(name, key) for name, data in written.items() for key in NEVER if key.encode() in data]
    assert leaks == []


def test_prompt_keys_are_content_unless_masked(tmp_path, no_proxy_env):
    (tmp_path / "plain").mkdir()
    (tmp_path / "masked").mkdir()
    plain = run_session(tmp_path / "plain", ("info", 0), mask=False)
    masked = run_session(tmp_path / "masked", ("info", 0), mask=True)
    trajectories = lambda written: b"".join(data for name, data in written.items() if name.startswith("traces/"))  # noqa: E731
    assert all(key.encode() in trajectories(plain) for key in PROMPT_KEYS)
    for key in PROMPT_KEYS:
        assert key.encode() not in trajectories(masked) and key.encode() not in masked["calls.jsonl"]
        assert key.encode() in masked["flows.mitm"]  # a saved flow is the traffic as it was
    assert b"<masked:" in trajectories(masked)
