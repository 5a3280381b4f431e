"""`agent-lineage view`: the page it writes, and that page in a real headless Chromium.

The browser tests (marker `browser`) drive Debian's Chromium (/usr/bin/chromium; scripts/test
installs it with apt) through Playwright for Python, never a browser Playwright downloads. Every
page is opened from file://, every request it makes is recorded and any that is not file:// is
aborted and fails the test, and so does any console error or uncaught exception.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from typing import Any

import orjson
import pytest

from agent_lineage import cli, kv, viewer
from agent_lineage.validate import validate_trajectory

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHROMIUM = Path("/usr/bin/chromium")
# What lets Chromium start in a sandboxed container with no network (and never try one).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RECORDINGS = sorted(FIXTURES.glob("agents/*/traces/trajectory-*.json"))
SAVED_FLOWS = sorted([*FIXTURES.glob("real/*.mitm"), *FIXTURES.glob("idless/*.mitm")])
NESTED = next(FIXTURES.glob("agents/claude_nested_reverse/traces/trajectory-*.json"))
AGENTS_AS_TOOLS = FIXTURES / "idless" / "oa_b_agents_as_tools.mitm"  # id-less: a main agent and sibling subagents
TOOL_LOOP = next(FIXTURES.glob("agents/codex_tool_loop_reverse/traces/trajectory-*.json"))
HOSTILE = '</script><script>window.pwned = 1</script><img src="http://127.0.0.1:9/x.png" onerror="window.pwned = 2"><!--'


def trajectories(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield document
    for sub in document.get("subagent_trajectories") or []:
        yield from trajectories(sub)


def view(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["view", *args])
    out, err = capsys.readouterr()
    return code, out, err


def embedded(page_html: str, element_id: str) -> Any:
    match = re.search(f'<script type="application/json" id="{element_id}">(.*?)</script>', page_html, re.S)
    assert match, element_id
    return json.loads(match.group(1))


def foreign_trajectory(message: str = "Fix the failing test", timestamps: bool = True) -> dict[str, Any]:
    """Valid ATIF from another producer: no agent-lineage extra, two turns, a tool call."""

    def at(second: int) -> dict[str, str]:
        return {"timestamp": f"2026-01-02T03:04:{second:02d}Z"} if timestamps else {}

    return {
        "schema_version": "ATIF-v1.7",
        "session_id": "other-producer-session",
        "trajectory_id": "other-producer-session",
        "agent": {"name": "some-agent", "version": "2.0", "model_name": "m-1"},
        "steps": [
            {"step_id": 1, **at(0), "source": "user", "message": message},
            {
                "step_id": 2,
                **at(1),
                "source": "agent",
                "message": "Running the tests.",
                "tool_calls": [{"tool_call_id": "c1", "function_name": "run_tests", "arguments": {"path": "tests/"}}],
                "observation": {"results": [{"source_call_id": "c1", "content": "1 failed, 9 passed"}]},
                "metrics": {"prompt_tokens": 1200, "completion_tokens": 40, "cached_tokens": 600},
            },
            {"step_id": 3, **at(5), "source": "user", "message": "Now commit it"},
            {"step_id": 4, **at(6), "source": "agent", "message": "Committed."},
        ],
    }


# -- the page, without a browser ------------------------------------------------------------------


def test_one_file_gives_a_page_beside_it_with_the_trajectory_embedded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "trajectory-x.json"
    shutil.copy(NESTED, source)
    code, out, _ = view(capsys, str(source))
    page = tmp_path / "trajectory-x.html"
    assert (code, out.strip()) == (0, str(page))
    html = page.read_text()
    assert embedded(html, "session-0") == orjson.loads(NESTED.read_bytes())
    [row] = embedded(html, "index")
    assert (row["file"], row["agents"], row["llm_calls"], row["turns"], row["side_requests"]) == ("trajectory-x.json", 3, 6, 1, 1)
    # The session ends when its last response does: the last call's start plus its latency.
    last = orjson.loads(NESTED.read_bytes())["steps"][-1]
    assert row["end"] == pytest.approx(viewer._epoch(last["timestamp"]) + last["metrics"]["extra"]["latency_ms"] / 1000)


def test_a_directory_gives_an_index_of_its_sessions_and_skips_what_is_not_a_trajectory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (NESTED, TOOL_LOOP):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "notes.json").write_text('{"not": "a trajectory"}')
    (tmp_path / "broken.json").write_text("{")
    code, out, err = view(capsys, str(tmp_path))
    assert (code, out.strip()) == (0, str(tmp_path / "index.html"))
    assert "notes.json: not an ATIF trajectory" in err and "broken.json: not JSON" in err
    index = embedded((tmp_path / "index.html").read_text(), "index")
    assert sorted(row["file"] for row in index) == sorted([NESTED.name, TOOL_LOOP.name])


def test_open_hands_the_page_to_the_default_browser(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    code, _, _ = view(capsys, str(NESTED), "-o", str(tmp_path / "page.html"), "--open")
    assert code == 0 and opened == [(tmp_path / "page.html").as_uri()]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.json"], "missing.json: no such file or directory"),
        ([str(NESTED), str(TOOL_LOOP)], "several inputs: name the page with -o FILE.html"),
    ],
)
def test_view_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = view(capsys, *args)
    assert code == 2 and message in err


def test_embedded_text_cannot_end_its_script_element() -> None:
    document = foreign_trajectory(message=HOSTILE)
    document["trajectory_id"] = HOSTILE  # also a key of the embedded KV figures
    page = viewer.render([viewer.Session(Path("t.json"), document)], title=HOSTILE)
    # Only the page's own four script elements close; the data reads back unchanged.
    assert page.count("</script>") == 4 and "<!--" not in page and "<script>window.pwned" not in page
    assert embedded(page, "session-0") == document
    assert list(embedded(page, "reuse-0")["steps"]) == [HOSTILE]


def test_each_llm_step_embeds_the_reuse_kv_computes_for_its_request(converted) -> None:
    [path] = converted[AGENTS_AS_TOOLS.name]
    document = orjson.loads(path.read_bytes())
    # The same session twice, the copy under other ids: every prompt of the copy was seen before.
    copy = orjson.loads(orjson.dumps(document).replace(document["session_id"].encode(), b"copy-session"))
    page = viewer.render([viewer.Session(path, document), viewer.Session(Path("copy.json"), copy)], title="t")
    first_session = kv.from_trajectory(document, "0")
    requests = first_session + kv.from_trajectory(copy, "1")
    shared = kv.reuse(requests)
    cached = kv.simulate(requests, "lineage", kv.DEFAULT_WORKERS, kv.DEFAULT_CACHE_TOKENS).per_request
    figures = [embedded(page, "reuse-0"), embedded(page, "reuse-1")]
    assert sum(len(steps) for f in figures for steps in f["steps"].values()) == len(requests)
    for n, (request, reuse, served) in enumerate(zip(requests, shared, cached)):
        step_id = request.label.rsplit(":", 1)[1]
        assert figures[0 if n < len(first_session) else 1]["steps"][request.agent][step_id] == {
            "prompt_tokens": request.tokens,
            "same_agent": reuse.same_agent,
            "parent": reuse.parent,
            "sibling": reuse.sibling,
            "other_session": reuse.other_session,
            "cached_lineage": served,
        }
    first = [f for steps in figures[0]["steps"].values() for f in steps.values()]
    again = [f for steps in figures[1]["steps"].values() for f in steps.values()]
    assert any(f["sibling"] for f in first)  # the recording's subagents share a prefix with each other
    assert not any(f["other_session"] for f in first)
    assert all(f["other_session"] == f["prompt_tokens"] for f in again)


def test_the_page_names_nothing_outside_itself() -> None:
    page = viewer.render([viewer.Session(NESTED, orjson.loads(NESTED.read_bytes()))], title="t")
    without_data = re.sub(r'<script type="application/json".*?</script>', "", page, flags=re.S)
    # Links only to the page's own sessions (`#session-N`); no source, stylesheet or URL to load.
    assert not re.search(r"""src\s*=|href\s*=(?!\s*["']#)|url\(|@import|https?://|fetch\(|XMLHttpRequest|WebSocket""", without_data)
    assert "default-src 'none'" in page


# -- the page in Chromium -----------------------------------------------------------------------


class Page:
    """A Playwright page that records every request and every console error."""

    def __init__(self, context) -> None:
        self.page = context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://") else route.abort())

    def open(self, path: Path) -> Any:
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector(".session-page, .index-page")
        return self.page

    def check_clean(self) -> None:
        assert self.errors == []
        assert [url for url in self.requests if not url.startswith("file://")] == []


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian's chromium package; scripts/test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def browser_page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = Page(context)
    yield page
    context.close()


def page_of(documents: list[tuple[str, dict[str, Any]]], out: Path) -> Path:
    out.write_text(viewer.render([viewer.Session(Path(name), document) for name, document in documents], title="test"), encoding="utf-8")
    return out


def check_session_drawn(page: Any, document: dict[str, Any]) -> None:
    """One lane per agent with one bar per LLM call, and a section per turn."""
    for trajectory in trajectories(document):
        calls = [s for s in trajectory["steps"] if s["source"] == "agent"]
        lane = page.locator(f'.lane[data-agent-id="{trajectory["trajectory_id"]}"]').first
        assert lane.locator(":scope > .lane-row .call").count() == len(calls), trajectory["trajectory_id"]
    turns = ((document.get("extra") or {}).get("agent_lineage") or {}).get("turns")
    if turns:
        assert page.locator(".turn-heading").count() == len(turns)
    assert page.locator(".step-row").count() > 0


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The trajectories of each saved flow file of tests/fixtures, converted as a user would."""
    files = {}
    for flows in SAVED_FLOWS:
        out = tmp_path_factory.mktemp(flows.stem)
        assert cli.main(["convert", str(flows), "-o", str(out)]) == 0
        files[flows.name] = sorted(out.glob("*.json"))
    return files


@pytest.mark.browser
@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.parent.parent.name for p in RECORDINGS])
def test_the_real_cli_recordings_render(recording: Path, browser_page: Page, tmp_path: Path, capsys) -> None:
    assert view(capsys, str(recording), "-o", str(tmp_path / "page.html"))[0] == 0
    page = browser_page.open(tmp_path / "page.html")
    check_session_drawn(page, orjson.loads(recording.read_bytes()))
    browser_page.check_clean()


@pytest.mark.browser
@pytest.mark.parametrize("flows", SAVED_FLOWS, ids=[p.name for p in SAVED_FLOWS])
def test_the_converted_fixtures_render_from_their_index(flows: Path, converted, browser_page: Page, tmp_path: Path, capsys) -> None:
    files = converted[flows.name]
    assert files
    for file in files:
        shutil.copy(file, tmp_path / file.name)
    assert view(capsys, str(tmp_path))[0] == 0
    page = browser_page.open(tmp_path / "index.html")
    index = embedded((tmp_path / "index.html").read_text(), "index")
    for number, row in enumerate(index):
        if len(index) > 1:
            page.locator(f'.session-row[data-session="{number}"]').click()
            page.wait_for_selector(".session-page")
        check_session_drawn(page, orjson.loads((tmp_path / row["file"]).read_bytes()))
        if len(index) > 1:
            page.locator(".back").click()
            page.wait_for_selector(".index-page")
    browser_page.check_clean()


@pytest.mark.browser
def test_clicking_a_step_shows_its_tool_calls_and_the_observations_that_answered_them(browser_page: Page, tmp_path: Path) -> None:
    document = orjson.loads(TOOL_LOOP.read_bytes())
    step = next(s for s in document["steps"] if s.get("tool_calls") and s.get("observation"))
    [call] = step["tool_calls"]
    [result] = step["observation"]["results"]
    page = browser_page.open(page_of([(TOOL_LOOP.name, document)], tmp_path / "page.html"))
    row = page.locator(f'.step-row[data-step-id="{step["step_id"]}"]')
    assert row.locator(".tool-call").count() == 0  # details are built on expand
    row.locator(".row-head").click()
    card = row.locator(".tool-call")
    assert card.locator(".tool-name").inner_text() == call["function_name"]
    assert card.locator(".tool-id").inner_text() == call["tool_call_id"]
    assert json.loads(card.locator(".arguments pre").inner_text()) == call["arguments"]
    assert card.locator(".observation pre").inner_text() == result["content"]
    evidence = row.locator("section", has=page.locator("h4", has_text="Evidence of this call's scope"))
    assert evidence.locator("tr").all_inner_texts() == [f"{k}\t{v}" for k, v in step["extra"]["agent_lineage"]["evidence"].items()]
    row.locator(".row-head").click()  # closes again
    assert row.locator(".tool-call").count() == 0
    # A bar on the timeline opens the same step.
    bars = page.locator(f'.lane[data-agent-id="{document["trajectory_id"]}"] > .lane-row .call')
    agent_steps = [s for s in document["steps"] if s["source"] == "agent"]
    bars.nth(agent_steps.index(step)).click()
    assert row.locator(".tool-call .tool-name").inner_text() == call["function_name"]
    browser_page.check_clean()


@pytest.mark.browser
def test_a_subagents_step_shows_its_prefix_reuse(converted, browser_page: Page, tmp_path: Path) -> None:
    [path] = converted[AGENTS_AS_TOOLS.name]
    document = orjson.loads(path.read_bytes())
    page_file = page_of([(path.name, document)], tmp_path / "page.html")
    figures = embedded(page_file.read_text(encoding="utf-8"), "reuse-0")["steps"]
    # A subagent's call that shares a prefix with a sibling's.
    agent, step_id, kv_step = next(
        (a, s, f) for a, steps in figures.items() if a != document["trajectory_id"] for s, f in steps.items() if f["sibling"]
    )

    def percent(tokens: int) -> str:  # as the page rounds (Math.round: halves up)
        return f"{math.floor(100 * tokens / kv_step['prompt_tokens'] + 0.5)}%"

    def shown(tokens: int) -> str:
        return f"{tokens:,} · {percent(tokens)}"

    page = browser_page.open(page_file)
    row = page.locator(f'.step-row[data-agent-id="{agent}"][data-step-id="{step_id}"]')
    row.scroll_into_view_if_needed()
    assert row.locator(".reuse-chip").inner_text() == f"KV {percent(kv_step['cached_lineage'])}"
    row.locator(".row-head").click()
    box = row.locator("section", has=page.locator("h4", has_text="Prefix reuse (KV)"))
    values = dict(line.split("\t") for line in box.locator("tr").all_inner_texts())
    assert values == {
        "prompt tokens": f"{kv_step['prompt_tokens']:,}",
        "shared with an earlier call of this agent": shown(kv_step["same_agent"]),
        "… of its parent": shown(kv_step["parent"]),
        "… of a sibling subagent": shown(kv_step["sibling"]),
        "… of another session": shown(kv_step["other_session"]),
        "cached when routed by lineage": shown(kv_step["cached_lineage"]),
    }
    assert "4 workers, an LRU prefix cache of 2,000,000 tokens each" in box.inner_text()
    # The user's and system's steps make no request: no KV figures.
    assert page.locator(".step-row.source-user .reuse-chip").count() == 0
    browser_page.check_clean()


@pytest.mark.browser
def test_a_subagents_lane_sits_under_its_parents(browser_page: Page, tmp_path: Path) -> None:
    document = orjson.loads(NESTED.read_bytes())
    agents = document["extra"]["agent_lineage"]["agents"]
    page = browser_page.open(page_of([(NESTED.name, document)], tmp_path / "page.html"))
    subagents = [(agent_id, info["parent_id"]) for agent_id, info in agents.items() if "parent_id" in info]
    assert len(subagents) == 2
    for agent_id, parent_id in subagents:
        enclosing = page.locator(f'.lane[data-agent-id="{agent_id}"]').evaluate(
            "lane => lane.parentElement.closest('.lane').dataset.agentId"
        )
        assert enclosing == parent_id
        child = page.locator(f'.lane[data-agent-id="{agent_id}"] > .lane-row').bounding_box()
        parent = page.locator(f'.lane[data-agent-id="{parent_id}"] > .lane-row').bounding_box()
        child_name = page.locator(f'.lane[data-agent-id="{agent_id}"] > .lane-row .lane-name').bounding_box()
        parent_name = page.locator(f'.lane[data-agent-id="{parent_id}"] > .lane-row .lane-name').bounding_box()
        assert child["y"] >= parent["y"] + parent["height"] - 1  # below it
        assert child_name["x"] > parent_name["x"]  # and indented
    # The delegating tool call's result links to the subagent's first step.
    root_step = next(s for s in document["steps"] if s.get("tool_calls"))
    page.locator(f'.lane[data-agent-id="{document["trajectory_id"]}"] > .lane-row .call').first.click()
    page.locator(f'.step-row[data-step-id="{root_step["step_id"]}"] .subagent-link').click()
    middle = subagents[0][0]
    assert page.locator(f'.step-row.open[data-agent-id="{middle}"]').count() == 1
    browser_page.check_clean()


@pytest.mark.browser
def test_the_step_list_filters_by_agent_text_and_errors(browser_page: Page, tmp_path: Path) -> None:
    document = orjson.loads(NESTED.read_bytes())
    inner = document["subagent_trajectories"][0]["subagent_trajectories"][0]
    bash = next(s for s in inner["steps"] if s.get("tool_calls"))
    page = browser_page.open(page_of([(NESTED.name, document)], tmp_path / "page.html"))
    total = sum(len(t["steps"]) for t in trajectories(document))
    rows = page.locator(".step-row")
    assert rows.count() == total
    page.locator(f'.lane[data-agent-id="{inner["trajectory_id"]}"] > .lane-row .lane-label').click()
    assert rows.count() == len(inner["steps"])
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.agentId)")) == {inner["trajectory_id"]}
    page.locator(f'.lane[data-agent-id="{inner["trajectory_id"]}"] > .lane-row .lane-label').click()  # again: all agents
    assert rows.count() == total
    page.locator(".search").fill(bash["tool_calls"][0]["tool_call_id"])
    page.wait_for_function(f"() => document.querySelectorAll('.step-row').length < {total}")
    assert rows.evaluate_all("rows => rows.map(r => [r.dataset.agentId, r.dataset.stepId])") == [
        [inner["trajectory_id"], str(bash["step_id"])]
    ]
    assert page.locator(".shown-count").inner_text() == f"1 of {total} steps"
    page.locator(".search").fill("")
    page.locator(".errors-only input").check()
    assert rows.count() == 0 and page.locator(".shown-count").inner_text() == f"0 of {total} steps"
    # A bar on the timeline still opens its step: the filter is cleared for it.
    page.locator(f'.lane[data-agent-id="{inner["trajectory_id"]}"] > .lane-row .call').first.click()
    assert page.locator(f'.step-row.open[data-agent-id="{inner["trajectory_id"]}"][data-step-id="{bash["step_id"]}"]').count() == 1
    assert page.locator(".shown-count").inner_text() == f"{total} steps"
    browser_page.check_clean()


@pytest.mark.browser
def test_the_keyboard_moves_through_the_steps(browser_page: Page, tmp_path: Path) -> None:
    document = orjson.loads(TOOL_LOOP.read_bytes())
    page = browser_page.open(page_of([(TOOL_LOOP.name, document)], tmp_path / "page.html"))
    for _ in range(3):
        page.keyboard.press("j")
    selected = page.locator(".step-row.selected")
    assert selected.get_attribute("data-step-id") == "3"
    page.keyboard.press("k")
    assert selected.get_attribute("data-step-id") == "2"
    page.keyboard.press("Enter")
    assert page.locator(".step-row.open").get_attribute("data-step-id") == "2"
    page.keyboard.press("o")
    assert page.locator(".step-row.open").count() == 0
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.className") == "search"
    browser_page.check_clean()


@pytest.mark.browser
def test_text_from_tool_output_is_shown_as_text_never_run(browser_page: Page, tmp_path: Path) -> None:
    document = foreign_trajectory(message=HOSTILE)
    document["steps"][1]["observation"]["results"][0]["content"] = HOSTILE
    document["steps"][1]["tool_calls"][0]["function_name"] = HOSTILE
    document["agent"]["name"] = HOSTILE
    page = browser_page.open(page_of([(HOSTILE, document)], tmp_path / "page.html"))
    page.locator('.step-row[data-step-id="1"] .row-head').click()
    page.locator('.step-row[data-step-id="2"] .row-head').click()
    assert page.locator('.step-row[data-step-id="2"] .observation pre').inner_text() == HOSTILE
    assert page.locator('.step-row[data-step-id="2"] .tool-name').inner_text() == HOSTILE
    assert page.locator(".session-header h1").inner_text().startswith("</script>")
    assert page.evaluate("window.pwned") is None
    assert page.locator("img").count() == 0
    browser_page.check_clean()


@pytest.mark.browser
@pytest.mark.parametrize("timestamps", [True, False], ids=["timed", "untimed"])
def test_trajectories_of_other_producers_render(timestamps: bool, browser_page: Page, tmp_path: Path) -> None:
    document = foreign_trajectory(timestamps=timestamps)
    assert validate_trajectory(document) == []
    page = browser_page.open(page_of([("other.json", document)], tmp_path / "page.html"))
    assert page.locator(".lane").count() == 1 and page.locator(".call").count() == 2
    assert page.locator(".turn-heading").all_inner_texts()[0].startswith("Turn 1")
    assert page.locator(".turn-heading").count() == 2  # each user step opens a turn
    page.locator('.step-row[data-step-id="2"] .row-head').click()
    assert page.locator('.step-row[data-step-id="2"] .observation pre').inner_text() == "1 failed, 9 passed"
    assert "50% of the prompt" in page.locator('.step-row[data-step-id="2"]').inner_text()
    track = page.locator(".lane-track").first
    width = track.bounding_box()["width"]
    page.get_by_title("zoom in (or ctrl + wheel)").click()
    assert track.bounding_box()["width"] == pytest.approx(2 * width, abs=1)
    browser_page.check_clean()


@pytest.mark.browser
def test_the_parts_of_a_continued_session_link_to_each_other(browser_page: Page, tmp_path: Path, capsys) -> None:
    first, second = foreign_trajectory(), foreign_trajectory(message="And go on")
    first["continued_trajectory_ref"] = "trajectory-s.2.json"
    second["extra"] = {"agent_lineage": {"continues": "trajectory-s.json"}}
    for name, document in (("trajectory-s.json", first), ("trajectory-s.2.json", second)):
        (tmp_path / name).write_bytes(orjson.dumps(document))
    assert view(capsys, str(tmp_path))[0] == 0
    page = browser_page.open(tmp_path / "index.html")
    page.locator(".session-row", has_text="trajectory-s.json").click()
    page.locator(".session-link", has_text="trajectory-s.2.json").click()
    page.locator(".step-row", has_text="And go on").wait_for()
    page.locator(".session-link", has_text="trajectory-s.json").click()
    page.locator(".step-row", has_text="Fix the failing test").wait_for()
    browser_page.check_clean()


@pytest.mark.browser
def test_each_call_is_placed_by_its_timestamp_and_latency(browser_page: Page, tmp_path: Path) -> None:
    document = foreign_trajectory()  # user at 0 s, calls at 1 s and 6 s
    document["steps"][1]["metrics"]["extra"] = {"latency_ms": 2000, "ttft_ms": 500}
    document["steps"][3]["metrics"] = {"prompt_tokens": 10, "completion_tokens": 2, "extra": {"latency_ms": 500}}
    page = browser_page.open(page_of([("other.json", document)], tmp_path / "page.html"))
    track = page.locator(".lane-track").first.bounding_box()
    span = 6.5  # seconds, from the first step to the end of the last call

    def fraction(seconds: float) -> float:  # the track keeps a 1% margin on each side
        return 0.005 + 0.98 * seconds / span

    first, second = (page.locator(".call").nth(i).bounding_box() for i in (0, 1))
    assert (first["x"] - track["x"]) / track["width"] == pytest.approx(fraction(1), abs=0.002)
    assert first["width"] / track["width"] == pytest.approx(0.98 * 2 / span, abs=0.002)
    assert (second["x"] - track["x"]) / track["width"] == pytest.approx(fraction(6), abs=0.002)
    assert second["width"] / track["width"] == pytest.approx(0.98 * 0.5 / span, abs=0.002)
    waiting = page.locator(".call").first.locator(".ttft").bounding_box()
    assert waiting["width"] / first["width"] == pytest.approx(0.25, abs=0.01)  # 500 of 2000 ms before the first token
    browser_page.check_clean()


@pytest.mark.browser
def test_side_requests_have_a_lane_and_a_section_of_their_own(browser_page: Page, tmp_path: Path) -> None:
    document = orjson.loads(NESTED.read_bytes())
    [side] = document["extra"]["agent_lineage"]["side_requests"]
    page = browser_page.open(page_of([(NESTED.name, document)], tmp_path / "page.html"))
    assert page.locator(".side-lane .side-mark").count() == 1
    assert page.locator(".side-row").count() == 1
    page.locator(".side-lane .side-mark").click()
    detail = page.locator(".side-row.open .detail")
    assert {"kind\tprobe", f"exchange_id\t{side['exchange_id']}", f"path\t{side['path']}"} <= set(detail.locator("tr").all_inner_texts())
    browser_page.check_clean()


@pytest.mark.browser
def test_screenshot(browser_page: Page, tmp_path: Path, capsys) -> None:
    """The nested Claude Code session, its delegating call open. AGENT_LINEAGE_SCREENSHOT=docs/img/viewer.png
    writes the README's picture."""
    document = orjson.loads(NESTED.read_bytes())
    page = browser_page.open(page_of([(NESTED.name, document)], tmp_path / "page.html"))
    step = next(s for s in document["steps"] if s.get("tool_calls"))
    page.locator(f'.step-row[data-agent-id="{document["trajectory_id"]}"][data-step-id="{step["step_id"]}"] .row-head').click()
    shot = Path(os.environ.get("AGENT_LINEAGE_SCREENSHOT", tmp_path / "viewer.png"))
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with capsys.disabled():
        print(f"\nviewer screenshot: {shot}")
    browser_page.check_clean()


# -- a large session --------------------------------------------------------------------------------


def large_trajectory(steps: int, subagents: int) -> dict[str, Any]:
    """A session of `steps` LLM calls (about 10 KB each: a message, a tool call and its output),
    half by a main agent, half by `subagents` subagents, a turn every 80 s."""
    filler = "lorem ipsum dolor sit amet " * 150  # 4 KB

    def agent_steps(count: int, agent: str, first: int) -> list[dict[str, Any]]:
        out = []
        for n in range(count):
            second = first + n
            out.append(
                {
                    "step_id": n + 1,
                    "timestamp": f"2026-01-01T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000Z",
                    "source": "agent",
                    "message": f"{agent} step {n}: {filler}",
                    "tool_calls": [{"tool_call_id": f"{agent}-{n}", "function_name": "Bash", "arguments": {"command": filler[:2000]}}],
                    "observation": {"results": [{"source_call_id": f"{agent}-{n}", "content": filler}]},
                    "metrics": {
                        "prompt_tokens": 1000 + n,
                        "completion_tokens": 50,
                        "cached_tokens": 900,
                        "extra": {"latency_ms": 800, "ttft_ms": 200},
                    },
                    "extra": {"agent_lineage": {"turn": 1 + second // 80, "agent_id": agent}},
                }
            )
        return out

    per_sub = steps // (2 * subagents)
    root = {"schema_version": "ATIF-v1.7", "session_id": "big", "trajectory_id": "big", "agent": {"name": "big", "version": "1"}}
    root["steps"] = agent_steps(steps - per_sub * subagents, "big", 0)
    root["subagent_trajectories"] = [
        {
            "schema_version": "ATIF-v1.7",
            "session_id": "big",
            "trajectory_id": f"sub-{i}",
            "agent": {
                "name": "big",
                "version": "1",
                "extra": {"depth": 1, "parent_agent_id": "big", "parent_tool_call_id": f"big-{i * 100}"},
            },
            "steps": agent_steps(per_sub, f"sub-{i}", i * 100),
        }
        for i in range(subagents)
    ]
    return root


# Scroll the step list by `step` px on each of 120 animation frames; the frame intervals, and the
# durations of the frames whose main-thread work took over 50 ms (long-animation-frame entries).
SCROLL_FRAMES = """(step) => new Promise(done => {
  const long = [];
  new PerformanceObserver(entries => { for (const e of entries.getEntries()) long.push(e.duration); }).observe({ type: "long-animation-frame" });
  const list = document.querySelector(".steps");
  const frames = [];
  let last = performance.now();
  function frame(now) {
    frames.push(now - last);
    last = now;
    list.scrollTop += step;
    if (frames.length < 120) requestAnimationFrame(frame);
    else setTimeout(() => done({ frames: frames.slice(1), long }), 100);
  }
  requestAnimationFrame(frame);
})"""  # noqa: E501


@pytest.mark.browser
def test_a_2000_step_20_mb_session_opens_and_scrolls(browser_page: Page, tmp_path: Path, capsys) -> None:
    document = large_trajectory(2000, 4)
    path = page_of([("big.json", document)], tmp_path / "big.html")
    size = path.stat().st_size
    assert size > 20_000_000
    page = browser_page.open(path)
    paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
    ready = page.evaluate("performance.getEntriesByName('viewer-ready')[0].startTime")
    with capsys.disabled():
        print(f"\nviewer, 2,000 steps, {size / 1e6:.1f} MB: first contentful paint {paint:.0f} ms, session drawn {ready:.0f} ms")
    assert ready < 30_000  # a sanity bound, not a speed target
    assert page.locator(".call").count() == 2000
    assert page.locator(".step-row").count() < 150  # only the rows in view exist
    frames = page.evaluate(SCROLL_FRAMES, 120)
    with capsys.disabled():
        print(
            f"scrolling 120 px a frame for {len(frames['frames'])} frames: median frame {median(frames['frames']):.0f} ms, "
            f"{len(frames['long'])} main-thread frames over 50 ms (longest {max(frames['long'], default=0):.0f} ms)"
        )
    # Scroll to the end: the last step of the last turn is drawn, still without the others.
    page.locator(".steps").evaluate("list => { list.scrollTop = list.scrollHeight; }")
    last_step = document["steps"][-1]  # the main agent's last call is the session's last
    last = page.locator(f'.step-row[data-agent-id="big"][data-step-id="{last_step["step_id"]}"]')
    last.wait_for()
    assert page.locator(".step-row").last.get_attribute("data-step-id") == str(last_step["step_id"])
    assert page.locator(".step-row").count() < 150
    last.locator(".row-head").click()
    assert last.locator(".observation pre").inner_text().startswith("lorem ipsum")
    browser_page.check_clean()
