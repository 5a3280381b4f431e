"""End to end against a real NVIDIA Dynamo frontend: stamped lineage gives session affinity.

    agents (official SDKs) -> mitmdump -s addons/lineage.py --mode reverse:<frontend> -> Dynamo 1.6.1
                                                                  (KV router, session affinity,
                                                                   mocker engine with 2 workers)

Ten root sessions run at once, in three client styles:

- Claude Code style: Anthropic /v1/messages with `X-Claude-Code-Session-Id`, subagents with
  `x-claude-code-agent-id` (and `x-claude-code-parent-agent-id` when nested), `Agent` tool calls;
- Codex style: /v1/responses with `session-id` / `thread-id` / `x-codex-parent-thread-id`,
  `spawn_agent` tool calls;
- bare SDK apps: no ids at all, on /v1/chat/completions, /v1/responses and /v1/messages; a subagent
  is a new conversation whose first user message is the task of the parent's `delegate` call.

Streamed and not; parallel, sequential and nested subagents; two user turns per root session.

The mocker answers from a script (a replay trace, see scripts/dynamo): each request names its
scripted reply in `nvext.annotations`, and the frontend's tool-call parser turns the reply's
`<tool_call>` text into real tool calls of each API. Clients put exactly what the frontend returned
into their history, as SDK apps do; the addon learns the delegations from those responses.

Runs through one Dynamo frontend, each with its own mitmdump:

- stamped: the addon stamps lineage;
- native: Claude / Codex styles only, the addon only observes (`lineage_stamp=false`): Dynamo
  derives lineage from the harness headers itself;
- control: everything, nothing stamped and the harness ids stripped: no session information at all;
- interleaved: two conversations of one SDK app in a fixed order: one starts, runs its helpers and
  asks for a title while the other's delegation is open;
- and ids Dynamo cannot use (over 256 bytes, not ASCII), sent by an OpenCode-style client.

What Dynamo saw comes from its request trace (DYN_REQUEST_TRACE: the session and parent it parsed,
the worker), joined to requests through the frontend's JSON log, and, for non-streamed chat /
responses, `nvext.worker_id` in the body; what the addon decided comes from `lineage_calls_log`.
Everything is joined by each request's `x-request-id`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dynamo_support import dynamo, requests_seen

pytestmark = [pytest.mark.dynamo, pytest.mark.e2e]

if dynamo.find_python312() is None:
    pytest.skip(
        "a real Dynamo frontend needs Python 3.12 (none found: no python3.12 on PATH or in pyenv; set AGENT_LINEAGE_DYNAMO_PYTHON)",
        allow_module_level=True,
    )

import anthropic  # noqa: E402
import openai  # noqa: E402
import orjson  # noqa: E402

from conftest import Mitmdump  # noqa: E402

MODEL = dynamo.MODEL_NAME
EOS = "<|endoftext|>"
CLAUDE_UA = "claude-cli/2.1.197 (external, cli)"
CODEX_UA = "codex_exec/0.171.0 (Ubuntu 24.04; x86_64) xterm-256color"
IDS = uuid.UUID("5b0c8a52-7d1e-4a44-9a57-2f4c1fd0a001")  # namespace for the harness ids

# -- the scripted sessions -------------------------------------------------------------------------


@dataclass
class ToolCall:
    name: str
    arguments: dict


@dataclass
class Reply:
    text: str
    calls: list[ToolCall] = field(default_factory=list)

    def script(self) -> str:
        """What the model "generates": text, then hermes-style tool calls, then end of sequence."""
        blocks = "".join(f"<tool_call>{json.dumps({'name': c.name, 'arguments': c.arguments})}</tool_call>" for c in self.calls)
        return f"{self.text}{blocks}{EOS}"


@dataclass
class AgentSpec:
    name: str  # the logical agent, unique over the scenario: "<session>" or "<session>/<child>"
    task: str  # the first user message
    replies: list[Reply]
    parent: AgentSpec | None = None
    children: dict[str, AgentSpec] = field(default_factory=dict)  # task -> child
    second_turn: tuple[str, Reply] | None = None  # root agents: a second user turn

    @property
    def root(self) -> AgentSpec:
        return self if self.parent is None else self.parent.root

    def all_replies(self) -> list[Reply]:
        return self.replies + ([self.second_turn[1]] if self.second_turn else [])


@dataclass
class SessionSpec:
    name: str
    style: str  # claude | codex | bare
    api: str  # chat | responses | messages
    stream: bool
    shape: str  # parallel | sequential | nested
    root: AgentSpec

    def agents(self) -> list[AgentSpec]:
        found, stack = [], [self.root]
        while stack:
            agent = stack.pop()
            found.append(agent)
            stack.extend(agent.children.values())
        return found


TOOL_NAMES = {  # (delegation tool, its task argument, shell tool)
    "claude": ("Agent", "prompt", "Bash"),
    "codex": ("spawn_agent", "message", "shell"),
    "bare": ("delegate", "task", "bash"),
}


def make_session(name: str, style: str, api: str, stream: bool, shape: str) -> SessionSpec:
    """A root agent that looks around, delegates (in parallel, in sequence, or to a helper that
    itself delegates), answers, and then answers a second user turn."""
    delegate, argument, shell = TOOL_NAMES[style]
    topic = name.replace("-", " ")

    def call(task: str) -> ToolCall:
        if style == "claude":
            return ToolCall(delegate, {"description": task[:24], "prompt": task, "subagent_type": "general-purpose"})
        return ToolCall(delegate, {argument: task})

    def helper(label: str, parent: AgentSpec, nested: bool = False) -> AgentSpec:
        task = f"Helper task {label} for the {topic} session: count the lines of docs/{label}.md and report."
        child = AgentSpec(f"{parent.name}/{label}", task, [], parent=parent)
        if nested:
            grandchild = helper(f"{label}x", child)
            child.replies = [Reply("I will hand the counting on.", [call(grandchild.task)]), Reply(f"{label}: counted by my helper.")]
        else:
            child.replies = [
                Reply("Counting.", [ToolCall(shell, {"command": f"wc -l docs/{label}.md"})]),
                Reply(f"docs/{label}.md has 42 lines."),
            ]
        parent.children[task] = child
        return child

    root = AgentSpec(name, f"Please review the {topic} project and summarise its docs.", [])
    look = Reply("Let me look around.", [ToolCall(shell, {"command": "ls docs"})])
    if shape == "parallel":
        a, b = helper("alpha", root), helper("beta", root)
        root.replies = [look, Reply("Two helpers at once.", [call(a.task), call(b.task)]), Reply("Both docs have 42 lines.")]
    elif shape == "sequential":
        a, b = helper("alpha", root), helper("beta", root)
        root.replies = [
            look,
            Reply("First helper.", [call(a.task)]),
            Reply("Second helper.", [call(b.task)]),
            Reply("Both docs have 42 lines."),
        ]
    else:
        a = helper("alpha", root, nested=True)
        root.replies = [look, Reply("One helper, who has a helper.", [call(a.task)]), Reply("The doc has 42 lines.")]
    root.second_turn = (f"Thanks! Which {topic} doc is longest?", Reply("They are all 42 lines long."))
    return SessionSpec(name, style, api, stream, shape, root)


SESSIONS = [
    make_session("claude-live", "claude", "messages", True, "parallel"),
    make_session("claude-batch", "claude", "messages", False, "nested"),
    make_session("codex-live", "codex", "responses", True, "parallel"),
    make_session("codex-batch", "codex", "responses", False, "sequential"),
    make_session("chat-live", "bare", "chat", True, "parallel"),
    make_session("chat-batch", "bare", "chat", False, "nested"),
    make_session("responses-live", "bare", "responses", True, "sequential"),
    make_session("responses-batch", "bare", "responses", False, "parallel"),
    make_session("messages-live", "bare", "messages", True, "nested"),
    make_session("messages-batch", "bare", "messages", False, "sequential"),
]
SESSION_BY_NAME = {session.name: session for session in SESSIONS}
AGENTS = {agent.name: agent for session in SESSIONS for agent in session.agents()}
SESSION_OF = {agent.name: session for session in SESSIONS for agent in session.agents()}


TITLE_SYSTEM = "Write a short title for this conversation."


def title_prompt(session: SessionSpec) -> str:
    return f"Conversation so far:\n{session.root.task}\n\nReply with a title of at most five words."


def titled(session: SessionSpec) -> bool:
    """Bare SDK apps (in the `titles` run) also ask for a title once the first turn is done: a side
    request without tools that quotes the session's first prompt. It belongs to the session (its
    root agent), not to a new agent."""
    return session.style == "bare"


def scripted_replies() -> dict[str, str]:
    replies = {f"{agent.name}.{i}": reply.script() for agent in AGENTS.values() for i, reply in enumerate(agent.all_replies())}
    for session in SESSIONS:
        if titled(session):
            replies[f"{session.name}.title"] = Reply(f"Review of {session.name}").script()
    return replies


# -- harness identities ----------------------------------------------------------------------------


def harness_id(kind: str, agent: AgentSpec) -> str:
    if kind == "claude-agent":
        return "a" + hashlib.sha1(agent.name.encode()).hexdigest()[:16]
    return str(uuid.uuid5(IDS, f"{kind}:{agent.name}"))


def harness_headers(session: SessionSpec, agent: AgentSpec, turn: int) -> dict[str, str]:
    root = agent.root
    if session.style == "claude":
        headers = {"X-Claude-Code-Session-Id": harness_id("claude-session", root)}
        if agent.parent is not None:
            headers["x-claude-code-agent-id"] = harness_id("claude-agent", agent)
            if agent.parent.parent is not None:
                headers["x-claude-code-parent-agent-id"] = harness_id("claude-agent", agent.parent)
        return headers
    if session.style == "codex":
        session_id = harness_id("codex-thread", root)
        thread = harness_id("codex-thread", agent)
        parent = harness_id("codex-thread", agent.parent) if agent.parent else None
        metadata = {
            "session_id": session_id,
            "thread_id": thread,
            "turn_id": f"{thread}-turn-{turn}",
            "thread_source": "subagent" if parent else "user",
            "agent_name": "/root" if not parent else f"/root/{agent.name}",
        }
        headers = {"session-id": session_id, "thread-id": thread}
        if parent:
            headers["x-codex-parent-thread-id"] = parent
            headers["x-openai-subagent"] = "collab_spawn"
            metadata["parent_thread_id"] = parent
        headers["x-codex-turn-metadata"] = json.dumps(metadata)
        return headers
    return {}


# Headers Dynamo derives lineage from on its own (stripped for the control run).
DYNAMO_HARNESS_HEADERS = {
    "x-claude-code-session-id",
    "x-claude-code-agent-id",
    "x-claude-code-parent-agent-id",
    "session-id",
    "thread-id",
    "x-codex-parent-thread-id",
    "x-codex-turn-metadata",
}


# -- clients: one conversation per agent, in each wire API ------------------------------------------


@dataclass
class Turn:
    text: str
    calls: list[tuple[str, str, dict]]  # (call id, name, arguments)
    worker_in_body: int | None = None


def _worker_in_body(extra: dict | None) -> int | None:
    info = ((extra or {}).get("nvext") or {}).get("worker_id") or {}
    return info.get("decode_worker_id")


class Conversation:
    """An agent's history in one API, resent whole on every request, with what the frontend
    returned appended exactly as the SDK gave it."""

    def __init__(self, run: Run, session: SessionSpec, agent: AgentSpec) -> None:
        self.run, self.session, self.agent = run, session, agent
        self.style = session.style
        self.stream = session.stream
        delegate, argument, shell = TOOL_NAMES[session.style]
        self.tool_names = (delegate, shell)
        self.tool_params = {delegate: argument, shell: "command"}
        self.system = (
            f"You are the {session.name} agent."
            if agent.parent is None
            else f"You are a helper agent of {session.name}. Do the task and report briefly."
        )

    def nvext(self, key: str) -> dict:
        nvext = dynamo.replay_annotation(key)
        if not self.stream and self.session.api in ("chat", "responses"):
            nvext["extra_fields"] = ["worker_id"]
        return nvext

    def schema(self, name: str) -> dict:
        param = self.tool_params[name]
        return {"type": "object", "properties": {param: {"type": "string"}}, "required": [param]}


class ChatConversation(Conversation):
    def __init__(self, run, session, agent) -> None:
        super().__init__(run, session, agent)
        self.client = openai.OpenAI(base_url=f"{run.proxy.url}/v1", api_key="sk-not-a-secret", max_retries=0)
        self.messages: list[dict] = [{"role": "system", "content": self.system}, {"role": "user", "content": agent.task}]
        self.tools = [{"type": "function", "function": {"name": n, "parameters": self.schema(n)}} for n in self.tool_names]

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def add_results(self, results: list[tuple[str, str]]) -> None:
        self.messages += [{"role": "tool", "tool_call_id": i, "content": out} for i, out in results]

    def title(self, key: str, headers: dict) -> Turn:
        messages = [{"role": "system", "content": TITLE_SYSTEM}, {"role": "user", "content": title_prompt(self.session)}]
        completion = self.client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=64, extra_headers=headers, extra_body={"nvext": self.nvext(key)}
        )
        return Turn(completion.choices[0].message.content or "", [], _worker_in_body(completion.model_extra))

    def send(self, key: str, headers: dict) -> Turn:
        kwargs = dict(
            model=MODEL,
            messages=self.messages,
            tools=self.tools,
            max_tokens=1024,
            extra_headers=headers,
            extra_body={"nvext": self.nvext(key)},
        )
        worker = None
        if self.stream:
            text, calls = "", {}
            for chunk in self.client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    for piece in choice.delta.tool_calls or []:
                        entry = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                        entry["id"] = piece.id or entry["id"]
                        if piece.function:
                            entry["name"] += piece.function.name or ""
                            entry["arguments"] += piece.function.arguments or ""
            tool_calls = [calls[i] for i in sorted(calls)]
        else:
            completion = self.client.chat.completions.create(**kwargs)
            message = completion.choices[0].message
            text = message.content or ""
            tool_calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]
            worker = _worker_in_body(completion.model_extra)
        assistant: dict = {"role": "assistant", "content": text or None}
        if tool_calls:
            assistant["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in tool_calls
            ]
        self.messages.append(assistant)
        return Turn(text, [(c["id"], c["name"], json.loads(c["arguments"])) for c in tool_calls], worker)


class ResponsesConversation(Conversation):
    def __init__(self, run, session, agent) -> None:
        super().__init__(run, session, agent)
        headers = {"User-Agent": CODEX_UA} if self.style == "codex" else None
        self.client = openai.OpenAI(base_url=f"{run.proxy.url}/v1", api_key="sk-not-a-secret", max_retries=0, default_headers=headers)
        self.items: list[dict] = []
        if self.style == "codex":  # Codex: no instructions, the base prompt is a developer message
            self.items.append({"type": "message", "role": "developer", "content": [{"type": "input_text", "text": self.system}]})
        self.add_user(agent.task)
        self.tools = [{"type": "function", "name": n, "parameters": self.schema(n)} for n in self.tool_names]

    def add_user(self, text: str) -> None:
        if self.style == "codex":
            self.items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
        else:
            self.items.append({"role": "user", "content": text})

    def add_results(self, results: list[tuple[str, str]]) -> None:
        self.items += [{"type": "function_call_output", "call_id": i, "output": out} for i, out in results]

    def title(self, key: str, headers: dict) -> Turn:
        response = self.client.responses.create(
            model=MODEL,
            instructions=TITLE_SYSTEM,
            input=title_prompt(self.session),
            max_output_tokens=64,
            extra_headers=headers,
            extra_body={"nvext": self.nvext(key)},
        )
        return Turn(response.output_text, [], _worker_in_body(response.model_extra))

    def send(self, key: str, headers: dict) -> Turn:
        kwargs = dict(
            model=MODEL,
            input=self.items,
            tools=self.tools,
            max_output_tokens=1024,
            extra_headers=headers,
            extra_body={"nvext": self.nvext(key)},
        )
        if self.style == "codex":
            kwargs.update(
                store=False, parallel_tool_calls=True, tool_choice="auto", prompt_cache_key=harness_id("codex-thread", self.agent.root)
            )
        else:
            kwargs["instructions"] = self.system
        worker = None
        if self.stream:
            with self.client.responses.stream(**kwargs) as events:
                for _ in events:
                    pass
                response = events.get_final_response()
        else:
            response = self.client.responses.create(**kwargs)
            worker = _worker_in_body(response.model_extra)
        self.items += [item.model_dump(exclude_none=True) for item in response.output]
        calls = [(i.call_id, i.name, json.loads(i.arguments)) for i in response.output if i.type == "function_call"]
        return Turn(response.output_text, calls, worker)


class MessagesConversation(Conversation):
    def __init__(self, run, session, agent) -> None:
        super().__init__(run, session, agent)
        headers = {"User-Agent": CLAUDE_UA} if self.style == "claude" else None
        self.client = anthropic.Anthropic(base_url=run.proxy.url, api_key="sk-not-a-secret", max_retries=0, default_headers=headers)
        if self.style == "claude":
            first = [
                {"type": "text", "text": "<system-reminder>\nThe working directory is /repo.\n</system-reminder>\n"},
                {"type": "text", "text": agent.task},
            ]
            self.messages: list[dict] = [{"role": "user", "content": first}]
        else:
            self.messages = [{"role": "user", "content": agent.task}]
        self.tools = [{"name": n, "description": f"the {n} tool", "input_schema": self.schema(n)} for n in self.tool_names]
        if self.style == "claude":
            props = {"description": {"type": "string"}, "prompt": {"type": "string"}, "subagent_type": {"type": "string"}}
            self.tools[0]["input_schema"] = {"type": "object", "properties": props, "required": ["prompt"]}

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def add_results(self, results: list[tuple[str, str]]) -> None:
        self.messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": i, "content": out} for i, out in results]})

    def title(self, key: str, headers: dict) -> Turn:
        message = self.client.messages.create(
            model=MODEL,
            max_tokens=64,
            system=TITLE_SYSTEM,
            extra_headers=headers,
            messages=[{"role": "user", "content": title_prompt(self.session)}],
            extra_body={"nvext": self.nvext(key)},
        )
        return Turn("".join(b.text for b in message.content if b.type == "text"), [])

    def send(self, key: str, headers: dict) -> Turn:
        kwargs = dict(
            model=MODEL,
            max_tokens=1024,
            messages=self.messages,
            tools=self.tools,
            extra_headers=headers,
            extra_body={"nvext": self.nvext(key)},
        )
        if self.style == "claude":
            root = harness_id("claude-session", self.agent.root)
            kwargs["system"] = [
                {
                    "type": "text",
                    "text": "x-anthropic-billing-header: cc_version=2.1.197; cc_entrypoint=cli;"
                    + (" cc_is_subagent=true;" if self.agent.parent else ""),
                },
                {"type": "text", "text": self.system},
            ]
            kwargs["metadata"] = {"user_id": json.dumps({"device_id": "0" * 64, "account_uuid": "", "session_id": root})}
        else:
            kwargs["system"] = self.system
        if self.stream:
            with self.client.messages.stream(**kwargs) as events:
                message = events.get_final_message()
        else:
            message = self.client.messages.create(**kwargs)
        self.messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]})
        text = "".join(b.text for b in message.content if b.type == "text")
        return Turn(text, [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"])


CONVERSATIONS = {"chat": ChatConversation, "responses": ResponsesConversation, "messages": MessagesConversation}


# -- a run: all sessions at once through one mitmdump -------------------------------------------------


@dataclass
class Sent:
    label: str  # the x-request-id
    agent: str  # logical agent name
    session: str
    api: str
    stream: bool
    worker_in_body: int | None = None
    side: bool = False


class Run:
    def __init__(
        self, name: str, proxy: Mitmdump, strip_harness_ids: bool, titles: bool = False, after: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.proxy = proxy
        self.strip_harness_ids = strip_harness_ids
        self.titles = titles
        # request key -> the request key whose reply it waits for (a fixed interleaving)
        self.after = after or {}
        self.answered: dict[str, threading.Event] = defaultdict(threading.Event)
        self.sent: list[Sent] = []
        self.lock = threading.Lock()

    def send(self, key: str, request, headers: dict[str, str]) -> Turn:
        """`request(key, headers)`, after the request it must follow (if any) was answered."""
        if key in self.after:
            assert self.answered[self.after[key]].wait(60), f"{key} waited in vain for {self.after[key]}"
        turn = request(key, headers)
        self.answered[key].set()
        return turn

    def headers(self, session: SessionSpec, agent: AgentSpec, key: str, turn: int) -> dict[str, str]:
        headers = {} if self.strip_harness_ids else harness_headers(session, agent, turn)
        headers["x-request-id"] = f"{self.name}:{key}"
        return headers

    def run_agent(self, session: SessionSpec, agent: AgentSpec) -> str:
        conversation = CONVERSATIONS[session.api](self, session, agent)
        step, turn, answer = 0, 1, ""
        while True:
            key = f"{agent.name}.{step}"
            reply = self.send(key, conversation.send, self.headers(session, agent, key, turn))
            with self.lock:
                self.sent.append(Sent(f"{self.name}:{key}", agent.name, session.name, session.api, session.stream, reply.worker_in_body))
            step += 1
            expected = agent.all_replies()[step - 1]
            assert [name for _, name, _ in reply.calls] == [c.name for c in expected.calls], (key, reply)
            if reply.calls:
                conversation.add_results(self.run_tools(session, agent, reply.calls))
                continue
            answer = answer or reply.text
            if agent.second_turn and turn == 1:
                if self.titles and titled(session):
                    key = f"{agent.name}.title"
                    title = self.send(key, conversation.title, self.headers(session, agent, key, turn))
                    assert title.text == f"Review of {session.name}"
                    with self.lock:
                        self.sent.append(
                            Sent(f"{self.name}:{key}", agent.name, session.name, session.api, False, title.worker_in_body, side=True)
                        )
                turn = 2
                conversation.add_user(agent.second_turn[0])
                continue
            return answer

    def run_tools(self, session: SessionSpec, agent: AgentSpec, calls: list[tuple[str, str, dict]]) -> list[tuple[str, str]]:
        delegate, argument, _ = TOOL_NAMES[session.style]
        results: dict[str, str] = {}
        spawns = []
        for call_id, name, args in calls:
            if name == delegate:
                spawns.append((call_id, agent.children[args[argument]]))
            else:
                results[call_id] = "alpha.md\nbeta.md\n" if args["command"] == "ls docs" else "42 docs/file.md\n"
        if len(spawns) > 1:  # parallel delegation: the helpers run at the same time
            with ThreadPoolExecutor(len(spawns)) as pool:
                answers = list(pool.map(lambda spawn: self.run_agent(session, spawn[1]), spawns))
        else:
            answers = [self.run_agent(session, child) for _, child in spawns]
        for (call_id, child), answer in zip(spawns, answers):
            if session.style == "claude":
                answer += f"\nagentId: {harness_id('claude-agent', child)}"
            elif session.style == "codex":
                answer = json.dumps({"agent_id": harness_id("codex-thread", child), "status": answer})
            results[call_id] = answer
        return [(call_id, results[call_id]) for call_id, _, _ in calls]

    def play(self, sessions: list[SessionSpec]) -> None:
        with ThreadPoolExecutor(len(sessions)) as pool:
            for future in [pool.submit(self.run_agent, s, s.root) for s in sessions]:
                future.result()


@dataclass
class Observed:
    """One request as the client, the addon and Dynamo saw it."""

    sent: Sent
    status: int  # HTTP status (the addon's record)
    outcome: str | None  # the frontend's "request completed" status
    scope: dict  # the addon's decision (calls log)
    session: str | None  # what Dynamo parsed
    parent: str | None
    worker: int


def play_run(
    name: str,
    dynamo_frontend,
    workdir: Path,
    sessions: list[SessionSpec],
    *,
    stamp: bool,
    strip: bool,
    titles: bool = False,
    after: dict[str, str] | None = None,
) -> dict[str, Observed]:
    calls_log = workdir / f"calls-{name}.jsonl"
    # The flows are kept for `agent-lineage convert` when a decision needs explaining.
    proxy = Mitmdump(
        workdir,
        f"reverse:{dynamo_frontend.url}",
        "--set",
        f"lineage_calls_log={calls_log}",
        "--set",
        f"lineage_dir={workdir / ('traces-' + name)}",
        "--set",
        f"lineage_stamp={str(stamp).lower()}",
        "-w",
        str(workdir / f"flows-{name}.mitm"),
    )
    try:
        run = Run(name, proxy, strip_harness_ids=strip, titles=titles, after=after)
        run.play(sessions)
    finally:
        proxy.stop()
    calls = {}
    for line in calls_log.read_bytes().splitlines():
        call = orjson.loads(line)
        calls[call["headers"].get("x-request-id")] = call
    # Dynamo's view: its request trace and its log, written just after each response.
    deadline = time.monotonic() + 15
    while True:
        seen = requests_seen(dynamo_frontend.frontend_log, dynamo_frontend.trace)
        if all(seen.get(s.label, {}).get("status") for s in run.sent) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    observed = {}
    for sent in run.sent:
        call, dyn = calls.get(sent.label), seen.get(sent.label)
        assert call is not None, f"the addon recorded no call for {sent.label}"
        assert dyn is not None, f"Dynamo recorded no request {sent.label}"
        observed[sent.label] = Observed(sent, call["status"], dyn["status"], call["scope"], dyn["session"], dyn["parent"], dyn["worker"])
    return observed


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dynamo_frontend(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dynamo")
    t0 = time.monotonic()
    dynamo.setup(log=lambda message: print(message, flush=True))
    setup_seconds = time.monotonic() - t0
    replay = dynamo.encode_replies(scripted_replies(), workdir / "replies.jsonl")
    frontend = dynamo.Dynamo(workdir / "run", trace=workdir / "trace.jsonl", replay=replay, env={"DYN_LOGGING_JSONL": "1"})
    print(f"\nDynamo {dynamo.DYNAMO_VERSION}: setup {setup_seconds:.1f} s, start {frontend.started_in:.1f} s, {frontend.url}")
    yield frontend
    frontend.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, dynamo_frontend):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def stamped(dynamo_frontend, workdir):
    return play_run("stamped", dynamo_frontend, workdir, SESSIONS, stamp=True, strip=False)


@pytest.fixture(scope="module")
def native(dynamo_frontend, workdir):
    harness = [s for s in SESSIONS if s.style != "bare"]
    return play_run("native", dynamo_frontend, workdir, harness, stamp=False, strip=False)


@pytest.fixture(scope="module")
def control(dynamo_frontend, workdir):
    return play_run("control", dynamo_frontend, workdir, SESSIONS, stamp=False, strip=True)


@pytest.fixture(scope="module")
def interleaved(dynamo_frontend, workdir):
    """Two conversations of one OpenAI SDK app, in a fixed interleaving: chat-batch is told to
    delegate, and its helper starts only a moment later; meanwhile responses-batch starts (a new
    conversation that quotes no tool call), runs its own helpers, and asks for its title (a side
    request without tools, quoting its first prompt)."""
    sessions = [SESSION_BY_NAME["chat-batch"], SESSION_BY_NAME["responses-batch"]]
    after = {"responses-batch.0": "chat-batch.1", "chat-batch/alpha.0": "responses-batch.title"}
    return play_run("interleaved", dynamo_frontend, workdir, sessions, stamp=True, strip=False, titles=True, after=after)


# -- grouping --------------------------------------------------------------------------------------


def affinity_groups(observed: dict[str, Observed]) -> dict[str, list[Observed]]:
    """Requests that Dynamo's session affinity should keep on one worker: each root agent's own
    requests, and all requests of the subagents of one parent (children are bound by their parent)."""
    groups: dict[str, list[Observed]] = defaultdict(list)
    for seen in observed.values():
        agent = AGENTS[seen.sent.agent]
        key = agent.name if agent.parent is None else f"children of {agent.parent.name}"
        groups[key].append(seen)
    return groups


def workers(group: list[Observed]) -> set[int]:
    return {seen.worker for seen in group}


def without_run(label: str) -> str:
    return label.split(":", 1)[1]


# -- the tests -------------------------------------------------------------------------------------


def test_no_request_is_rejected(stamped, native, control):
    for run in (stamped, native, control):
        for label, seen in run.items():
            assert 200 <= seen.status < 300 and seen.outcome == "success", (label, seen.status, seen.outcome)
    assert len(stamped) == len(control) == sum(len(a.all_replies()) for a in AGENTS.values())


def test_dynamo_parsed_exactly_the_stamped_lineage(stamped):
    for label, seen in stamped.items():
        assert (seen.session, seen.parent) == (seen.scope["agent_id"], seen.scope["parent_id"]), label
        assert (seen.scope["side"] is not None) == seen.sent.side, label  # titles are side requests


def test_stamped_lineage_is_the_true_agent_tree(stamped):
    """One id per logical agent, distinct agents apart, each subagent's parent its real parent."""
    assert_true_agent_tree(stamped)


