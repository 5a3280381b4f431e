"""LlamaIndex AgentWorkflow: a concierge with agents as tools, handing off to a writer.

Per session (two at once, two user turns each, one shared memory): the concierge calls
`research` twice in parallel (each runs a fresh researcher FunctionAgent; the economics one asks
an analyst agent in turn: nested), then hands off to the writer, who answers. In turn 2 the
concierge researches once more and answers itself. All calls are streamed, as FunctionAgent does.

Truth: every agent has its own LLM object, tagged with its truth scope. A handoff's target is
labelled a child of the agent that handed off: its first request carries that agent's history.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import truth
from harness import API_KEY, MODEL, run
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.llms.openai import OpenAI
from pydantic import PrivateAttr
from scripted import Chat, Reply, call, calls, say

TOPICS = {"s1": "tidal power", "s2": "urban beekeeping"}
PROMPTS = {"1": "Write a briefing on {topic}.", "2": "Add one risk to the briefing on {topic}."}


def respond(chat: Chat) -> Reply:
    done = len(chat.tool_results_since_last_user())
    task = chat.user_texts[0] if chat.user_texts else ""
    if "You are the concierge" in chat.system:
        topic = re.search(r"briefing on (.+?)\.", task).group(1)
        if len(chat.user_texts) == 1:
            if done == 0:
                return calls(
                    ("research", {"task": f"Research the economics of {topic}"}), ("research", {"task": f"Research the history of {topic}"})
                )
            return call("handoff", to_agent="writer", reason=f"the research on {topic} is complete")
        if done == 0:
            return call("research", task=f"Find one risk of {topic}")
        return say(f"Briefing on {topic}, with one risk added: supply is uncertain.")
    if "You are the writer" in chat.system:
        topic = re.search(r"briefing on (.+?)\.", task).group(1)
        return say(f"Briefing on {topic}: costs are falling and the history is long.")
    if "You are a researcher" in chat.system:
        if done == 0:
            if "economics" in task:
                return calls(("lookup", {"query": task}), ("ask_analyst", {"question": f"What drives {task.lower()}?"}))
            return call("lookup", query=task)
        return say(f"Findings for '{task}': three sources agree.")
    if "You are an analyst" in chat.system:
        return say(f"Analysis: {task} Mostly scale.")
    raise ValueError(f"no script for system prompt {chat.system[:60]!r}")


class TaggedOpenAI(OpenAI):
    """An LLM whose every call is labelled with one truth scope."""

    _truth_scope: Any = PrivateAttr(default=None)

    def tagged(self, scope: truth.Scope) -> TaggedOpenAI:
        self._truth_scope = scope
        return self

    async def achat(self, *args, **kwargs):
        with truth.scope(self._truth_scope):
            return await super().achat(*args, **kwargs)

    async def astream_chat(self, *args, **kwargs):
        stream = await super().astream_chat(*args, **kwargs)
        scope = self._truth_scope

        async def tagged():  # the request goes out on the first step of the stream
            with truth.scope(scope):
                async for item in stream:
                    yield item

        return tagged()


def lookup(query: str) -> str:
    """Search the team's notes."""
    return f"Notes on {query}: three sources."


def app(base_url: str):
    def llm(scope: truth.Scope) -> TaggedOpenAI:
        return TaggedOpenAI(model=MODEL, api_base=base_url, api_key=API_KEY).tagged(scope)

    async def ask_analyst(question: str) -> str:
        """Ask an analyst a question."""
        scope = truth.new_agent("analyst")
        analyst = FunctionAgent(name="analyst", system_prompt="You are an analyst. Answer briefly.", llm=llm(scope))
        return str(await analyst.run(user_msg=question))

    async def research(task: str) -> str:
        """Give a research task to a new researcher."""
        scope = truth.new_agent("researcher")
        researcher = FunctionAgent(
            name="researcher",
            system_prompt="You are a researcher. Use lookup, and ask_analyst for explanations.",
            llm=llm(scope),
            tools=[lookup, ask_analyst],
        )
        with truth.scope(scope):  # its tools run here: an analyst it asks is its child
            return str(await researcher.run(user_msg=task))

    async def session(session_id: str, topic: str) -> None:
        s = truth.Session(session_id)
        root = truth.Scope(s, "concierge", None, "concierge")
        writer = truth.new_agent("writer", s, parent_id="concierge")
        workflow = AgentWorkflow(
            agents=[
                FunctionAgent(
                    name="concierge",
                    description="Plans the work.",
                    system_prompt="You are the concierge. Research, then hand off to the writer.",
                    llm=llm(root),
                    tools=[research],
                    can_handoff_to=["writer"],
                ),
                FunctionAgent(
                    name="writer",
                    description="Writes briefings.",
                    system_prompt="You are the writer. Write the briefing.",
                    llm=llm(writer),
                    can_handoff_to=[],
                ),
            ],
            root_agent="concierge",
        )
        memory = ChatMemoryBuffer.from_defaults(token_limit=100_000)
        for index, prompt in PROMPTS.items():
            with s.turn(int(index), "concierge"):
                await workflow.run(user_msg=prompt.format(topic=topic), memory=memory)

    async def main() -> None:
        await asyncio.gather(*(session(sid, topic) for sid, topic in TOPICS.items()))

    return main()


if __name__ == "__main__":
    run(
        "llama-index",
        ["llama-index-core", "llama-index-llms-openai", "llama-index-workflows", "openai", "httpx", "httpx2"],
        respond,
        app,
        {
            "sessions": len(TOPICS),
            "shape": "AgentWorkflow(concierge, writer), streamed: concierge -> research x2 in parallel (agent as tool) -> ask_analyst (nested agent); "  # noqa: E501
            "concierge hands off to writer (child: a fork of its history); turn 2 researches once, concierge answers",
        },
        PROMPTS,
    )
