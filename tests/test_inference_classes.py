"""The five classes of traffic the tracker was not tuned to (issue 10), on traffic written here.

`Wire` is a small generator of its own, independent of agent_lineage.corpus: seeded prose tasks,
Claude Code-, Codex- and SDK-shaped bodies built by hand, one clock. Every test plays requests
and answers through a real Pipeline and folds the finished calls into a TrajectoryBuilder, then
checks the scopes (what is stamped) and the trajectories (what is written).
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from agent_lineage.atif import TrajectoryBuilder
from agent_lineage.lineage import PARENT_HEADER, SESSION_HEADER
from agent_lineage.model import Call, Exchange
from agent_lineage.pipeline import Outcome, Pipeline
from agent_lineage.validate import validate_trajectory

VERBS = ["audit", "summarise", "compare", "benchmark", "document", "refactor", "trace", "profile"]
NOUNS = ["billing ledger", "retry policy", "cache layer", "login flow", "search index", "export job", "rate limiter"]
PLACES = ["the staging cluster", "the mobile client", "the nightly batch", "the public API", "the admin console"]
SEEDS = [11, 12, 13]


class Wire:
    """One proxy's view: requests and answers through a Pipeline, calls into a TrajectoryBuilder."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.t = 7_000.0
        self.ids = itertools.count(1)
        self.builder = TrajectoryBuilder()
        self.pipeline = Pipeline(sinks=[self])

    # the CallSink protocol
    def add(self, call: Call) -> None:
        self.builder.add(call)

    def session_evicted(self, session_id: str) -> None:
        pass

    def close(self) -> None:
        pass

    def task(self) -> str:
        return f"{self.rng.choice(VERBS).capitalize()} the {self.rng.choice(NOUNS)} used by {self.rng.choice(PLACES)} #{self.rng.randrange(10_000)}"  # noqa: E501

    def tick(self, seconds: float = 0.05) -> None:
        self.t += seconds

    def send(self, path: str, body: dict[str, Any], headers: dict[str, str], user_agent: str) -> Outcome:
        self.tick()
        exchange = Exchange(
            id=f"x{next(self.ids)}",
            method="POST",
            path=path,
            request_headers={"user-agent": user_agent, "content-type": "application/json", **headers},
            request_body=json.dumps(body).encode(),
            t_request=self.t,
            client=f"10.1.2.3 {user_agent}",
        )
        outcome = self.pipeline.request(exchange)
        assert outcome is not None
        return outcome

    def answer(self, outcome: Outcome, body: dict[str, Any]) -> Call:
        self.tick(0.2)
        reader = self.pipeline.response_reader(outcome.call, 200, {"content-type": "application/json"}, self.t)
        reader.feed(json.dumps(body).encode())
        return self.pipeline.finish(reader, self.t)

    def documents(self) -> dict[str, dict[str, Any]]:
        found = {}
        for session_id in self.builder.session_ids():
            document = json.loads(self.builder.render(session_id))
            assert validate_trajectory(document) == []
            found[session_id] = document
        return found

    # -- Anthropic Messages (Claude Code's shape) ----------------------------------------------

    def messages_call(
        self,
        system: str,
        messages: list[dict],
        tools: list[str],
        headers: dict[str, str],
        user_agent: str = "claude-cli/3.0.1 (external, cli)",
    ) -> Outcome:
        body = {
            "model": "claude-y",
            "max_tokens": 8000,
            "system": [{"type": "text", "text": system}],
            "messages": messages,
            "tools": [{"name": t, "description": t, "input_schema": {"type": "object"}} for t in tools],
        }
        return self.send("/v1/messages?beta=true", body, headers, user_agent)

    def messages_answer(self, outcome: Outcome, text: str = "", uses: list[tuple[str, str, dict]] = ()) -> Call:
        content: list[dict] = [{"type": "text", "text": text}] if text else []
        content += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in uses]
        return self.answer(
            outcome,
            {
                "id": f"msg_{next(self.ids)}",
                "type": "message",
                "role": "assistant",
                "model": "claude-y",
                "content": content,
                "stop_reason": "tool_use" if uses else "end_turn",
                "usage": {"input_tokens": 50, "output_tokens": 9},
            },
        )

    # -- Chat Completions (an SDK app's shape) ---------------------------------------------------

    def chat_call(self, system: str, messages: list[dict], tools: list[str], user_agent: str = "AsyncOpenAI/Python 9.1.0") -> Outcome:
        body = {
            "model": "gpt-y",
            "messages": [{"role": "system", "content": system}, *messages],
            **(
                {"tools": [{"type": "function", "function": {"name": t, "parameters": {"type": "object"}}} for t in tools]} if tools else {}
            ),
        }
        return self.send("/v1/chat/completions", body, {}, user_agent)

    def chat_answer(self, outcome: Outcome, text: str = "", uses: list[tuple[str, str, dict]] = ()) -> tuple[Call, dict]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if uses:
            message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, n, a in uses]
        call = self.answer(
            outcome,
            {
                "id": f"cc{next(self.ids)}",
                "object": "chat.completion",
                "model": "gpt-y",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if uses else "stop"}],
            },
        )
        return call, message


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def tool_results(*pairs: tuple[str, str]) -> dict:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": i, "content": c} for i, c in pairs]}


