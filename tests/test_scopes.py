"""ScopeTracker and the lineage rule, through the pure Pipeline on realistic request bodies."""

from __future__ import annotations

import itertools
import json

import pytest

from agent_lineage.ids import MAX_ID_BYTES, sanitize_id
from agent_lineage.lineage import PARENT_HEADER, SESSION_HEADER
from agent_lineage.model import Exchange
from agent_lineage.pipeline import Pipeline
from agent_lineage.settings import Settings

CLAUDE = "262845dd-f4af-48ab-b1f9-c617cf26c84a"
SDK_UA = "my-agent-app/1.0"
_ids = itertools.count(1)


class Client:
    """Plays requests and responses through one Pipeline, with a clock."""

    def __init__(self, pipeline: Pipeline | None = None, user_agent: str = SDK_UA, host: str = "127.0.0.1") -> None:
        self.pipeline = pipeline or Pipeline()
        self.user_agent = user_agent
        self.host = host
        self.t = 1000.0

    def send(self, path: str, body: dict, headers: dict[str, str] | None = None, *, method: str = "POST"):
        """One request (and, with `reply`, its response): returns the Outcome."""
        self.t += 1
        exchange = Exchange(
            id=f"flow-{next(_ids)}",
            method=method,
            path=path,
            request_headers={"user-agent": self.user_agent, "content-type": "application/json", **(headers or {})},
            request_body=json.dumps(body).encode() if body is not None else None,
            t_request=self.t,
            client=f"{self.host} {self.user_agent}",
        )
        return self.pipeline.request(exchange)

    def finish(self, outcome, response: dict, status: int = 200):
        self.t += 0.5
        reader = self.pipeline.response_reader(outcome.call, status, {"content-type": "application/json"}, self.t)
        reader.feed(json.dumps(response).encode())
        return self.pipeline.finish(reader, self.t)

    def chat(self, messages: list[dict], reply: dict | None, tools: list[str] = (), headers: dict[str, str] | None = None):
        """A Chat Completions call answered with `reply` (None: still in flight)."""
        body = {"model": "gpt-x", "messages": messages, "tools": [{"type": "function", "function": {"name": t}} for t in tools]}
        outcome = self.send("/v1/chat/completions", body, headers)
        if reply is not None:
            self.finish(outcome, {"id": f"c{next(_ids)}", "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}]})
        return outcome

    def failed_chat(self, messages: list[dict]):
        outcome = self.send("/v1/chat/completions", {"model": "gpt-x", "messages": messages})
        self.finish(outcome, {"error": {"type": "server_error", "message": "overloaded"}}, status=503)
        return outcome


def assistant(text: str = "", calls: list[tuple[str, str, dict]] = ()) -> dict:
    message = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, n, a in calls]
    return message


def tool(call_id: str, content: str) -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def scope(outcome):
    return outcome.call.scope


# -- the lineage rule -----------------------------------------------------------------


def test_root_agent_gets_its_id_and_no_parent_header():
    c = Client()
    out = c.chat([{"role": "user", "content": "hello there"}], assistant("hi"))
    assert out.headers == {SESSION_HEADER: scope(out).agent_id, PARENT_HEADER: None}
    assert scope(out).agent_id == scope(out).session_id and scope(out).parent_id is None


def test_nested_agents_each_name_their_immediate_parent():
    c = Client()
    root_task = [{"role": "system", "content": "orchestrator"}, {"role": "user", "content": "Plan the release notes"}]
    c.chat(root_task, assistant(calls=[("call_a", "delegate", {"task": "Collect every merged change of this week"})]), ["delegate"])
    child_msgs = [{"role": "system", "content": "collector"}, {"role": "user", "content": "Collect every merged change of this week"}]
    child = c.chat(
        child_msgs, assistant(calls=[("call_b", "delegate", {"task": "Read the git log for the last seven days"})]), ["delegate"]
    )
    grandchild = c.chat(
        [{"role": "system", "content": "reader"}, {"role": "user", "content": "Read the git log for the last seven days"}],
        assistant("done"),
    )
    root_id = scope(child).parent_id
    assert grandchild.headers == {SESSION_HEADER: scope(grandchild).agent_id, PARENT_HEADER: scope(child).agent_id}
    assert child.headers[PARENT_HEADER] == root_id and scope(grandchild).depth == 2
    assert len({root_id, scope(child).agent_id, scope(grandchild).agent_id}) == 3
    assert scope(grandchild).session_id == scope(child).session_id == root_id
    assert (scope(child).delegated_by, scope(grandchild).delegated_by) == ("call_a", "call_b")


def test_a_same_id_parent_sent_by_the_client_is_kept():
    c = Client()
    out = c.chat([{"role": "user", "content": "hello"}], None, headers={SESSION_HEADER: "agent-7", PARENT_HEADER: "agent-7"})
    assert out.headers == {SESSION_HEADER: "agent-7", PARENT_HEADER: "agent-7"}


def test_a_stale_parent_sent_by_the_client_is_removed_at_the_root():
    c = Client()
    out = c.chat([{"role": "user", "content": "hello"}], None, headers={PARENT_HEADER: "stale-parent"})
    assert out.headers[PARENT_HEADER] is None and out.headers[SESSION_HEADER].startswith("sess-")


def test_client_lineage_is_respected_or_overridden():
    sent = {SESSION_HEADER: "child-1", PARENT_HEADER: "root-1"}
    respected = Client().chat([{"role": "user", "content": "hello"}], None, headers=sent)
    assert respected.headers == sent and scope(respected).session_id == "root-1"
    overridden = Client(Pipeline(Settings(respect_client_lineage=False))).chat([{"role": "user", "content": "hello"}], None, headers=sent)
    assert overridden.headers[SESSION_HEADER].startswith("sess-") and overridden.headers[PARENT_HEADER] is None


def test_turns_are_never_agents_or_ids():
    c = Client()
    history = [{"role": "user", "content": "first question please"}]
    first = c.chat(history, assistant("answer one"))
    history += [assistant("answer one"), {"role": "user", "content": "second question please"}]
    second = c.chat(history, assistant(calls=[("call_x", "delegate", {"task": "Look this up in the wiki pages"})]), ["delegate"])
    child = c.chat([{"role": "user", "content": "Look this up in the wiki pages"}], assistant("found"))
    assert (scope(first).turn, scope(second).turn, scope(child).turn) == (1, 2, 2)
    assert scope(second).new_turn and not scope(child).new_turn
    assert first.headers == second.headers  # a new turn is not a new scope
    assert child.headers[PARENT_HEADER] == scope(first).agent_id


def test_stamping_off_sets_no_headers_but_still_scopes():
    out = Client(Pipeline(Settings(stamp=False))).chat([{"role": "user", "content": "hello"}], None)
    assert out.headers == {} and scope(out).agent_id.startswith("sess-")


# -- harness ids ----------------------------------------------------------------------


def claude_body(messages: list[dict], system: str = "x-anthropic-billing-header: cc_version=2.1.197.abc;", **extra) -> dict:
    return {
        "model": "claude-x",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": system}],
        "messages": messages,
        "tools": [{"name": "Agent"}, {"name": "Bash"}],
        **extra,
    }


def test_claude_code_headers_give_dynamos_own_lineage():
    c = Client(user_agent="claude-cli/2.1.197 (external, sdk-cli)")
    base = {"X-Claude-Code-Session-Id": CLAUDE}
    main = c.send("/v1/messages?beta=true", claude_body([{"role": "user", "content": "go"}]), {k.lower(): v for k, v in base.items()})
    child = c.send(
        "/v1/messages?beta=true",
        claude_body([{"role": "user", "content": "sub"}]),
        {"x-claude-code-session-id": CLAUDE, "x-claude-code-agent-id": "a1"},
    )
    nested = c.send(
        "/v1/messages?beta=true",
        claude_body([{"role": "user", "content": "subsub"}]),
        {"x-claude-code-session-id": CLAUDE, "x-claude-code-agent-id": "a2", "x-claude-code-parent-agent-id": "a1"},
    )
    assert main.headers == {SESSION_HEADER: CLAUDE, PARENT_HEADER: None}
    assert child.headers == {SESSION_HEADER: "a1", PARENT_HEADER: CLAUDE}
    assert nested.headers == {SESSION_HEADER: "a2", PARENT_HEADER: "a1"}
    assert {scope(o).session_id for o in (main, child, nested)} == {CLAUDE}


@pytest.mark.parametrize(
    "user_id",
    [
        json.dumps({"device_id": "ab" * 32, "account_uuid": "", "session_id": CLAUDE}),
        f"user_{'ab' * 32}_account__session_{CLAUDE}",
    ],
    ids=["json-string", "legacy"],
)
def test_claude_session_from_metadata_user_id_in_both_formats(user_id):
    c = Client(user_agent="claude-cli/2.1.197 (external, sdk-cli)")
    out = c.send("/v1/messages", claude_body([{"role": "user", "content": "go"}], metadata={"user_id": user_id}))
    assert out.headers[SESSION_HEADER] == CLAUDE


def test_codex_headers_and_turn_metadata():
    c = Client(user_agent="codex_exec/0.171.0")
    session, child = "01a21782-6b17-78f2-8fa9-367637f342d3", "01a21782-6bf2-7991-acee-53cf539adfba"

    def codex(thread: str, turn: str, parent: str | None = None, text: str = "hi"):
        metadata = {"session_id": session, "thread_id": thread, "turn_id": turn, "root_turn_id": turn}
        headers = {"session-id": session, "thread-id": thread, "x-codex-turn-metadata": json.dumps(metadata)}
        if parent:
            headers["x-codex-parent-thread-id"] = parent
        body = {
            "model": "gpt-5",
            "input": [{"role": "user", "content": text}],
            "prompt_cache_key": session,
            "tools": [{"type": "function", "name": "shell"}],
        }
        return c.send("/v1/responses", body, headers)

    main = codex(session, "t1")
    sub = codex(child, "t1", parent=session, text="subtask")
    again = codex(session, "t2", text="<subagent_notification>done</subagent_notification>")
    assert main.headers == {SESSION_HEADER: session, PARENT_HEADER: None}
    assert sub.headers == {SESSION_HEADER: child, PARENT_HEADER: session}
    assert [scope(o).turn for o in (main, sub, again)] == [1, 1, 2]  # the turn id decides, not the text
    assert scope(again).evidence["turn"] == "harness-turn-id"


def test_opencode_headers():
    c = Client(user_agent="opencode/1.0")
    root = c.send("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "a"}]}, {"x-session-id": "ses_1"})
    child = c.send(
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "b"}]},
        {"x-session-id": "ses_2", "x-parent-session-id": "ses_1"},
    )
    assert root.headers == {SESSION_HEADER: "ses_1", PARENT_HEADER: None}
    assert child.headers == {SESSION_HEADER: "ses_2", PARENT_HEADER: "ses_1"} and scope(child).session_id == "ses_1"


