"""smolagents: a manager ToolCallingAgent with managed agents, two sessions on two threads.

Per session (two user turns, the manager keeps its memory between them): the manager calls its
managed agents `economist` and `historian` in parallel (smolagents runs parallel tool calls on a
thread pool); the economist calls a plain tool and its own managed `analyst` in parallel (nested).
In turn 2 the manager asks the economist again: a managed agent resets its memory on every
call, so that is a new conversation. smolagents sends tool results as user messages
("Observation: ...") and answers through a `final_answer` tool call.

Truth: `agent(...)` around each managed agent's call (smolagents copies the context into its
tool threads, so the parent is the scope in force where the manager runs its tools).
"""

from __future__ import annotations

import re
import threading

import truth
from harness import API_KEY, MODEL, run
from scripted import Chat, Reply, call, calls
from smolagents import OpenAIServerModel, ToolCallingAgent, tool

TOPICS = {"s1": "tidal power", "s2": "urban beekeeping"}
PROMPTS = {"1": "Write a briefing on {topic}.", "2": "Add one risk to the briefing on {topic}."}


def respond(chat: Chat) -> Reply:
    # smolagents merges consecutive user messages: a new task may follow the last observation in one message.
    conversation = chat.everything()
    turns = conversation.count("New task:\n")
    task = conversation[conversation.rfind("New task:\n") :]
    observed = task.count("Observation:")
    if "You are the manager" in chat.system:
        topic = re.search(r"briefing on (.+?)\.", task).group(1)
        if turns == 1:
            if observed == 0:
                return calls(
                    ("economist", {"task": f"Research the economics of {topic}"}),
                    ("historian", {"task": f"Research the history of {topic}"}),
                )
            return call("final_answer", answer=f"Briefing on {topic}: costs are falling and the history is long.")
        if observed == 0:
            return call("economist", task=f"Find one risk of {topic}")
        return call("final_answer", answer=f"Briefing on {topic}, with one risk added: supply is uncertain.")
    assigned = re.search(r"Task:\n(.+?)\n", task).group(1)
    if "You are the economist" in chat.system:
        if observed == 0:
            if "economics" in assigned:
                return calls(("lookup", {"query": assigned}), ("analyst", {"task": f"Explain what drives {assigned.lower()}"}))
            return call("lookup", query=assigned)
        return call("final_answer", answer=f"Findings for '{assigned}': three sources agree.")
    if "You are the historian" in chat.system:
        if observed == 0:
            return call("lookup", query=assigned)
        return call("final_answer", answer=f"History for '{assigned}': it goes back a century.")
    if "You are the analyst" in chat.system:
        return call("final_answer", answer=f"Analysis of '{assigned}': mostly scale.")
    raise ValueError(f"no script for system prompt {chat.system[-80:]!r}")


@tool
def lookup(query: str) -> str:
    """Search the team's notes.

    Args:
        query: what to look up.
    """
    return f"Notes on {query}: three sources."


class ManagedAgent(ToolCallingAgent):
    """A managed agent whose every call is a new conversation, child of the caller's scope."""

    def __call__(self, task: str, **kwargs):
        with truth.agent(self.name):
            return super().__call__(task, **kwargs)


def app(base_url: str) -> None:
    def model() -> OpenAIServerModel:
        return OpenAIServerModel(model_id=MODEL, api_base=base_url, api_key=API_KEY)

    def managed(name: str, description: str, **kwargs) -> ManagedAgent:
        return ManagedAgent(
            name=name, description=description, instructions=f"You are the {name}.", model=model(), verbosity_level=0, **kwargs
        )

    def session(session_id: str, topic: str) -> None:
        s = truth.Session(session_id)
        analyst = managed("analyst", "Explains what drives a trend.", tools=[])
        economist = managed("economist", "Researches economics.", tools=[lookup], managed_agents=[analyst])
        historian = managed("historian", "Researches history.", tools=[lookup])
        manager = ToolCallingAgent(
            tools=[], model=model(), managed_agents=[economist, historian], instructions="You are the manager.", verbosity_level=0
        )
        for index, prompt in PROMPTS.items():
            with s.turn(int(index), "manager"):
                manager.run(prompt.format(topic=topic), reset=index == "1")

    threads = [threading.Thread(target=session, args=item) for item in TOPICS.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    run(
        "smolagents",
        ["smolagents", "openai", "httpx", "httpx2"],
        respond,
        app,
        {
            "sessions": len(TOPICS),
            "shape": "manager ToolCallingAgent -> economist + historian in parallel (managed agents) -> analyst (managed by the economist, "
            "in parallel with a plain tool); turn 2 asks the economist again (a new conversation)",
        },
        PROMPTS,
    )
