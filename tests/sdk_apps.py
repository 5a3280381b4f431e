"""Small tool-using agents on the real OpenAI and Anthropic SDKs, for the replay tests.

Each run sends what differs between two runs of a real app: the wall-clock time in its system
prompt, a fresh random user id (Anthropic `metadata.user_id`) and a random session header.
The "bash" tool is simulated (its output is a pure function of the command), so a re-run against
a replay upstream makes exactly the requests the recorded run made.
"""

from __future__ import annotations

import datetime
import json
import uuid

import anthropic
import openai

APPS = ("anthropic", "openai")
TOOL = "bash"


def prompt(text: str) -> str:
    """A task whose demo-upstream script runs one tool call, then answers."""
    return f'{text} [[script: tool bash {{"command": "echo tool-ok"}} ; say All done.]]'


def run_app(app: str, base_url: str, stream: bool, task: str) -> str:
    """Run the agent to its final answer."""
    system = f"You are a test agent. Current time: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}."
    headers = {"x-app-session": str(uuid.uuid4())}
    if app == "anthropic":
        return _anthropic(base_url, stream, system, headers, task)
    return _openai(base_url, stream, system, headers, task)


def _bash(command: str) -> str:
    return command.removeprefix("echo ") + "\n"


def _anthropic(base_url: str, stream: bool, system: str, headers: dict[str, str], task: str) -> str:
    client = anthropic.Anthropic(base_url=base_url, api_key="sk-fake", max_retries=0, default_headers=headers)
    tools = [{"name": TOOL, "description": "Run a shell command", "input_schema": {"type": "object"}}]
    messages: list[dict] = [{"role": "user", "content": prompt(task)}]
    user_id = str(uuid.uuid4())
    for _ in range(5):
        request = {
            "model": "demo-model",
            "max_tokens": 256,
            "system": system,
            "tools": tools,
            "messages": messages,
            "metadata": {"user_id": user_id},
        }
        if stream:
            with client.messages.stream(**request) as events:
                reply = events.get_final_message()
        else:
            reply = client.messages.create(**request)
        calls = [block for block in reply.content if block.type == "tool_use"]
        if not calls:
            return "".join(block.text for block in reply.content if block.type == "text")
        messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in reply.content]})
        results = [{"type": "tool_result", "tool_use_id": c.id, "content": _bash(c.input.get("command", ""))} for c in calls]
        messages.append({"role": "user", "content": results})
    raise AssertionError("no final answer after 5 calls")


def _openai(base_url: str, stream: bool, system: str, headers: dict[str, str], task: str) -> str:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-fake", max_retries=0, default_headers=headers)
    tools = [{"type": "function", "function": {"name": TOOL, "description": "Run a shell command", "parameters": {"type": "object"}}}]
    messages: list[dict] = [{"role": "system", "content": system}, {"role": "user", "content": prompt(task)}]
    for _ in range(5):
        if stream:
            text, calls = "", {}
            for chunk in client.chat.completions.create(model="demo-model", messages=messages, tools=tools, stream=True):
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                text += delta.content or ""
                for part in delta.tool_calls or []:
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += part.id or ""
                    call["name"] += (part.function.name or "") if part.function else ""
                    call["arguments"] += (part.function.arguments or "") if part.function else ""
            found = list(calls.values())
        else:
            message = client.chat.completions.create(model="demo-model", messages=messages, tools=tools).choices[0].message
            text = message.content or ""
            found = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]
        if not found:
            return text
        messages.append(
            {
                "role": "assistant",
                "content": text or None,
                "tool_calls": [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in found
                ],
            }
        )
        for c in found:
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": _bash(json.loads(c["arguments"]).get("command", ""))})
    raise AssertionError("no final answer after 5 calls")