@pytest.mark.parametrize("raw", ["with\r\nnewline", "a/../../etc/passwd", "x" * 300, "ünïcode", "", ".hidden"])
def test_unsafe_harness_ids_are_normalised_not_copied(raw):
    safe = sanitize_id(raw)
    assert safe != raw and len(safe.encode()) <= MAX_ID_BYTES
    assert safe.isascii() and safe.isprintable() and "/" not in safe and not safe.startswith(".")
    assert sanitize_id(raw) == safe  # deterministic
    c = Client(user_agent="claude-cli/2.1.197")
    if raw:
        out = c.send("/v1/messages", claude_body([{"role": "user", "content": "go"}]), {"x-claude-code-session-id": raw})
        assert out.headers[SESSION_HEADER] == safe


def test_context_compaction_with_harness_ids_is_the_same_agent_and_turn():
    c = Client(user_agent="claude-cli/2.1.197")
    headers = {"x-claude-code-session-id": CLAUDE}
    first = c.send("/v1/messages", claude_body([{"role": "user", "content": "refactor the parser"}]), headers)
    c.finish(
        first,
        {"id": "m1", "content": [{"type": "tool_use", "id": "tu1", "name": "Bash", "input": {"command": "ls"}}], "stop_reason": "tool_use"},
    )
    restarted = c.send(
        "/v1/messages",
        claude_body([{"role": "user", "content": "This session is being continued from a previous conversation. Summary: ..."}]),
        headers,
    )
    assert scope(restarted).agent_id == scope(first).agent_id == CLAUDE
    assert scope(restarted).turn == 1 and not scope(restarted).new_turn


