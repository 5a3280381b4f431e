"""An LLM call as a readable conversation: what the "LLM call" content view shows.

Pure: from a parsed Call (request, and response once read) and the lineage the addon recorded
to styled lines, `[(style, text), ...]` per line. Styles are mitmproxy console palette names
(`header`, `key`, `value`, `text`, `highlight`, `error`); mitmproxy 12 shows the plain text.
The request side shows the system prompt, the tools offered and the messages new since the
agent's previous call, the earlier ones folded into one line; the response side shows the
answer (reasoning, text, tool calls) and its usage. Both start with the call's lineage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from .model import Call, Message

Line = list[tuple[str, str]]
KEY_WIDTH = 12
FOLD_LINES = 40  # a longer text (system prompt, tool result) shows its first lines, then a fold line
ROLE_TITLES = {"tool": "tool results", "developer": "developer"}


@dataclass(slots=True)
class Lineage:
    """What the addon recorded about a call (flow.metadata), and the headers on the wire."""

    session: str | None = None
    agent: str | None = None
    parent: str | None = None
    path: list[str] = field(default_factory=list)  # short names, root first: main › 4195937a
    turn: int | None = None
    side: str | None = None
    new_messages: int | None = None  # how many of the request's messages are new to its agent
    evidence: dict[str, str] = field(default_factory=dict)
    stamped: dict[str, str] = field(default_factory=dict)  # lineage headers forwarded upstream
    client_sent: dict[str, str] = field(default_factory=dict)  # lineage headers the client sent

    @classmethod
    def from_record(cls, record: Any, stamped: dict[str, str], client_sent: dict[str, str]) -> Lineage:
        """From the dict kept in flow.metadata (saved with the flow), tolerating any shape."""
        record = record if isinstance(record, dict) else {}

        def text(key: str) -> str | None:
            value = record.get(key)
            return value if isinstance(value, str) else None

        def number(key: str) -> int | None:
            value = record.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        path = record.get("path")
        evidence = record.get("evidence")
        return cls(
            session=text("session"),
            agent=text("agent"),
            parent=text("parent"),
            path=[str(p) for p in path] if isinstance(path, list) else [],
            turn=number("turn"),
            side=text("side"),
            new_messages=number("new_messages"),
            evidence={str(k): str(v) for k, v in evidence.items()} if isinstance(evidence, dict) else {},
            stamped=stamped,
            client_sent=client_sent,
        )


def request_lines(call: Call, lineage: Lineage) -> list[Line]:
    stream = " · streamed" if call.stream else ""
    lines: list[Line] = [
        [
            (
                "header",
                f"{call.api} · {call.model or '?'}{stream} · {_plural(len(call.messages), 'message')}, {_plural(len(call.tools), 'tool')}",
            )
        ]
    ]
    lines += _lineage_lines(lineage, call.side)
    if call.system:
        lines += _section(f"system ({len(call.system):,} chars)")
        lines += _text_lines(call.system, "text")
    if call.tools:
        lines += _section("tools offered")
        lines.append([("text", ", ".join(tool.name for tool in call.tools))])
    new = _new_count(call, lineage)
    earlier = call.messages[: len(call.messages) - new]
    if earlier:
        roles = Counter(_role_title(m) for m in earlier)
        summary = ", ".join(f"{n} {role}" for role, n in roles.items())
        lines += _section(f"{_plural(len(earlier), 'earlier message')} folded ({summary})")
    known = "new since the agent's previous call" if lineage.new_messages is not None else "since the last answer"
    lines += _section(f"{_plural(new, 'message')} {known}")
    for message in call.messages[len(earlier) :]:
        lines += _message_lines(message)
    return lines


def response_lines(call: Call, lineage: Lineage) -> list[Line]:
    response = call.response
    status = f"HTTP {call.status}" if call.status is not None else "no response"
    stop = f" · stop {response.stop_reason}" if response.stop_reason else ""
    cut = "" if response.complete else " · incomplete"
    lines: list[Line] = [[("header", f"{call.api} · {response.model or call.model or '?'} · {status}{stop}{cut}")]]
    lines += _lineage_lines(lineage, call.side)
    if response.error:
        lines += _section("error")
        lines.append([("error", response.error)])
    if response.output is not None:
        lines += _message_lines(response.output)
    usage = response.usage
    if usage.input_tokens is not None or usage.output_tokens is not None:
        lines += _section("usage")
        cache = [
            f"{_n(n)} {what}" for n, what in ((usage.cache_read_tokens, "cached"), (usage.cache_write_tokens, "written to cache")) if n
        ]
        reasoning = f"{_n(usage.reasoning_tokens)} reasoning" if usage.reasoning_tokens else ""
        lines.append(_pair("input", f"{_n(usage.input_tokens)} tokens" + (f" ({', '.join(cache)})" if cache else "")))
        lines.append(_pair("output", f"{_n(usage.output_tokens)} tokens" + (f" ({reasoning})" if reasoning else "")))
    return lines


def plain_text(lines: list[Line]) -> str:
    return "\n".join("".join(text for _, text in line) for line in lines)


def _lineage_lines(lineage: Lineage, side: str | None) -> list[Line]:
    lines = _section("lineage")
    if lineage.session is None and not lineage.stamped:
        return lines + [[("text", "not scoped by agent-lineage (the addon did not see this request)")]]
    if lineage.session is not None:
        lines.append(_pair("session", lineage.session))
        where = " › ".join(lineage.path) if lineage.path else "?"
        lines.append(_pair("agent", f"{where}  ({lineage.agent})"))
        if lineage.parent:
            lines.append(_pair("parent", lineage.parent))
        if lineage.turn is not None:
            lines.append(_pair("turn", str(lineage.turn)))
    if lineage.side or side:
        lines.append(_pair("side", lineage.side or side or ""))
    for key, value in lineage.evidence.items():
        lines.append(_pair(f"by {key}", value))
    for name, value in lineage.stamped.items():
        lines.append(_pair("stamped", f"{name}: {value}"))
    for name, value in lineage.client_sent.items():
        lines.append(_pair("client sent", f"{name}: {value}"))
    return lines


def _message_lines(message: Message) -> list[Line]:
    lines = _section(_role_title(message))
    if message.reasoning:
        lines += _text_lines(message.reasoning, "highlight", prefix="reasoning: ")
    if message.text:
        lines += _text_lines(message.text, "text")
    for call in message.tool_calls:
        lines.append([("key", f"→ {call.name}"), ("text", f"  [{call.id}]")])
        lines += _text_lines(_arguments(call.arguments), "value", indent="    ")
    for result in message.tool_results:
        flag = "  (error)" if result.is_error else ""
        lines.append([("key", f"← {result.call_id}"), ("error" if result.is_error else "text", flag)])
        lines += _text_lines(result.content, "text", indent="    ")
    return lines


def _role_title(message: Message) -> str:
    if message.role == "user" and message.tool_results and not message.text:
        return "tool results"
    return ROLE_TITLES.get(message.role, message.role)


def _new_count(call: Call, lineage: Lineage) -> int:
    """How many trailing messages to show: as the tracker decided, else those after the last
    assistant message (the request's own additions)."""
    if lineage.new_messages is not None:
        return min(lineage.new_messages, len(call.messages))
    for i in range(len(call.messages) - 1, -1, -1):
        if call.messages[i].role == "assistant":
            return len(call.messages) - i - 1
    return len(call.messages)


def _arguments(arguments: str) -> str:
    """Tool arguments, pretty-printed when they are JSON."""
    try:
        return orjson.dumps(orjson.loads(arguments), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return arguments


def _section(title: str) -> list[Line]:
    return [[("header", f"── {title} ")]]


def _pair(key: str, value: str) -> Line:
    return [("key", f"{key:<{KEY_WIDTH}}"), ("value", value)]


def _text_lines(text: str, style: str, indent: str = "", prefix: str = "") -> list[Line]:
    rows = text.splitlines() or [""]
    shown = rows[:FOLD_LINES]
    lines: list[Line] = [[(style, f"{indent}{prefix if i == 0 else ''}{row}")] for i, row in enumerate(shown)]
    if len(rows) > len(shown):
        lines.append([("header", f"{indent}… {len(rows) - len(shown)} more lines folded")])
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"