def chat_result(call_id: str, content: str) -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def assistant_blocks(text: str, uses: list[tuple[str, str, dict]]) -> dict:
    content: list[dict] = [{"type": "text", "text": text}] if text else []
    return {"role": "assistant", "content": content + [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in uses]}


def agent_steps(trajectory: dict) -> int:
    return sum(1 for s in trajectory["steps"] if s["source"] == "agent")


def lineage_extra(document: dict) -> dict:
    return document["extra"]["agent_lineage"]


def all_subagents(trajectory: dict) -> list[dict]:
    found = []
    for child in trajectory.get("subagent_trajectories", []):
        found += [child, *all_subagents(child)]
    return found


# -- 1. side requests by shape, under the session's own ids ---------------------------------------

ONE_SHOTS = [
    ("Write a short title for the conversation below. Reply with the title only.", "title"),
    ("You condense a coding session into a summary of at most 40 words.", "summary"),
    ("Suggest the next prompt the user is likely to type, in under 12 words.", "suggestion"),
    ("Answer with one word: is the following request about code?", "one-shot"),
]


@pytest.mark.parametrize("seed", SEEDS)
def test_one_shot_requests_under_a_claude_sessions_ids_are_side_requests(seed: int) -> None:
    wire = Wire(seed)
    session = f"5e551017-{seed:04d}-4000-8000-000000000000"
    ids = {"x-claude-code-session-id": session}
    system = "You are a coding agent working in a repository. Use the tools."
    prompt, follow_up = wire.task(), wire.task()
    kinds = wire.rng.sample(ONE_SHOTS, 3)
    one_shot = lambda n, text: wire.messages_call(kinds[n][0], [user(text)], [], ids)  # noqa: E731
    sides = [one_shot(0, prompt)]  # the title races the session's first request
    first = wire.messages_call(system, [user(prompt)], ["Bash", "Read"], ids)
    wire.messages_answer(sides[0], "A title")
    wire.messages_answer(first, uses=[("toolu_1", "Bash", {"command": "make test"})])
    sides.append(one_shot(1, prompt + "\n\nassistant: running the tests"))
    history = [user(prompt), assistant_blocks("", [("toolu_1", "Bash", {"command": "make test"})]), tool_results(("toolu_1", "ok"))]
    second = wire.messages_call(system, history, ["Bash", "Read"], ids)
    wire.messages_answer(sides[1], "A summary")
    wire.messages_answer(second, "All green.")
    sides.append(one_shot(2, "All green."))
    wire.messages_answer(sides[2], "run the linters")
    third = wire.messages_call(system, [*history, {"role": "assistant", "content": "All green."}, user(follow_up)], ["Bash", "Read"], ids)
    wire.messages_answer(third, "Done.")

    agents = [first, second, third]
    assert [o.call.scope.side for o in sides] == [k for _, k in kinds]
    assert all(o.headers[SESSION_HEADER] == session and o.call.scope.session_id == session for o in sides)
    assert not any(o.call.scope.new_turn for o in sides)
    assert [o.call.scope.turn for o in agents] == [1, 1, 2] and [o.call.scope.new_turn for o in agents] == [True, False, True]
    (document,) = wire.documents().values()
    assert agent_steps(document) == 3 and [s["source"] for s in document["steps"]].count("user") == 2
    assert [(r["kind"], r["agent_id"]) for r in lineage_extra(document)["side_requests"]] == [(k, session) for _, k in kinds]
    assert len(lineage_extra(document)["turns"]) == 2