def assert_true_agent_tree(observed: dict[str, Observed]) -> None:
    """The lineage Dynamo parsed names one id per logical agent (side requests: their root's),
    distinct agents apart, and each agent's true parent. A failure names the addon's evidence for
    each wrongly placed agent's first request."""
    ids: dict[str, set[str]] = defaultdict(set)
    parents: dict[str, set[str | None]] = defaultdict(set)
    first: dict[str, Observed] = {}
    for seen in sorted(observed.values(), key=lambda s: int(s.sent.label.rsplit(".", 1)[1]) if s.sent.label[-1].isdigit() else 99):
        ids[seen.sent.agent].add(seen.session)
        parents[seen.sent.agent].add(seen.parent)
        first.setdefault(seen.sent.agent, seen)

    def why(name: str) -> str:
        seen = first[name]
        return f"{seen.sent.label}: {seen.session} <- {seen.parent}, evidence {seen.scope['evidence']}"

    split = [why(name) for name, found in ids.items() if len(found) != 1]
    assert not split, f"agents with several ids: {split}"
    agent_id = {name: next(iter(found)) for name, found in ids.items()}
    shared = [why(name) for name in agent_id if list(agent_id.values()).count(agent_id[name]) > 1]
    assert not shared, f"agents sharing an id: {shared}"
    misplaced = [
        why(name) for name, found in parents.items() if found != {agent_id[AGENTS[name].parent.name] if AGENTS[name].parent else None}
    ]
    assert not misplaced, f"agents under the wrong parent: {misplaced}"
    for session in SESSIONS:
        if session.root.name not in agent_id:
            continue
        if session.style == "claude":
            assert agent_id[session.root.name] == harness_id("claude-session", session.root)
            for agent in session.agents()[1:]:
                assert agent_id[agent.name] == harness_id("claude-agent", agent)
        elif session.style == "codex":
            for agent in session.agents():
                assert agent_id[agent.name] == harness_id("codex-thread", agent)