# -- inference without ids --------------------------------------------------------------


def test_a_conversation_that_extends_an_earlier_one_continues_it():
    c = Client()
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "list the files"}]
    reply = assistant(calls=[("call_1", "bash", {"command": "ls"})])
    first = c.chat(history, reply, ["bash"])
    history += [reply, tool("call_1", "a.txt")]
    second = c.chat(history, assistant("one file"), ["bash"])
    assert scope(second).agent_id == scope(first).agent_id
    assert scope(second).evidence["agent"] == "prefix"
    assert [m.role for m in second.call.new_messages] == ["tool"] and not scope(second).new_turn


def test_tool_results_link_a_request_whose_history_was_trimmed():
    c = Client()
    first = c.chat([{"role": "user", "content": "list the files"}], assistant(calls=[("call_9", "bash", {"command": "ls"})]), ["bash"])
    trimmed = c.chat(
        [
            {"role": "user", "content": "(earlier turns elided)"},
            assistant(calls=[("call_9", "bash", {"command": "ls"})]),
            tool("call_9", "a.txt"),
        ],
        None,
        ["bash"],
    )
    assert scope(trimmed).agent_id == scope(first).agent_id and scope(trimmed).evidence["agent"] == "tool-result"


def test_previous_response_id_links_responses_calls():
    c = Client()
    first = c.send("/v1/responses", {"model": "m", "input": "plan a trip to Rome"})
    c.finish(
        first,
        {
            "id": "resp_1",
            "status": "completed",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}],
        },
    )
    second = c.send("/v1/responses", {"model": "m", "previous_response_id": "resp_1", "input": "and then Naples"})
    assert scope(second).agent_id == scope(first).agent_id and scope(second).evidence["agent"] == "previous-response-id"
    assert scope(second).new_turn


