"""What mitmproxy shows of each LLM call: one line in its log, a flow comment and a marker.

`Console` is a call sink (like the trajectory writer): the pipeline hands it every finished call
with its scope, and it logs one line on the "agent_lineage" logger, so mitmdump prints it and
`termlog_verbosity` applies. The addon also tells it each request as soon as it is scoped, which
is what lets a new session, a new turn and a new subagent stand out, and gets back the agent's
place in the tree for the flow's comment. No mitmproxy import: the addon decides whether the
terminal takes colour. The line format is documented in the README ("The console line"):

    ● claude-code cf26c84a t1  main NEW SESSION  messages claude-sonnet-4-5  200  0.41s→2.30s  in 12.4k (11.9k cached) out 312  tools Read, Task  by harness-header+fresh-user-message
"""  # noqa: E501

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from .atif import agent_identity
from .model import Call, Scope

log = logging.getLogger("agent_lineage")

MODES = ("line", "verbose", "off")
LINEAGE_KEY = "agent_lineage.lineage"  # flow.metadata: the call's lineage record
SIDE_MARKER, SUBAGENT_MARKER = ":paperclip:", ":arrow_right_hook:"
SHORT_ID = 8  # the last characters of an id: UUIDv7 ids (Codex) share their first ones
API_LABELS = {"openai-chat": "chat", "openai-responses": "responses", "anthropic-messages": "messages"}
PATH_SEPARATOR = " › "
_CLIENT_GONE = re.compile(r"client (disconnected|closed|reset|went away)", re.I)

# The mark column: what this call starts, at a glance (also without colour).
MARK_SESSION, MARK_TURN, MARK_SUBAGENT, MARK_SIDE, MARK_STEP = "●", "▶", "↳", "·", " "

# ANSI SGR codes per style. Session ids take one of SESSION_COLORS, chosen by the id, so the
# lines of concurrent sessions tell apart.
STYLES = {
    "client": "1",
    "session-event": "1;7;32",
    "turn-event": "1;36",
    "subagent-event": "1;35",
    "side": "2;33",
    "ok": "32",
    "warn": "1;33",
    "error": "1;31",
    "dim": "2",
    "tools": "36",
}
SESSION_COLORS = ("34", "35", "36", "94", "95", "96")  # not the status colours


@dataclass(slots=True)
class Outcome:
    """How a call ended, as the console shows it."""

    label: str
    style: str  # ok | warn | error

    @property
    def failed(self) -> bool:
        return self.style != "ok"


@dataclass(slots=True)
class Placement:
    """Where a call's agent sits, as the console saw it when the request was scoped."""

    event: str | None  # what the call starts: session | subagent | turn | None
    path: list[str]  # root first: main › 4195937a › aa0bac85 (… when an ancestor was never seen)