@pytest.mark.parametrize("seed", SEEDS)
def test_a_one_shot_under_an_agents_ids_and_its_turn_id_opens_no_turn(seed: int) -> None:
    """OpenCode-style ids (no `agents_send_tools` in the table): the agent's own id on a request
    that is not its conversation, under a system prompt of its own."""
    wire = Wire(seed)
    ids = {"x-session-id": f"oc-{seed}"}
    prompt = wire.task()
    first = wire.messages_call("You are opencode, an agent.", [user(prompt)], ["bash"], ids, user_agent="opencode/2.0")
    wire.messages_answer(first, "Working on it.")
    side = wire.messages_call("Generate a title of five words for this chat.", [user(prompt)], [], ids, user_agent="opencode/2.0")
    wire.messages_answer(side, "Five word title here")
    assert side.call.scope.side == "title" and not side.call.scope.new_turn and side.headers[SESSION_HEADER] == f"oc-{seed}"
    (document,) = wire.documents().values()
    assert agent_steps(document) == 1 and [r["kind"] for r in lineage_extra(document)["side_requests"]] == ["title"]


def test_a_one_shot_quoting_a_transcript_in_its_system_prompt_is_the_delegating_sessions() -> None:
    """A group chat's speaker selection: no messages, the transcript in the system prompt."""
    wire = Wire(5)
    prompt, task = wire.task(), wire.task() + " and list the three biggest risks"
    lead = wire.chat_call("You lead the team.", [user(prompt)], ["review"])
    _, reply = wire.chat_answer(lead, uses=[("call_r", "review", {"task": task})])
    pick = wire.chat_call(f"Roles: critic, editor. Read the conversation.\n\nuser: {task}\n\nSelect the next role.", [], [])
    wire.chat_answer(pick, "critic")
    assert pick.call.scope.side == "classification" and pick.call.scope.session_id == lead.call.scope.session_id
    (document,) = wire.documents().values()
    assert [r["kind"] for r in lineage_extra(document)["side_requests"]] == ["classification"]


# -- 3. a known client's shape without its ids ----------------------------------------------------

BILLING = "x-anthropic-billing-header: cc_version=3.0.1.abc; cc_entrypoint=cli;\n"
REMINDER = "<system-reminder>\nThe working directory is /srv/app.\n</system-reminder>\n"


@pytest.mark.parametrize("seed", SEEDS)
def test_claude_shaped_subagents_without_ids_or_marker_find_their_parents(seed: int) -> None:
    """Two concurrent id-less Claude-shaped sessions; no request carries `cc_is_subagent`."""
    wire = Wire(seed)
    main_system = BILLING + "You are Claude Code, an interactive CLI."
    child_system = BILLING + "You are a file search specialist."
    sessions = []
    for _ in range(2):
        prompt = wire.task()
        outcome = wire.messages_call(main_system, [user(prompt)], ["Agent", "Bash"], {})
        sessions.append((prompt, outcome))
    tasks = [wire.task() + " and report every file you touched" for _ in sessions]
    for n, (_, outcome) in enumerate(sessions):
        wire.messages_answer(
            outcome, uses=[(f"toolu_a{n}", "Agent", {"description": "search", "prompt": tasks[n], "subagent_type": "Explore"})]
        )
    children = []
    for n in reversed(range(2)):  # the later delegation's child starts first: timing would mislead
        child = wire.messages_call(
            child_system,
            [{"role": "user", "content": [{"type": "text", "text": REMINDER}, {"type": "text", "text": tasks[n]}]}],
            ["Read", "Grep"],
            {},
        )
        wire.messages_answer(child, f"Found it for task {n}.")
        children.append((n, child))
    for n, child in children:
        parent = sessions[n][1].call.scope
        assert child.call.scope.parent_id == parent.agent_id and child.call.scope.session_id == parent.session_id
        assert child.call.scope.delegated_by == f"toolu_a{n}" and child.headers[PARENT_HEADER] == parent.agent_id
    for n, (prompt, _) in enumerate(sessions):
        history = [
            user(prompt),
            assistant_blocks("", [(f"toolu_a{n}", "Agent", {"prompt": tasks[n]})]),
            tool_results((f"toolu_a{n}", f"Found it for task {n}.")),
        ]
        wire.messages_answer(wire.messages_call(main_system, history, ["Agent", "Bash"], {}), "Done.")
    documents = wire.documents()
    assert len(documents) == 2
    for document in documents.values():
        (child,) = document["subagent_trajectories"]
        refs = [r for s in document["steps"] for r in s.get("observation", {}).get("results", []) if "subagent_trajectory_ref" in r]
        assert [r["subagent_trajectory_ref"][0]["trajectory_id"] for r in refs] == [child["trajectory_id"]]