def test_prompt_cache_key_keeps_a_restarted_conversation_in_its_session():
    c = Client()
    first = c.send("/v1/responses", {"model": "m", "input": "start the long job", "prompt_cache_key": "pk-1"})
    c.finish(first, {"id": "resp_2", "status": "completed", "output": []})
    restart = c.send("/v1/responses", {"model": "m", "input": "Summary of the work so far: ...", "prompt_cache_key": "pk-1"})
    assert scope(restart).agent_id == scope(first).agent_id and scope(restart).evidence["agent"] == "prompt-cache-key"


def test_fresh_user_message_opens_a_turn_tool_results_and_retries_do_not():
    c = Client()
    history = [{"role": "user", "content": "what is the weather"}]
    c.failed_chat(history)
    retry = c.chat(history, assistant("sunny"))
    assert not scope(retry).new_turn and scope(retry).turn == 1
    again = c.chat(history, assistant("still sunny"))  # the same question after a good answer: asked again
    assert scope(again).new_turn and scope(again).turn == 2


def test_an_idle_gap_opens_a_turn():
    c = Client(Pipeline(Settings(turn_gap_seconds=60)))
    history = [{"role": "user", "content": "start the build"}]
    reply = assistant(calls=[("call_b", "bash", {"command": "make"})])
    c.chat(history, reply, ["bash"])
    c.t += 120
    later = c.chat(history + [reply, tool("call_b", "built")], assistant("done"), ["bash"])
    assert scope(later).new_turn and scope(later).evidence["turn"] == "idle-gap"


def test_harness_chatter_is_not_a_fresh_turn():
    c = Client(user_agent="claude-cli/2.1.197")
    headers = {"x-claude-code-session-id": CLAUDE}
    first = c.send("/v1/messages", claude_body([{"role": "user", "content": "fix the bug"}]), headers)
    c.finish(first, {"id": "m1", "content": [{"type": "text", "text": "looking"}], "stop_reason": "end_turn"})
    reminder = c.send(
        "/v1/messages",
        claude_body(
            [
                {"role": "user", "content": "fix the bug"},
                {"role": "assistant", "content": [{"type": "text", "text": "looking"}]},
                {"role": "user", "content": "<system-reminder>\nfiles changed\n</system-reminder>"},
            ]
        ),
        headers,
    )
    assert not scope(reminder).new_turn


def test_parallel_subagents_share_their_parent_and_stay_apart():
    c = Client()
    tasks = {"call_p1": "Summarise the billing module in detail", "call_p2": "Summarise the shipping module in detail"}
    parent = c.chat(
        [{"role": "user", "content": "summarise the code base"}],
        assistant(calls=[(i, "delegate", {"task": t}) for i, t in tasks.items()]),
        ["delegate"],
    )
    children = {i: c.chat([{"role": "user", "content": t}], None) for i, t in tasks.items()}
    ids = {scope(o).agent_id for o in children.values()}
    assert len(ids) == 2 and scope(parent).agent_id not in ids
    assert all(scope(o).parent_id == scope(parent).agent_id for o in children.values())
    assert {scope(o).delegated_by for o in children.values()} == set(tasks)


