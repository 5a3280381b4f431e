"""AutoGen AgentChat: a coordinator delegating to agents as tools and to a selector group chat.

Per session (two at once, two user turns each): the coordinator (an AssistantAgent, streamed)
calls `research` twice in parallel, each running a fresh researcher agent that calls a plain
tool and, for one task, `fact_check` (a fact-checker agent: nested delegation); then `review`,
a SelectorGroupChat of a critic and an editor whose speaker is chosen by a model call (a side
request). In turn 2 it gives one research task to two researchers at once: their first requests
are byte-identical, told apart only by the calls they answer and by what follows.

Truth: every agent gets its own model client, tagged with its truth scope (a new conversation
per delegation: workers are built fresh for each task); the selector's client is tagged side.
"""

from __future__ import annotations

import asyncio
import re

import truth
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import SelectorGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient
from harness import API_KEY, MODEL, run
from scripted import Chat, Reply, call, calls, say

TOPICS = {"s1": "tidal power", "s2": "urban beekeeping"}
PROMPTS = {"1": "Write a briefing on {topic}.", "2": "Add one risk to the briefing on {topic}."}


def respond(chat: Chat) -> Reply:
    done = len(chat.tool_results_since_last_user())
    task = chat.user_texts[0] if chat.user_texts else ""
    if "You are the coordinator" in chat.system:
        topic = re.search(r"briefing on (.+?)\.", task).group(1)
        if len(chat.user_texts) == 1:
            if done == 0:
                return calls(
                    ("research", {"task": f"Research the economics of {topic}"}), ("research", {"task": f"Research the history of {topic}"})
                )
            if done == 2:
                return call("review", task=f"Review this draft briefing on {topic}: costs are falling, history is long.")
            return say(f"Briefing on {topic}: costs are falling and the history is long. Reviewed and approved.")
        if done == 0:  # the same task twice at once: two researchers whose first requests are byte-identical
            return calls(("research", {"task": f"Find one risk of {topic}"}), ("research", {"task": f"Find one risk of {topic}"}))
        return say(f"Briefing on {topic}, with one risk added: supply is uncertain.")
    if "You are a researcher" in chat.system:
        if done == 0:
            if "economics" in task:
                return calls(("lookup", {"query": task}), ("fact_check", {"task": f"Check that {task.lower()} is well documented"}))
            return call("lookup", query=task)
        return say(f"Findings for '{task}': three sources agree.")
    if "You are a fact checker" in chat.system:
        return say(f"Verified: {task}.")
    if "You are the critic" in chat.system:
        return say("Critique: the draft needs one concrete number.")
    if "You are the editor" in chat.system:
        return say("Edited: added a number. APPROVED")
    if "select the next role" in chat.everything():
        return say("editor" if "Critique:" in chat.everything() else "critic")
    raise ValueError(f"no script for system prompt {chat.system[:60]!r}")


class TaggedClient(OpenAIChatCompletionClient):
    """A model client whose every call is labelled with one truth scope."""

    def __init__(self, scope: truth.Scope, base_url: str) -> None:
        super().__init__(model=MODEL, base_url=base_url, api_key=API_KEY)
        self.truth_scope = scope

    async def create(self, *args, **kwargs):
        with truth.scope(self.truth_scope):
            return await super().create(*args, **kwargs)

    async def create_stream(self, *args, **kwargs):
        with truth.scope(self.truth_scope):
            async for item in super().create_stream(*args, **kwargs):
                yield item


def lookup(query: str) -> str:
    """Search the team's notes."""
    return f"Notes on {query}: three sources."


def app(base_url: str):
    def worker(name: str, system: str, tools: list | None = None) -> tuple[AssistantAgent, truth.Scope]:
        scope = truth.new_agent(name)
        agent = AssistantAgent(name, TaggedClient(scope, base_url), system_message=system, tools=tools, max_tool_iterations=3)
        return agent, scope

    async def fact_check(task: str) -> str:
        """Have a fact checker verify a claim."""
        checker, _ = worker("fact_checker", "You are a fact checker. Verify the claim you are given.")
        result = await checker.run(task=task)
        return result.messages[-1].to_text()

    async def research(task: str) -> str:
        """Give a research task to a new researcher."""
        researcher, scope = worker("researcher", "You are a researcher. Use lookup, and fact_check for claims.", [lookup, fact_check])
        with truth.scope(scope):  # its tools run here: a fact checker it starts is its child
            result = await researcher.run(task=task)
        return result.messages[-1].to_text()

    async def review(task: str) -> str:
        """Have the critic and the editor review a draft."""
        critic, _ = worker("critic", "You are the critic. Point out one weakness.")
        editor, _ = worker("editor", "You are the editor. Fix the draft and say APPROVED.")
        selector = TaggedClient(truth.Scope(truth.current().session, None, None, None, "speaker_selection"), base_url)
        team = SelectorGroupChat(
            [critic, editor], model_client=selector, termination_condition=TextMentionTermination("APPROVED") | MaxMessageTermination(4)
        )
        result = await team.run(task=task)
        return result.messages[-1].to_text()

    async def session(session_id: str, topic: str) -> None:
        s = truth.Session(session_id)
        root = truth.Scope(s, "coordinator", None, "coordinator")
        coordinator = AssistantAgent(
            "coordinator",
            TaggedClient(root, base_url),
            system_message="You are the coordinator. Delegate research and review, then answer.",
            tools=[research, review],
            max_tool_iterations=4,
            model_client_stream=True,
        )
        for index, prompt in PROMPTS.items():
            with s.turn(int(index), "coordinator"):
                await coordinator.run(task=prompt.format(topic=topic))

    async def main() -> None:
        await asyncio.gather(*(session(sid, topic) for sid, topic in TOPICS.items()))

    return main()


if __name__ == "__main__":
    run(
        "autogen-agentchat",
        ["autogen-agentchat", "autogen-ext", "openai", "httpx", "httpx2"],
        respond,
        app,
        {
            "sessions": len(TOPICS),
            "shape": "coordinator AssistantAgent (streamed) -> research x2 in parallel (agent as tool) -> fact_check (nested agent); "
            "review = SelectorGroupChat(critic, editor) with model-chosen speakers (side requests); turn 2 delegates one task twice in parallel (byte-identical first requests)",  # noqa: E501
        },
        PROMPTS,
    )