# -- 4. concurrent orchestrators ---------------------------------------------------------------------

TEMPLATE = (
    "You are {name}, a specialist on a team.\nYour coordinator has handed you this task:\n---\n{task}\n---\n"
    "Work through it step by step, use your tools where they help, and report back everything the "
    "coordinator needs to write the final answer, including what you could not verify."
)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sessions", [1, 3])
def test_concurrent_orchestrators_keep_their_own_workers(seed: int, sessions: int) -> None:
    """Coordinators of one app (same prompt, same tools) delegate two templated tasks each, in
    parallel; the workers start in an order unrelated to their delegations."""
    wire = Wire(seed)
    coordinator = "You coordinate a research team. Delegate with the tools, then answer."
    apps = []
    for _ in range(sessions):
        prompt = wire.task()
        outcome = wire.chat_call(coordinator, [user(prompt)], ["ask_researcher", "ask_writer"])
        apps.append({"prompt": prompt, "root": outcome})
    for n, app in enumerate(apps):
        app["uses"] = [(f"call_{n}_{k}", tool, {"task": wire.task()}) for k, tool in enumerate(["ask_researcher", "ask_writer"])]
        _, app["reply"] = wire.chat_answer(app["root"], uses=app["uses"])
    starts = [(n, k) for n in range(sessions) for k in range(2)]
    wire.rng.shuffle(starts)
    workers = {}
    for n, k in starts:
        call_id, tool, args = apps[n]["uses"][k]
        name = tool.removeprefix("ask_")
        first = [user(TEMPLATE.format(name=name, task=args["task"]))]
        outcome = wire.chat_call(f"You are the {name}.", first, ["lookup"])
        workers[(n, k)] = (outcome, first)
    for (n, k), (outcome, first) in workers.items():
        _, reply = wire.chat_answer(outcome, uses=[(f"call_w{n}{k}", "lookup", {"q": "x"})])
        more = wire.chat_call(outcome.call.system, [*first, reply, chat_result(f"call_w{n}{k}", "facts")], ["lookup"])
        wire.chat_answer(more, f"report {n}.{k}")
        assert more.call.scope.agent_id == outcome.call.scope.agent_id
    for (n, k), (outcome, _) in workers.items():
        root = apps[n]["root"].call.scope
        assert outcome.call.scope.parent_id == root.agent_id and outcome.call.scope.session_id == root.session_id
        assert outcome.call.scope.delegated_by == apps[n]["uses"][k][0]
    documents = wire.documents()
    assert len(documents) == sessions
    for document in documents.values():
        assert len(document["subagent_trajectories"]) == 2
        assert all(agent_steps(child) == 2 for child in document["subagent_trajectories"])


@pytest.mark.parametrize("seed", SEEDS)
def test_the_same_task_delegated_twice_is_two_agents(seed: int) -> None:
    wire = Wire(seed)
    prompt, task = wire.task(), wire.task()
    root = wire.chat_call("You coordinate reviewers.", [user(prompt)], ["ask_reviewer"])
    wire.chat_answer(root, uses=[("call_a", "ask_reviewer", {"task": task}), ("call_b", "ask_reviewer", {"task": task})])
    first = [user(TEMPLATE.format(name="reviewer", task=task))]
    twins = [wire.chat_call("You are a reviewer.", first, ["lookup"]) for _ in range(2)]  # byte-identical
    replies = [wire.chat_answer(o, uses=[(f"call_t{n}", "lookup", {"q": str(n)})])[1] for n, o in enumerate(twins)]
    later = [wire.chat_call("You are a reviewer.", [*first, replies[n], chat_result(f"call_t{n}", f"r{n}")], ["lookup"]) for n in (1, 0)]
    scopes = [o.call.scope for o in twins]
    assert scopes[0].agent_id != scopes[1].agent_id
    assert {s.delegated_by for s in scopes} == {"call_a", "call_b"}
    assert all(s.parent_id == root.call.scope.agent_id for s in scopes)
    assert [o.call.scope.agent_id for o in later] == [scopes[1].agent_id, scopes[0].agent_id]


