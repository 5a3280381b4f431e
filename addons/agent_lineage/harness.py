"""The harness table (harness.yaml): which client sent a call, and the ids and side requests it declares."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml

from .model import Call


class HarnessTableError(ValueError):
    """The harness table (ours or the user's) is not valid."""


@dataclass(slots=True)
class Selector:
    header: str | None = None
    body: tuple[str, ...] = ()
    json_key: str | None = None
    regex: re.Pattern[str] | None = None

    def raw(self, call: Call) -> Any:
        """The selected value as found (any JSON type), or None."""
        value: Any = call.headers.get(self.header) if self.header else _dig(call.fields, self.body)
        if self.json_key is not None:
            if isinstance(value, str):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError:
                    return None
            value = value.get(self.json_key) if isinstance(value, dict) else None
        return value

    def read(self, call: Call) -> str | None:
        """The selected value as an id string, or None."""
        value = self.raw(call)
        if value is None or isinstance(value, (dict, list)):
            return None
        value = str(value).strip()
        if self.regex is not None:
            match = self.regex.search(value)
            value = (match.group(1) if match.groups() else match.group(0)) if match else ""
        return value or None

    def describe(self) -> str:
        where = f"header:{self.header}" if self.header else "body:" + ".".join(self.body)
        return where + (f"#{self.json_key}" if self.json_key else "")


def is_one_shot(call: Call) -> bool:
    """The shape of a side request: no tools it may call, one or two messages, no tool results."""
    tools_usable = bool(call.tools) and call.fields.get("tool_choice") != "none"
    messages = [m for m in call.messages if m.role != "system"]
    return not tools_usable and len(messages) <= 2 and not any(m.tool_results or m.tool_calls for m in messages)


def _dig(fields: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = fields
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


@dataclass(slots=True)
class SideRule:
    kind: str
    tools_empty: bool | None = None
    max_tokens: int | None = None
    single_user_text: str | None = None
    has: Selector | None = None
    equals: tuple[Selector, str] | None = None

    def matches(self, call: Call) -> bool:
        if self.tools_empty is not None and (not call.tools) != self.tools_empty:
            return False
        if self.max_tokens is not None and call.fields.get("max_tokens") != self.max_tokens:
            return False
        if self.single_user_text is not None:
            if len(call.messages) != 1 or call.messages[0].text.strip() != self.single_user_text:
                return False
        if self.has is not None and self.has.raw(call) is None:
            return False
        if self.equals is not None and self.equals[0].read(call) != self.equals[1]:
            return False
        return True


@dataclass(slots=True)
class Client:
    name: str
    detect: list[Selector] = field(default_factory=list)
    user_agent: list[re.Pattern[str]] = field(default_factory=list)
    system_regex: list[re.Pattern[str]] = field(default_factory=list)
    root: list[Selector] = field(default_factory=list)
    agent: list[Selector] = field(default_factory=list)
    parent: list[Selector] = field(default_factory=list)
    turn: list[Selector] = field(default_factory=list)
    delegation_tools: frozenset[str] = frozenset()
    not_a_turn: list[re.Pattern[str]] = field(default_factory=list)
    subagent_marker: re.Pattern[str] | None = None
    system_noise: list[re.Pattern[str]] = field(default_factory=list)
    text_noise: list[re.Pattern[str]] = field(default_factory=list)
    agents_send_tools: bool = False  # every agent request declares tools: one without is a side request
    side: list[SideRule] = field(default_factory=list)

    def recognises(self, call: Call) -> bool:
        user_agent = call.headers.get("user-agent", "")
        return (
            any(s.read(call) for s in self.detect)
            or any(p.search(user_agent) for p in self.user_agent)
            or any(p.search(call.system) for p in self.system_regex)
        )


@dataclass(slots=True)
class HarnessIds:
    """What a client declares about one call; `evidence` names the selector behind each id."""

    client: str
    root: str | None = None
    agent: str | None = None
    parent: str | None = None
    turn: str | None = None
    side: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class HarnessTable:
    clients: list[Client]
    delegation_tools: frozenset[str]
    side: list[SideRule] = field(default_factory=list)  # side requests of any client
    chatter: list[re.Pattern[str]] = field(default_factory=list)  # every client's not_a_turn
    text_noise: list[re.Pattern[str]] = field(default_factory=list)  # every client's text_noise
    side_kinds: list[tuple[str, re.Pattern[str]]] = field(default_factory=list)  # what a one-shot request asks for

    def side_of(self, call: Call, ids: HarnessIds | None) -> str | None:
        """The side-request kind of a call: its client's rules first, then everyone's."""
        if ids is not None and ids.side:
            return ids.side
        kind = next((rule.kind for rule in self.side if rule.matches(call)), None)
        if kind is None and ids is not None and is_one_shot(call):
            client = self.client(ids.client)
            if client is not None and client.agents_send_tools:
                return self.one_shot_kind(call)
        return kind

    def one_shot_kind(self, call: Call) -> str:
        """What a one-shot request asks for (title, summary, ...), from its prompt; `one-shot` if unsure."""
        text = call.system + "\n" + "\n".join(m.text for m in call.messages[:2])
        return next((kind for kind, pattern in self.side_kinds if pattern.search(text)), "one-shot")

    def is_subagent(self, call: Call, ids: HarnessIds | None) -> bool | None:
        """Whether the client marks this request as a subagent's (None: it does not say). The marker
        proves a subagent; its absence proves a root only where the client's ids are on the wire
        too (a gateway that strips the ids, or a fork of the CLI, may drop the marker's meaning)."""
        client = self.client(ids.client) if ids else None
        if client is None or client.subagent_marker is None:
            return None
        if client.subagent_marker.search(call.system) is not None:
            return True
        return False if ids is not None and (ids.root or ids.agent) else None

    def stable_system(self, call: Call, ids: HarnessIds | None) -> str:
        """The system prompt without the parts the client varies per process."""
        return self.system_without_noise(ids.client if ids else None, call.system)

    def system_without_noise(self, client_name: str | None, system: str) -> str:
        client = self.client(client_name) if client_name else None
        for pattern in client.system_noise if client else ():
            system = pattern.sub("", system)
        return system

    def without_text_noise(self, text: str) -> str:
        """A user message without the blocks harnesses inject into it (Claude's system reminders)."""
        for pattern in self.text_noise:
            text = pattern.sub("", text)
        return text.strip()

    def is_chatter(self, text: str) -> bool:
        """Whether a user message is harness chatter (environment context, notifications), not
        something a person typed."""
        return any(p.search(text) for p in self.chatter)

    def identify(self, call: Call) -> HarnessIds | None:
        client = next((c for c in self.clients if c.recognises(call)), None)
        if client is None:
            return None
        ids = HarnessIds(client.name)
        for role in ("root", "agent", "parent", "turn"):
            for selector in getattr(client, role):
                value = selector.read(call)
                if value:
                    setattr(ids, role, value)
                    ids.evidence[role] = selector.describe()
                    break
        ids.side = next((rule.kind for rule in client.side if rule.matches(call)), None)
        return ids

    def identify_from_headers(self, headers: dict[str, str]) -> HarnessIds | None:
        """The client and its root, agent and parent ids when the request's headers alone decide
        them, as `identify` would with the body; None when the body could change any of them
        (an earlier client detected by its body, or a body selector tried before a header that
        answers). The ids' `side` is not decided here: side rules may read the body."""
        probe = Call(exchange_id="", api="", path="", client="", headers=headers, t_start=0.0)
        for client in self.clients:
            if client.recognises(probe):
                break
            if client.system_regex or any(s.body for s in client.detect):
                return None
        else:
            return None
        for role in ("root", "agent", "parent"):
            for selector in getattr(client, role):
                if selector.body:
                    return None
                if selector.read(probe):
                    break
        ids = self.identify(probe)
        if ids is not None:
            ids.side = None
        return ids

    def client(self, name: str) -> Client | None:
        return next((c for c in self.clients if c.name == name), None)

    def is_delegation(self, client_name: str | None, tool_name: str) -> bool:
        client = self.client(client_name) if client_name else None
        return tool_name in self.delegation_tools or (client is not None and tool_name in client.delegation_tools)


@functools.cache
def default_table() -> HarnessTable:
    """The built-in table, for readers that have no pipeline (the trajectory builder, `summary`)."""
    return load_table()


TOP_LEVEL_KEYS: dict[str, type] = {"clients": dict, "side": list, "side_kinds": list, "delegation_tools": list}
CLIENT_KEYS: dict[str, type] = {
    "detect": list, "root": list, "agent": list, "parent": list, "turn": list, "delegation_tools": list,
    "not_a_turn": list, "subagent_marker": str, "system_noise": list, "text_noise": list, "side": list,
    "agents_send_tools": bool,
}  # fmt: skip


def load_table(user_file: str | Path | None = None) -> HarnessTable:
    """Our table, with the user's file (if any) merged over it client by client."""
    raw = yaml.safe_load(resources.files(__package__).joinpath("harness.yaml").read_text())
    check_shape(raw, "harness.yaml")
    if user_file:
        try:
            user = yaml.safe_load(Path(user_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise HarnessTableError(f"cannot read harness file {user_file}: {e}") from None
        check_shape(user, str(user_file))
        for name, spec in (user.get("clients") or {}).items():
            raw["clients"][name] = {**raw["clients"].get(name, {}), **spec}
        for key in ("delegation_tools", "side", "side_kinds"):
            if key in user:
                raw[key] = user[key]
    return _compile(raw, str(user_file or "harness.yaml"))


def check_shape(raw: Any, source: str) -> None:
    """HarnessTableError naming the first key that is misspelt or of the wrong type."""
    if not isinstance(raw, dict):
        raise HarnessTableError(f"{source}: expected a mapping with `clients:`, got {type(raw).__name__}")
    _check_keys(raw, TOP_LEVEL_KEYS, source)
    for name, spec in (raw.get("clients") or {}).items():
        where = f"{source}: client {name!r}"
        if not isinstance(spec, dict):
            raise HarnessTableError(f"{where} must be a mapping, got {type(spec).__name__}")
        _check_keys(spec, CLIENT_KEYS, where)


def _check_keys(mapping: dict[str, Any], known: dict[str, type], where: str) -> None:
    for key, value in mapping.items():
        if key not in known:
            raise HarnessTableError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if value is not None and not isinstance(value, known[key]):
            raise HarnessTableError(f"{where}: `{key}` must be a {known[key].__name__}, got {type(value).__name__}")


def _compile(raw: dict[str, Any], source: str) -> HarnessTable:
    clients = []
    for name, spec in (raw.get("clients") or {}).items():
        try:
            clients.append(_client(name, spec))
        except (TypeError, ValueError, KeyError, re.error) as e:
            raise HarnessTableError(f"{source}: client {name!r}: {e}") from None
    try:
        side = [_side_rule(e) for e in raw.get("side") or []]
    except (TypeError, ValueError, KeyError, re.error) as e:
        raise HarnessTableError(f"{source}: side: {e}") from None
    chatter = [p for c in clients for p in c.not_a_turn]
    text_noise = [p for c in clients for p in c.text_noise]
    try:
        side_kinds = [(str(e["kind"]), re.compile(e["regex"])) for e in raw.get("side_kinds") or []]
    except (TypeError, KeyError, re.error) as e:
        raise HarnessTableError(f"{source}: side_kinds: {e}") from None
    return HarnessTable(clients, frozenset(raw.get("delegation_tools") or ()), side, chatter, text_noise, side_kinds)


def _client(name: str, spec: dict[str, Any]) -> Client:
    client = Client(name)
    for entry in spec.get("detect") or []:
        if "user_agent" in entry:
            client.user_agent.append(re.compile(entry["user_agent"]))
        elif "system_regex" in entry:
            client.system_regex.append(re.compile(entry["system_regex"]))
        else:
            client.detect.append(_selector(entry))
    for role in ("root", "agent", "parent", "turn"):
        setattr(client, role, [_selector(e) for e in spec.get(role) or []])
    client.delegation_tools = frozenset(spec.get("delegation_tools") or ())
    client.not_a_turn = [re.compile(p, re.S) for p in spec.get("not_a_turn") or []]
    if spec.get("subagent_marker"):
        client.subagent_marker = re.compile(spec["subagent_marker"])
    client.system_noise = [re.compile(p, re.M) for p in spec.get("system_noise") or []]
    client.text_noise = [re.compile(p, re.S) for p in spec.get("text_noise") or []]
    client.agents_send_tools = bool(spec.get("agents_send_tools", False))
    client.side = [_side_rule(e) for e in spec.get("side") or []]
    return client


def _selector(entry: dict[str, Any]) -> Selector:
    if not isinstance(entry, dict) or ("header" in entry) == ("body" in entry):
        raise ValueError(f"a selector needs exactly one of `header` or `body`: {entry!r}")
    unknown = set(entry) - {"header", "body", "json", "regex"}
    if unknown:
        raise ValueError(f"unknown selector keys {sorted(unknown)}")
    return Selector(
        header=entry["header"].lower() if "header" in entry else None,
        body=tuple(str(entry["body"]).split(".")) if "body" in entry else (),
        json_key=entry.get("json"),
        regex=re.compile(entry["regex"]) if "regex" in entry else None,
    )


def _side_rule(entry: dict[str, Any]) -> SideRule:
    unknown = set(entry) - {"kind", "tools_empty", "max_tokens", "single_user_text", "has", "equals"}
    if unknown or "kind" not in entry:
        raise ValueError(f"a side rule needs `kind` and known conditions: {entry!r}")
    equals = None
    if "equals" in entry:
        spec = dict(entry["equals"])
        value = spec.pop("value")
        equals = (_selector(spec), str(value))
    return SideRule(
        kind=entry["kind"],
        tools_empty=entry.get("tools_empty"),
        max_tokens=entry.get("max_tokens"),
        single_user_text=entry.get("single_user_text"),
        has=_selector(entry["has"]) if "has" in entry else None,
        equals=equals,
    )