def test_stamped_sessions_and_their_subagents_each_stay_on_one_worker(stamped):
    for group, requests in affinity_groups(stamped).items():
        assert len(workers(requests)) == 1, (group, [(s.sent.label, s.worker) for s in requests])
    body_reported = [s for s in stamped.values() if s.sent.worker_in_body is not None]
    assert body_reported, "no non-streamed chat / responses request reported nvext.worker_id"
    assert all(s.sent.worker_in_body == s.worker for s in body_reported)


def test_harness_headers_alone_give_dynamo_the_same_lineage(stamped, native):
    """For Claude Code and Codex, Dynamo derives lineage from their own headers; what we stamp
    overrides it and must name exactly the same sessions and parents."""
    assert native
    for label, seen in native.items():
        assert seen.scope["agent_id"]  # the addon observed (and did not stamp)
        twin = stamped[f"stamped:{without_run(label)}"]
        assert (seen.session, seen.parent) == (twin.session, twin.parent), label
    for group, requests in affinity_groups(native).items():
        assert len(workers(requests)) == 1, group


def test_without_stamping_requests_of_a_session_spread(control):
    for seen in control.values():
        assert seen.session is None and seen.parent is None, seen.sent.label
    groups = affinity_groups(control)
    spread = [g for g, requests in groups.items() if len(workers(requests)) > 1]
    # Routing is random here (overlap credit 0, temperature 1): a group of n >= 4 requests stays on
    # one of two workers with probability 2^(1-n); most groups must spread.
    assert len(spread) * 2 > len(groups), {g: len(workers(r)) for g, r in groups.items()}