# -- 5. forked subagents -------------------------------------------------------------------------------


def codex_ids(session: str, thread: str, parent: str | None = None) -> dict[str, str]:
    headers = {"session-id": session, "thread-id": thread}
    if parent:
        headers["x-codex-parent-thread-id"] = parent
    return headers


@pytest.mark.parametrize("with_ids", [True, False])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_forked_subagent_is_referenced_and_opens_with_its_task(seed: int, with_ids: bool) -> None:
    """Codex-style fork_context: the child's first request is the parent's history, the spawn
    call unanswered, then the task the parent gave it."""
    wire = Wire(seed)
    session = f"019a-{seed}"
    prompt, task = wire.task(), wire.task()
    tools = [{"type": "function", "name": "spawn_agent"}, {"type": "function", "name": "shell"}]
    history = [{"role": "user", "content": prompt}]

    def responses(input_items: list[dict], headers: dict[str, str]) -> Outcome:
        body = {"model": "gpt-y", "instructions": "You are Codex.", "input": input_items, "tools": tools}
        return wire.send("/v1/responses", body, headers if with_ids else {}, "codex_exec/1.2.3")

    def respond(outcome: Outcome, output: list[dict]) -> Call:
        return wire.answer(
            outcome,
            {
                "id": f"resp_{next(wire.ids)}",
                "object": "response",
                "status": "completed",
                "model": "gpt-y",
                "output": output,
                "usage": {"input_tokens": 40, "output_tokens": 8},
            },
        )

    parent = responses(history, codex_ids(session, session))
    spawn = {
        "type": "function_call",
        "call_id": "call_spawn",
        "name": "spawn_agent",
        "arguments": json.dumps({"message": task, "fork_context": True}),
    }
    respond(parent, [spawn])
    child_thread = f"019b-{seed}"
    forked = [*history, spawn, {"role": "user", "content": task}]
    child = responses(forked, codex_ids(session, child_thread, parent=session))
    child_calls = 3
    items = list(forked)
    for n in range(child_calls):
        shell = {"type": "function_call", "call_id": f"call_sh{n}", "name": "shell", "arguments": json.dumps({"cmd": f"step {n}"})}
        if n < child_calls - 1:
            respond(child, [shell])
            items += [shell, {"type": "function_call_output", "call_id": f"call_sh{n}", "output": "ok"}]
            child = responses(items, codex_ids(session, child_thread, parent=session))
        else:
            respond(child, [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "child done"}]}])
    output = {"type": "function_call_output", "call_id": "call_spawn", "output": json.dumps({"agent_id": child_thread})}
    respond(
        responses([*history, spawn, output], codex_ids(session, session)),
        [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "all done"}]}],
    )

    (document,) = wire.documents().values()
    (sub,) = document["subagent_trajectories"]
    refs = [r for s in document["steps"] for r in s.get("observation", {}).get("results", []) if r["source_call_id"] == "call_spawn"]
    assert refs and refs[0]["subagent_trajectory_ref"] == [{"trajectory_id": sub["trajectory_id"], "session_id": document["session_id"]}]
    user_steps = [s for s in sub["steps"] if s["source"] == "user"]
    assert [s["message"] for s in user_steps] == [task] and sub["steps"][[s["source"] for s in sub["steps"]].index("user") - 1][
        "source"
    ] == "system"
    assert agent_steps(sub) == child_calls
    assert sub["agent"]["extra"]["parent_tool_call_id"] == "call_spawn"


# -- 2. a side request that arrives before its session ---------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_a_title_that_races_ahead_of_its_session_is_reattached_to_it(seed: int) -> None:
    """Stamped with its own id as it goes out; re-attached when the session it quotes starts
    while it is in flight: one session, one document, the title under its side requests."""
    wire = Wire(seed)
    prompt = wire.task()
    template = wire.rng.choice(["Give this chat a title of at most six words:\n\n{}", "{}"])
    title = wire.chat_call("You write short titles for chats.", [user(template.format(prompt))], [])
    wire.tick(0.004)
    first = wire.chat_call("You are a support agent.", [user(prompt)], ["lookup_order"])
    wire.chat_answer(title, "A title")
    _, reply = wire.chat_answer(first, uses=[("call_o", "lookup_order", {"id": "7"})])
    wire.chat_answer(
        wire.chat_call("You are a support agent.", [user(prompt), reply, chat_result("call_o", "shipped")], ["lookup_order"]), "It shipped."
    )
    assert title.headers[SESSION_HEADER] != first.headers[SESSION_HEADER]  # stamped before its session existed
    scope = title.call.scope
    assert scope.side == "title" and scope.session_id == first.call.scope.session_id and not scope.new_turn
    assert len(wire.pipeline.tracker.conversations.sessions) == 1
    (document,) = wire.documents().values()
    assert agent_steps(document) == 2 and [r["kind"] for r in lineage_extra(document)["side_requests"]] == ["title"]