def test_one_open_delegation_call_adopts_a_new_conversation_without_quoting():
    c = Client()
    app = {"role": "system", "content": "You are the research app."}
    parent = c.chat(
        [app, {"role": "user", "content": "research the topic"}], assistant(calls=[("call_t", "Task", {"prompt": "short"})]), ["Task"]
    )
    child = c.chat([{"role": "system", "content": "You are a helper."}, {"role": "user", "content": "totally different words"}], None)
    assert scope(child).parent_id == scope(parent).agent_id and scope(child).evidence["parent"] == "open-delegation-call"
    # Another session of the same app (same system prompt) is not adopted by timing alone.
    other = c.chat([app, {"role": "user", "content": "another user's question"}], None)
    assert scope(other).parent_id is None


def test_ambiguous_open_calls_give_no_parent_rather_than_a_wrong_one():
    c = Client()
    first = c.send(
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "first app session"}],
            "tools": [{"type": "function", "function": {"name": "Task"}}],
        },
    )
    second = c.send(
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "second app session"}],
            "tools": [{"type": "function", "function": {"name": "Task"}}],
        },
    )
    for outcome, call_id in ((first, "call_u"), (second, "call_v")):
        reply = assistant(calls=[(call_id, "Task", {"prompt": "x"})])
        c.finish(outcome, {"id": call_id, "choices": [{"index": 0, "message": reply, "finish_reason": "tool_calls"}]})
    stranger = c.chat([{"role": "user", "content": "unrelated new conversation"}], None)
    assert scope(stranger).parent_id is None and scope(stranger).depth == 0


def test_a_long_open_delegation_call_does_not_adopt_a_late_conversation():
    c = Client()
    c.chat([{"role": "user", "content": "research the topic"}], assistant(calls=[("call_t", "Task", {"prompt": "short"})]), ["Task"])
    c.t += 600  # its subagent would have started long ago
    late = c.chat([{"role": "system", "content": "You are a helper."}, {"role": "user", "content": "totally different words"}], None)
    assert scope(late).parent_id is None


def test_a_closed_delegation_takes_no_new_subagent():
    c = Client()
    history = [{"role": "user", "content": "research the topic"}]
    reply = assistant(calls=[("call_t", "Task", {"prompt": "short"})])
    c.chat(history, reply, ["Task"])
    c.chat(history + [reply, tool("call_t", "result")], assistant("done"), ["Task"])
    c.t += 500
    newcomer = c.chat([{"role": "user", "content": "a brand new question"}], None)
    assert scope(newcomer).parent_id is None and scope(newcomer).depth == 0


def test_a_fork_that_leaves_the_parents_calls_unanswered_is_a_subagent():
    c = Client()
    history = [{"role": "user", "content": "split the work"}]
    reply = assistant(calls=[("call_s", "spawn_agent", {"message": "do part two"})])
    parent = c.chat(history, reply, ["spawn_agent"])
    fork = c.chat(history + [reply, {"role": "user", "content": "You are the forked helper: do part two"}], None)
    assert scope(fork).parent_id == scope(parent).agent_id and scope(fork).evidence["agent"] == "fork"


def test_interleaved_sessions_of_one_client_stay_apart():
    c = Client()
    a = [{"role": "user", "content": "session A question"}]
    b = [{"role": "user", "content": "session B question"}]
    ra = assistant(calls=[("call_a1", "bash", {"command": "ls"})])
    rb = assistant(calls=[("call_b1", "bash", {"command": "pwd"})])
    first_a, first_b = c.chat(a, ra, ["bash"]), c.chat(b, rb, ["bash"])
    second_b = c.chat(b + [rb, tool("call_b1", "/")], assistant("root"), ["bash"])
    second_a = c.chat(a + [ra, tool("call_a1", "x")], assistant("x"), ["bash"])
    assert scope(first_a).agent_id == scope(second_a).agent_id != scope(first_b).agent_id == scope(second_b).agent_id