class Console:
    """What mitmproxy's UIs show of each LLM call: its line in the log (a call sink; `mode` is the
    `lineage_console` option), and its flow comment, marker and lineage record.

    `begin` is called when a request has been scoped, in request order, so a session, subagent
    or turn is new on its first request; `add` when the call has ended."""

    def __init__(self, mode: str = "line", color: bool = False) -> None:
        self.mode = mode
        self.color = color
        self._parents: dict[str, str | None] = {}  # agent id seen -> its parent's id
        self._sessions: dict[str, set[str]] = {}  # session id seen -> its agents seen
        self._placements: dict[str, Placement] = {}  # exchange id -> placement, until the call ends

    def begin(self, call: Call) -> Placement | None:
        scope = call.scope
        assert scope is not None
        if scope.pending:  # no session yet: placed when it is claimed
            return None
        placement = Placement(self._learn(scope), self.path(scope))
        self._placements[call.exchange_id] = placement
        return placement

    def add(self, call: Call) -> None:
        scope: Scope | None = call.scope
        placement = self._placements.pop(call.exchange_id, None)
        if scope is None or call.api == "http" or self.mode == "off":  # HEAD probes are no LLM calls
            return
        if scope.pending:  # a side request no session claimed: its ids are placeholders
            placement = Placement(None, ["?"])
        elif placement is None:  # a side request claimed after it was sent, or a WebSocket call
            placement = Placement(self._learn(scope), self.path(scope))
        outcome = call_outcome(call)
        log.log(logging.WARNING if outcome.failed else logging.INFO, self.line(call, placement, outcome))

    def line(self, call: Call, placement: Placement, outcome: Outcome) -> str:
        """Groups two spaces apart, the words of a group one (README: "The console line");
        the client name is padded so that session ids line up."""
        scope = call.scope
        assert scope is not None
        event = placement.event
        color = self._session_color(scope.session_id)
        where = [
            self._style(f"{event}-event" if event else "dim", _mark(scope, event)),
            self._style("client", f"{client_name(call, scope):<11}"),
            self._style(color, short_id(scope.session_id)),
            f"t{scope.turn}",
            PATH_SEPARATOR.join(placement.path[:1] + [self._style(color, name) for name in placement.path[1:]]),
        ]
        if event is not None:
            where.append(self._style(f"{event}-event", f"NEW {event.upper()}"))
        if side := scope.side or call.side:
            where.append(self._style("side", f"side:{side}"))
        groups = [
            " ".join(where),
            f"{API_LABELS.get(call.api, call.api)} {call.response.model or call.model or '?'}",
            self._style(outcome.style, outcome.label),
            timing(call),
        ]
        if tokens := token_counts(call):
            groups.append(tokens)
        if tools := tool_summary(call):
            groups.append(self._style("tools", f"tools {tools}"))
        groups.append(self._style("dim", f"by {deciding_evidence(scope)}"))
        text = "  ".join(groups)
        if self.mode == "verbose":
            text += "\n    " + self._style("dim", verbose_details(call, scope))
        return text

    def session_evicted(self, session_id: str) -> None:
        for agent_id in self._sessions.pop(session_id, set()):
            self._parents.pop(agent_id, None)

    def close(self) -> None:
        self._placements.clear()

    def _learn(self, scope: Scope) -> str | None:
        """Remember the scope's agent; say which of session, subagent or turn the call starts."""
        new_session = scope.session_id not in self._sessions
        new_agent = scope.agent_id not in self._parents
        if new_agent:
            self._parents[scope.agent_id] = scope.parent_id
            self._sessions.setdefault(scope.session_id, set()).add(scope.agent_id)
        if new_session:
            return "session"
        if scope.side:
            return None
        if new_agent and scope.depth > 0:
            return "subagent"
        if scope.new_turn and scope.depth == 0:
            return "turn"
        return None

    def path(self, scope: Scope) -> list[str]:
        """The agent under its ancestors, root first, as far as this console has seen them."""
        chain = [scope.agent_id]
        parent = scope.parent_id
        while parent is not None and len(chain) <= scope.depth:
            chain.append(parent)
            parent = self._parents.get(parent)
        names = [short_id(agent_id) for agent_id in reversed(chain)]
        if len(chain) == scope.depth + 1:
            names[0] = "main"
        else:
            names.insert(0, "…")
        return names

    def _session_color(self, session_id: str) -> str:
        return SESSION_COLORS[sum(session_id.encode()) % len(SESSION_COLORS)]

    def _style(self, style: str, text: str) -> str:
        if not self.color:
            return text
        return f"\x1b[{STYLES.get(style, style)}m{text}\x1b[0m"


def flow_comment(scope: Scope, placement: Placement | None) -> str:
    """session · agent path · turn · side kind: the flow's comment in mitmweb and the console."""
    if placement is None:
        return f"side:{scope.side} · session not known yet"
    parts = [f"session {short_id(scope.session_id)}", PATH_SEPARATOR.join(placement.path), f"turn {scope.turn}"]
    if scope.side:
        parts.append(f"side:{scope.side}")
    return " · ".join(parts)


def flow_marker(scope: Scope) -> str:
    """A mitmproxy marker (emoji short code) for side requests and for subagents' calls."""
    if scope.side:
        return SIDE_MARKER
    return SUBAGENT_MARKER if scope.depth > 0 else ""


def lineage_record(call: Call, placement: Placement | None) -> dict:
    """What the "LLM call" content view reads back from flow.metadata (saved with the flow)."""
    scope = call.scope
    assert scope is not None
    return {
        "session": scope.session_id,
        "agent": scope.agent_id,
        "parent": scope.parent_id,
        "path": placement.path if placement else [],
        "turn": scope.turn,
        "side": scope.side,
        "new_messages": len(call.new_messages),
        "evidence": dict(scope.evidence),
    }


def _mark(scope: Scope, event: str | None) -> str:
    if event == "session":
        return MARK_SESSION
    if event == "subagent":
        return MARK_SUBAGENT
    if event == "turn":
        return MARK_TURN
    return MARK_SIDE if scope.side else MARK_STEP