def test_a_one_shot_chat_that_nobody_quotes_stays_a_session_of_its_own() -> None:
    wire = Wire(1)
    question, other = wire.task(), wire.task()
    alone = wire.chat_call("You are a helpful assistant.", [user(question)], [])
    later = wire.chat_call("You are a support agent.", [user(other)], ["lookup_order"])
    wire.chat_answer(alone, "An answer.")
    wire.chat_answer(later, "Hello.")
    assert alone.call.scope.side is None and alone.call.scope.new_turn
    assert len(wire.documents()) == 2


def test_a_one_shot_that_finished_before_the_session_started_is_not_moved() -> None:
    """The documented limit: re-attaching needs the early request still in flight (its call may be
    recorded, and its file written, once it ends)."""
    wire = Wire(2)
    prompt = wire.task()
    title = wire.chat_call("You write short titles for chats.", [user(prompt)], [])
    wire.chat_answer(title, "A title")
    first = wire.chat_call("You are a support agent.", [user(prompt)], ["lookup_order"])
    wire.chat_answer(first, "Hello.")
    assert title.call.scope.side is None and title.call.scope.session_id != first.call.scope.session_id


# -- handoffs and apps that start every turn afresh (framework shapes) --------------------------


def test_a_handoff_takes_the_history_on_as_a_child_of_the_agent_that_handed_off() -> None:
    wire = Wire(3)
    prompt = wire.task()
    concierge = wire.chat_call("You are the concierge. Hand off to the writer when ready.", [user(prompt)], ["research", "handoff"])
    _, reply = wire.chat_answer(concierge, uses=[("call_h", "handoff", {"to_agent": "writer", "reason": "the research is done"})])
    history = [user(prompt), reply, chat_result("call_h", "Agent writer is now handling the request.")]
    writer = wire.chat_call("You are the writer. Write the final text.", history, ["publish"])
    _, written = wire.chat_answer(writer, uses=[("call_p", "publish", {})])
    more = wire.chat_call("You are the writer. Write the final text.", [*history, written, chat_result("call_p", "ok")], ["publish"])
    wire.chat_answer(more, "Published.")
    root = concierge.call.scope
    assert writer.call.scope.parent_id == root.agent_id and writer.call.scope.agent_id != root.agent_id
    assert writer.call.scope.delegated_by == "call_h" and more.call.scope.agent_id == writer.call.scope.agent_id
    (document,) = wire.documents().values()
    (sub,) = document["subagent_trajectories"]
    assert agent_steps(sub) == 2


def test_a_turn_that_starts_a_new_conversation_quoting_the_last_answer_stays_in_its_session() -> None:
    wire = Wire(4)
    sessions = []
    for _ in range(2):  # two sessions of one app at once
        outcome = wire.chat_call("You manage an editorial crew.", [user(wire.task())], ["delegate_work"])
        sessions.append(outcome)
    answers = [f"Final briefing {n}: {wire.task()}, with costs falling and a long history." for n in range(2)]
    for outcome, answer in zip(sessions, answers):
        wire.chat_answer(outcome, answer)
    follow_ups = [
        wire.chat_call("You manage an editorial crew.", [user(f"Improve this briefing:\n{answer}\nAdd one risk.")], ["delegate_work"])
        for answer in reversed(answers)
    ]
    for outcome, first in zip(follow_ups, reversed(sessions)):
        assert outcome.call.scope.session_id == first.call.scope.session_id and outcome.call.scope.new_turn
        assert outcome.call.scope.turn == 2 and outcome.call.scope.parent_id is None
        wire.chat_answer(outcome, "Done.")
    assert len(wire.documents()) == 2