def test_ids_are_deterministic_across_runs():
    def play() -> list[str]:
        c = Client()
        c.chat(
            [{"role": "user", "content": "plan"}],
            assistant(calls=[("call_d", "delegate", {"task": "Investigate the flaky test suite"})]),
            ["delegate"],
        )
        child = c.chat([{"role": "user", "content": "Investigate the flaky test suite"}], None)
        return [scope(child).agent_id, scope(child).parent_id]

    assert play() == play()


def test_distinct_conversations_with_the_same_opening_get_distinct_ids():
    c = Client()
    chat = c.chat([{"role": "user", "content": "same prompt"}], assistant("a"))
    responses = c.send("/v1/responses", {"model": "m", "input": "same prompt"})  # another API: another conversation
    assert scope(responses).session_id != scope(chat).session_id
    assert c.pipeline.tracker.conversations.unique(scope(chat).session_id) == scope(chat).session_id + "-2"


def test_state_of_idle_sessions_is_released():
    c = Client(Pipeline(Settings(session_ttl_seconds=100)))
    for n in range(5):
        c.chat([{"role": "user", "content": f"conversation number {n}"}], assistant("ok"))
    conversations = c.pipeline.tracker.conversations
    assert len(conversations.sessions) == 5
    c.t += 1000
    c.chat([{"role": "user", "content": "a later conversation"}], assistant("ok"))
    assert len(conversations.sessions) == 1 and len(conversations.agents) == 1
    assert all(agent.id in conversations.agents for agent in conversations.states.values())


# -- side requests ----------------------------------------------------------------------


def test_side_requests_carry_their_sessions_lineage_but_are_marked():
    c = Client(user_agent="claude-cli/2.1.197")
    headers = {"x-claude-code-session-id": CLAUDE}
    probe = c.send("/v1/messages", claude_body([{"role": "user", "content": "test"}], max_tokens=1), headers)
    title = c.send(
        "/v1/messages",
        {**claude_body([{"role": "user", "content": "name this"}]), "tools": [], "output_config": {"format": {"type": "json_schema"}}},
        headers,
    )
    count = c.send("/v1/messages/count_tokens", claude_body([{"role": "user", "content": "count me"}]), headers)
    assert [scope(o).side for o in (probe, title, count)] == ["quota-probe", "title", "count-tokens"]
    assert all(o.headers == {SESSION_HEADER: CLAUDE, PARENT_HEADER: None} for o in (probe, title, count))


def test_codex_title_request_under_a_fresh_wire_session_joins_the_session_it_quotes():
    c = Client(user_agent="codex_tui/0.171.0")
    main_session = "01a2-main"
    main = c.send(
        "/v1/responses",
        {"model": "m", "input": [{"role": "user", "content": "port the parser to rust"}], "tools": [{"type": "function", "name": "shell"}]},
        {"session-id": main_session, "thread-id": main_session},
    )
    metadata = json.dumps({"session_id": "01a2-title", "thread_id": "01a2-title", "thread_source": "thread_title"})
    title = c.send(
        "/v1/responses",
        {"model": "m", "input": [{"role": "user", "content": "Write a title for: port the parser to rust"}]},
        {"session-id": "01a2-title", "thread-id": "01a2-title", "x-codex-turn-metadata": metadata},
    )
    assert scope(title).side == "title" and scope(title).session_id == scope(main).session_id == main_session
    assert title.headers[SESSION_HEADER] == main_session


def test_sdk_title_request_quoting_a_session_prompt_is_a_side_request_of_it():
    c = Client()
    main = c.chat([{"role": "user", "content": "Help me plan the migration to Postgres 17"}], assistant("sure"), ["bash"])
    title = c.chat([{"role": "user", "content": "Give a 3-word title to: Help me plan the migration to Postgres 17"}], None)
    assert scope(title).side == "title" and scope(title).session_id == scope(main).session_id


def test_head_probe_joins_the_next_session_from_the_same_host():
    seen = []

    class Sink:
        def add(self, call):
            seen.append(call)

        def session_evicted(self, session_id):
            pass

        def close(self):
            pass

    c = Client(Pipeline(sinks=[Sink()]), user_agent="Bun/1.4.0")
    assert c.send("/", None, method="HEAD") is None
    c.user_agent = "claude-cli/2.1.197"
    c.send("/v1/messages", claude_body([{"role": "user", "content": "go"}]), {"x-claude-code-session-id": CLAUDE})
    [probe] = seen
    assert probe.side == "probe" and probe.scope.session_id == CLAUDE
