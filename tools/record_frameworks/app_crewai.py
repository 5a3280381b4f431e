"""CrewAI, hierarchical process: a manager agent delegating to coworkers, two crews on two threads.

Per session (two user turns; each turn is one `kickoff`, the second quoting the first's answer,
as a chat app built on a crew carries its context): the manager delegates to the economist and
the historian in one response (CrewAI runs the two tool calls on a thread pool); the economist
calls a plain tool and, in parallel, `ask_analyst`: a tool that kicks off a crew of the analyst
(nested delegation; in a hierarchical crew only the manager gets the delegation tools). In turn 2 the manager
delegates to the historian once. CrewAI starts a new conversation for every task an agent
executes: each kickoff's manager, and each delegated task, is a new agent.

Truth: `agent(...)` around every `execute_task` (CrewAI copies the context into its tool
threads, so the parent is the agent whose tool call delegated the task).
"""

from __future__ import annotations

import os
import re
import threading

for name in ("CREWAI_DISABLE_TELEMETRY", "CREWAI_DISABLE_TRACKING", "OTEL_SDK_DISABLED"):
    os.environ[name] = "true"  # CrewAI reports to its own servers unless told not to: 127.0.0.1 only here
os.environ["CREWAI_TRACING_ENABLED"] = "false"

import truth  # noqa: E402
from crewai import LLM, Agent, Crew, Process, Task  # noqa: E402
from crewai.tools import tool  # noqa: E402
from harness import API_KEY, MODEL, run  # noqa: E402
from scripted import Chat, Reply, call, calls, say  # noqa: E402

TOPICS = {"s1": "tidal power", "s2": "urban beekeeping"}
PROMPTS = {"1": "Write a briefing on {topic}.", "2": "Add one risk to the briefing on {topic}. The briefing so far: {previous}"}


def topic_of(chat: Chat) -> str:
    return re.search(r"(tidal power|urban beekeeping)", "\n".join(chat.user_texts)).group(1)


def final(chat: Chat, text: str) -> Reply:
    """A final answer: plain text when the request declares tools (native calling), else CrewAI's text format."""
    return say(text if chat.tools else f"Thought: I now know the final answer\nFinal Answer: {text}")


def respond(chat: Chat) -> Reply:
    done = len(chat.tool_results_since_last_user())
    if "You are Editorial Manager" in chat.system:
        topic = topic_of(chat)
        if "Add one risk" not in chat.user_texts[0]:
            if done == 0:
                return calls(
                    (
                        "delegate_work_to_coworker",
                        {"task": f"Research the economics of {topic}", "context": f"A briefing on {topic}", "coworker": "Economist"},
                    ),
                    (
                        "delegate_work_to_coworker",
                        {"task": f"Research the history of {topic}", "context": f"A briefing on {topic}", "coworker": "Historian"},
                    ),
                )
            return final(chat, f"Briefing on {topic}: costs are falling and the history is long.")
        if done == 0:
            return call(
                "delegate_work_to_coworker",
                task=f"Find one historical risk of {topic}",
                context=f"A briefing on {topic}",
                coworker="Historian",
            )
        return final(chat, f"Briefing on {topic}, with one risk added: supply is uncertain.")
    if "You are Economist" in chat.system:
        topic = topic_of(chat)
        if done == 0:
            return calls(
                ("lookup", {"query": f"economics of {topic}"}),
                ("ask_analyst", {"question": f"What drives the costs of {topic}?"}),
            )
        return final(chat, f"Economics of {topic}: three sources agree, costs are driven by scale.")
    if "You are Historian" in chat.system:
        if done == 0:
            return call("lookup", query=f"history of {topic_of(chat)}")
        return final(chat, f"History of {topic_of(chat)}: it goes back a century.")
    if "You are Analyst" in chat.system:
        return final(chat, f"Analysis of {topic_of(chat)}: mostly scale.")
    raise ValueError(f"no script for system prompt {chat.system[:80]!r}")


@tool("lookup")
def lookup(query: str) -> str:
    """Search the team's notes."""
    return f"Notes on {query}: three sources."


class TracedAgent(Agent):
    """An agent whose every task is a new conversation, child of the scope in force."""

    def execute_task(self, *args, **kwargs):
        with truth.agent(self.role):
            return super().execute_task(*args, **kwargs)


def app(base_url: str) -> None:
    def llm() -> LLM:
        return LLM(model=f"openai/{MODEL}", base_url=base_url, api_key=API_KEY)

    def agent(role: str, goal: str, **kwargs) -> TracedAgent:
        return TracedAgent(role=role, goal=goal, backstory=f"{role} of a small editorial team.", llm=llm(), verbose=False, **kwargs)

    def session(session_id: str, topic: str) -> None:
        s = truth.Session(session_id)
        analyst = agent("Analyst", "Explain what drives a trend")

        @tool("ask_analyst")
        def ask_analyst(question: str) -> str:
            """Ask the analyst what drives a trend."""
            task = Task(description=question, expected_output="A short explanation.", agent=analyst)
            return str(Crew(agents=[analyst], tasks=[task], verbose=False).kickoff())

        economist = agent("Economist", "Research economics", tools=[lookup, ask_analyst])
        historian = agent("Historian", "Research history", tools=[lookup])
        manager = agent("Editorial Manager", "Deliver briefings by delegating", allow_delegation=True)
        previous = ""
        for index, prompt in PROMPTS.items():
            task = Task(description=prompt.format(topic=topic, previous=previous), expected_output="A short briefing.")
            crew = Crew(agents=[economist, historian], tasks=[task], process=Process.hierarchical, manager_agent=manager, verbose=False)
            with s.turn(int(index), None):  # the manager's conversation of this kickoff is the turn's root agent
                previous = str(crew.kickoff())

    threads = [threading.Thread(target=session, args=item) for item in TOPICS.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    run(
        "crewai",
        ["crewai", "openai", "httpx", "httpx2"],
        respond,
        app,
        {
            "sessions": len(TOPICS),
            "shape": "Crew(process=hierarchical): manager -> economist + historian in parallel (delegate_work_to_coworker) -> analyst "
            "(the economist's ask_analyst tool kicks off a one-agent crew); one kickoff per turn, turn 2 quoting turn 1's answer",
        },
        PROMPTS,
    )
