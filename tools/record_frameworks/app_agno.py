"""Agno teams: an editorial team whose members are a research team (nested) and a writer.

Per session (two at once as asyncio tasks, two user turns, the leader's history kept in an
in-memory db): the editorial leader delegates to the research team and to the writer in one
response (Agno runs the two tool calls concurrently); the research team's leader delegates to
an economist (who calls a plain tool) and a historian, also in parallel. In turn 2 the leader
delegates to the writer once more. Members keep no history: each delegation is a new conversation.
After every run the team makes a session summary (a side request: a fresh system prompt, the
conversation quoted in one user message, a JSON answer), which Agno then puts into the leader's
system prompt for the next turn.

Truth: `side(...)` around the summary, `agent(...)` around each member's run (Agno gives every tool call a copy of the caller's
context, so the parent is the leader whose tool call started it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re

os.environ["AGNO_TELEMETRY"] = "false"  # Agno reports runs to its own server unless told not to: 127.0.0.1 only here

import truth  # noqa: E402
from agno.agent import Agent  # noqa: E402
from agno.db.in_memory import InMemoryDb  # noqa: E402
from agno.models.openai import OpenAIChat  # noqa: E402
from agno.session.summary import SessionSummaryManager  # noqa: E402
from agno.team import Team  # noqa: E402
from harness import API_KEY, MODEL, run  # noqa: E402
from scripted import Chat, Reply, call, calls, say  # noqa: E402

TOPICS = {"s1": "tidal power", "s2": "urban beekeeping"}
PROMPTS = {"1": "Write a briefing on {topic}.", "2": "Add one risk to the briefing on {topic}."}


def topic_of(chat: Chat) -> str:
    return re.search(r"(tidal power|urban beekeeping)", chat.everything()).group(1)


def respond(chat: Chat) -> Reply:
    done = len(chat.tool_results_since_last_user())
    if "Analyze the following conversation" in chat.system:
        return say(json.dumps({"summary": f"The user asked for a briefing on {topic_of(chat)}.", "topics": [topic_of(chat)]}))
    if "You lead the editorial team" in chat.system:
        topic = topic_of(chat)
        if len(chat.user_texts) == 1:
            if done == 0:
                return calls(
                    ("delegate_task_to_member", {"member_id": "research-team", "task": f"Research the economics and history of {topic}"}),
                    ("delegate_task_to_member", {"member_id": "writer", "task": f"Outline a briefing on {topic}"}),
                )
            return say(f"Briefing on {topic}: costs are falling and the history is long.")
        if done == 0:
            return call("delegate_task_to_member", member_id="writer", task=f"Add one risk to the outline on {topic}")
        return say(f"Briefing on {topic}, with one risk added: supply is uncertain.")
    if "You lead the research team" in chat.system:
        topic = topic_of(chat)
        if done == 0:
            return calls(
                ("delegate_task_to_member", {"member_id": "economist", "task": f"Research the economics of {topic}"}),
                ("delegate_task_to_member", {"member_id": "historian", "task": f"Research the history of {topic}"}),
            )
        return say(f"Research on {topic}: costs are falling; a century of history.")
    if "You are the economist" in chat.system:
        if done == 0:
            return call("lookup", query=f"economics of {topic_of(chat)}")
        return say(f"Economics of {topic_of(chat)}: three sources agree.")
    if "You are the historian" in chat.system:
        return say(f"History of {topic_of(chat)}: it goes back a century.")
    if "You are the writer" in chat.system:
        return say(f"Outline for {topic_of(chat)}: costs, history, risks.")
    raise ValueError(f"no script for system prompt {chat.system[:80]!r}")


def lookup(query: str) -> str:
    """Search the team's notes.

    Args:
        query: what to look up.
    """
    return f"Notes on {query}: three sources."


def _tagged_run(run_method, name: str, args, kwargs):
    if kwargs.get("stream"):
        raise ValueError("the recording runs members without streaming")
    scope = truth.new_agent(name)  # a child of the scope in force: the leader's tool call
    result = run_method(*args, **kwargs)

    async def tagged():
        with truth.scope(scope):
            return await result

    return tagged()


class Member(Agent):
    """A team member whose every run is a new conversation in the truth."""

    def arun(self, *args, **kwargs):
        return _tagged_run(super().arun, self.name, args, kwargs)


class SideSummaries(SessionSummaryManager):
    """Agno's session summary, made after every run: a side request of the session, no agent's."""

    async def acreate_session_summary(self, *args, **kwargs):
        with truth.side("session_summary"):
            return await super().acreate_session_summary(*args, **kwargs)


class MemberTeam(Team):
    """A team that is itself a member: its leader's run is a new conversation in the truth."""

    def arun(self, *args, **kwargs):
        return _tagged_run(super().arun, self.name, args, kwargs)


def app(base_url: str, model_class: type = OpenAIChat, model_id: str = MODEL):
    def model():
        return model_class(id=model_id, base_url=base_url, api_key=API_KEY)

    async def session(session_id: str, topic: str) -> None:
        s = truth.Session(session_id)
        economist = Member(
            name="economist",
            role="Researches economics",
            instructions="You are the economist.",
            model=model(),
            tools=[lookup],
            telemetry=False,
        )
        historian = Member(
            name="historian", role="Researches history", instructions="You are the historian.", model=model(), telemetry=False
        )
        research = MemberTeam(
            name="research team",
            role="Researches topics",
            members=[economist, historian],
            instructions="You lead the research team.",
            model=model(),
            telemetry=False,
        )
        writer = Member(name="writer", role="Writes briefings", instructions="You are the writer.", model=model(), telemetry=False)
        editorial = Team(
            name="editorial team",
            members=[research, writer],
            instructions="You lead the editorial team.",
            model=model(),
            db=InMemoryDb(),
            add_history_to_context=True,
            enable_session_summaries=True,
            session_summary_manager=SideSummaries(model=model()),
            telemetry=False,
        )
        for index, prompt in PROMPTS.items():
            with s.turn(int(index), "editorial team"):
                await editorial.arun(prompt.format(topic=topic), session_id=f"session-{session_id}")

    async def main() -> None:
        await asyncio.gather(*(session(sid, topic) for sid, topic in TOPICS.items()))

    return main()


if __name__ == "__main__":
    run(
        "agno",
        ["agno", "openai", "httpx", "httpx2"],
        respond,
        app,
        {
            "sessions": len(TOPICS),
            "shape": "editorial Team -> research Team (nested: economist + historian in parallel) and writer, in parallel; turn 2 delegates to the writer; a session summary after each run (side)",  # noqa: E501
        },
        PROMPTS,
    )