def short_id(agent_or_session_id: str) -> str:
    return agent_or_session_id[-SHORT_ID:]


def client_name(call: Call, scope: Scope) -> str:
    """The harness name (claude-code, codex, opencode) or the user agent's product (openai-python)."""
    name, _ = agent_identity(scope.client_name, call.headers.get("user-agent", ""))
    return name


def call_outcome(call: Call) -> Outcome:
    error = call.error or ""
    if _CLIENT_GONE.search(error):
        return Outcome("client gone", "warn")
    if call.status is None:
        return Outcome(f"failed: {_first_clause(error) or 'no response'}", "error")
    if call.status >= 400:
        return Outcome(f"HTTP {call.status}", "error")
    if error and call.response.complete:
        return Outcome(f"{call.status} error: {_first_clause(error)}", "error")
    if "response body" in error:  # the reader could not parse it (the client got it unchanged)
        return Outcome(f"{call.status} unreadable", "warn")
    if not call.response.complete:
        return Outcome(f"{call.status} cut", "warn")
    return Outcome(str(call.status), "ok")


def _first_clause(text: str, limit: int = 60) -> str:
    clause = text.split(";", 1)[0].strip()
    return clause if len(clause) <= limit else clause[: limit - 1] + "…"


def timing(call: Call) -> str:
    """Seconds to the response's first byte, then to its end: `0.41s→2.30s`."""
    first = _seconds(call.t_first_byte - call.t_start) if call.t_first_byte else "-"
    end = _seconds(call.t_end - call.t_start) if call.t_end else "-"
    return f"{first}→{end}"


def _seconds(value: float) -> str:
    return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


def token_counts(call: Call) -> str:
    usage = call.response.usage
    if usage.input_tokens is None and usage.output_tokens is None:
        return ""
    text = f"in {_count(usage.input_tokens)}"
    if usage.cache_read_tokens:
        text += f" ({_count(usage.cache_read_tokens)} cached)"
    return f"{text} out {_count(usage.output_tokens)}"


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def tool_summary(call: Call) -> str:
    """The tools the answer calls, in order, repeats counted: `Read×2, Task`."""
    output = call.response.output
    if output is None or not output.tool_calls:
        return ""
    counts = Counter(tool.name or "?" for tool in output.tool_calls)
    return ", ".join(name if n == 1 else f"{name}×{n}" for name, n in counts.items())


def deciding_evidence(scope: Scope) -> str:
    """What placed the call, compact: the rule that chose its agent, what linked it to its parent
    and, for a turn's first call, what opened the turn (`harness-header+quotes-tool-argument`)."""
    keys = ["agent", "session", "parent", "delegated_by"]
    if scope.new_turn:
        keys.append("turn")
    seen: list[str] = []
    for key in keys:
        value = scope.evidence.get(key)
        if value and (short := _evidence_name(value)) not in seen:
            seen.append(short)
    return "+".join(seen) or "?"


def _evidence_name(value: str) -> str:
    """`harness:header:x-claude-code-agent-id` -> harness-header; `side:quotes-session-prompt` ->
    quotes-session-prompt; `prefix:<id>` -> prefix."""
    head, _, rest = value.partition(":")
    if head == "harness":
        return f"harness-{rest.partition(':')[0] or 'id'}"
    if head in ("side", "pending", "fork-of") and rest:
        return rest.partition(":")[0]
    return head


def verbose_details(call: Call, scope: Scope) -> str:
    """The full ids and every piece of evidence, as key=value pairs."""
    started = datetime.fromtimestamp(call.t_start, UTC).isoformat(timespec="milliseconds")
    pairs = [
        ("session", scope.session_id),
        ("agent", scope.agent_id),
        ("parent", scope.parent_id or "-"),
        ("flow", call.exchange_id),
        ("started", started),
        ("stop", call.response.stop_reason or "-"),
    ]
    if scope.delegated_by:
        pairs.append(("delegated_by_call", scope.delegated_by))
    usage = call.response.usage
    if usage.cache_write_tokens:
        pairs.append(("cache_write", str(usage.cache_write_tokens)))
    if usage.reasoning_tokens:
        pairs.append(("reasoning", str(usage.reasoning_tokens)))
    if call.error:
        pairs.append(("error", call.error))
    pairs += [(f"evidence.{key}", value) for key, value in scope.evidence.items()]
    return " ".join(f"{key}={value}" for key, value in pairs)