def test_sdk_conversations_started_while_another_delegates_are_not_its_subagents(interleaved):
    """While chat-batch's delegation is open (its helper not started yet), neither a new
    conversation of the same app nor that conversation's title request is chat-batch's subagent:
    the new conversation is a root session, the title a side request of its own session (stamped
    with its root's lineage, on its root's worker), and chat-batch's helper still gets its place."""
    for label, seen in interleaved.items():
        assert (seen.session, seen.parent) == (seen.scope["agent_id"], seen.scope["parent_id"]), label
    assert_true_agent_tree(interleaved)
    for label, seen in interleaved.items():
        assert (seen.scope["side"] is not None) == seen.sent.side, (label, seen.scope["evidence"])
    for group, requests in affinity_groups(interleaved).items():
        assert len(workers(requests)) == 1, (group, [(s.sent.label, s.worker) for s in requests])


def test_observed_table(stamped, native, control, capsys):
    names = {}

    def w(worker: int) -> str:
        return names.setdefault(worker, f"w{len(names)}")

    for worker in sorted({s.worker for run in (stamped, control) for s in run.values()}):
        w(worker)

    def describe(run: dict[str, Observed], group: str) -> str:
        requests = affinity_groups(run).get(group)
        if not requests:
            return "-"
        counts = defaultdict(int)
        for seen in requests:
            counts[w(seen.worker)] += 1
        return " ".join(f"{name}x{n}" for name, n in sorted(counts.items()))

    rows = [("session / group", "style", "api", "stream", "stamped", "native", "control")]
    for session in SESSIONS:
        for group in [session.root.name] + [f"children of {a.name}" for a in session.agents() if a.children]:
            rows.append(
                (
                    group,
                    session.style,
                    session.api,
                    "sse" if session.stream else "json",
                    describe(stamped, group),
                    describe(native, group),
                    describe(control, group),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    stamped_pinned = sum(len(workers(r)) == 1 for r in affinity_groups(stamped).values())
    control_pinned = sum(len(workers(r)) == 1 for r in affinity_groups(control).values())
    total = len(affinity_groups(stamped))
    lines.append(f"groups on one worker: stamped {stamped_pinned}/{total}, control {control_pinned}/{total}")
    with capsys.disabled():
        print("\n\nDynamo workers per session (wN x requests):\n" + "\n".join(lines))


def test_ids_dynamo_would_reject_or_ignore_are_made_safe(dynamo_frontend, workdir):
    """An OpenCode-style client whose session id Dynamo cannot use: over 256 bytes (Dynamo answers
    400 when it reads it from the harness header itself) or not ASCII (Dynamo ignores it: no
    affinity). Through the addon, Dynamo gets a safe derived id: 200, and the session is pinned."""
    import httpx

    long_id = "ses_" + "x" * 300
    odd_id = "séance-été-1".encode("latin-1")  # not ASCII on the wire

    def converse(url: str, run: str, session_id: bytes | str, n: int = 4) -> list[tuple[str, int]]:
        labels = []
        messages = [{"role": "user", "content": f"Hello from {run} {session_id!r}"}]
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(n):
                label = f"{run}:{i}"
                response = client.post(
                    "/v1/chat/completions",
                    headers={"x-session-id": session_id, "x-request-id": label},
                    json={"model": MODEL, "messages": messages, "max_tokens": 8},
                )
                labels.append((label, response.status_code))
                if response.status_code == 200:
                    messages += [
                        {"role": "assistant", "content": response.json()["choices"][0]["message"]["content"] or ""},
                        {"role": "user", "content": f"And step {i}?"},
                    ]
        return labels

    # Dynamo on its own: the oversized harness id is rejected, the non-ASCII one ignored.
    assert converse(dynamo_frontend.url, "ids-direct-long", long_id, n=1)[0][1] == 400
    assert converse(dynamo_frontend.url, "ids-direct-odd", odd_id, n=1)[0][1] == 200
    proxy = Mitmdump(
        workdir, f"reverse:{dynamo_frontend.url}", "--set", f"lineage_calls_log={workdir / 'calls-ids.jsonl'}", "--set", "lineage_dir="
    )
    try:
        long_run = converse(proxy.url, "ids-long", long_id)
        odd_run = converse(proxy.url, "ids-odd", odd_id)
    finally:
        proxy.stop()
    deadline = time.monotonic() + 15
    while True:
        seen = requests_seen(dynamo_frontend.frontend_log, dynamo_frontend.trace)
        if all(label in seen for label, _ in long_run + odd_run + [("ids-direct-odd:0", 200)]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for run in (long_run, odd_run):
        assert all(status == 200 for _, status in run), run
        lineage = {(seen[label]["session"], seen[label]["parent"]) for label, _ in run}
        assert len(lineage) == 1
        session, parent = lineage.pop()
        assert session and parent is None and session.isascii() and len(session.encode()) <= 256
        assert len({seen[label]["worker"] for label, _ in run}) == 1, run
    assert seen["ids-long:0"]["session"] != seen["ids-odd:0"]["session"]
    assert seen["ids-direct-odd:0"]["session"] is None  # Dynamo alone: no lineage, no affinity


def test_kv_simulation_agrees_in_direction_with_the_mockers_cache_hits(stamped, workdir):
    """`agent-lineage kv`'s lineage strategy, run on the stamped run's flows with Dynamo's two
    workers, predicts per request whether the mocker served more than its shared chat-template
    block (16 tokens) from cache."""
    from agent_lineage import kv, offline
    from agent_lineage.pipeline import Pipeline
    from agent_lineage.settings import Settings

    pipeline = Pipeline(Settings(stamp=False), [])
    calls = {c.exchange_id: c for c in offline.replay(offline.read_flows(workdir / "flows-stamped.mitm"), pipeline)}
    requests = kv.from_calls(calls.values())
    simulated = kv.simulate(requests, "lineage", workers=2, cache_tokens=10**9).per_request
    reported = [calls[r.label].response.usage.cache_read_tokens or 0 for r in requests]
    agree = sum((s > 16) == (r > 16) for s, r in zip(simulated, reported))
    assert len(requests) == len(stamped)
    assert agree >= 0.8 * len(requests), f"{agree} of {len(requests)} agree"
    assert 0.5 < sum(simulated) / sum(reported) < 1.5
