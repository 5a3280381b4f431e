"""The canonical key of a request, for `agent-lineage replay`: two runs of the same agent on the
same task send requests with the same key, although their ids, dates and timings differ.

What the key leaves out (docs/replay.md lists the rules with examples):

- headers (session ids, request ids, user agents, our own `x-dynamo-*` stamps);
- `cache_control` wherever it sits, the body's `metadata.user_id` and Codex's `client_metadata`
  (installation, session and turn ids, a start time), the random `nickname` in Codex's
  `spawn_agent` output;
- random ids (UUIDs, `toolu_…` / `call_…` / `resp_…`-style ids, long hex strings): each becomes
  `<id:N>`, N its order of first appearance in the request, so the same id quoted twice stays the
  same placeholder and a request quoting an earlier id still matches. The ids found, in that
  order, pair a live request's ids with the recorded one's (`RequestKey.ids`), which is how the
  replay puts the live ids back into recorded answers;
- dates and times inside system prompts, `<system-reminder>`, `<env>` and
  `<environment_context>` blocks; the wall time and chunk id of Codex's command output, the
  `duration_ms` of Claude Code's subagent result and task notification; the order of tool declarations;
- text matching the caller's own `ignore` patterns (a temporary directory, a host name).

JSON object keys are compared sorted (ids in keys are placeholders too); a JSON string holding a JSON object (Codex's tool outputs)
is compared as that object. Pure: no mitmproxy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

IGNORED = "<ignored>"
DROPPED_KEYS = frozenset({"cache_control"})
DROPPED_TOP_LEVEL = {"metadata": "user_id", "client_metadata": None}  # None: the whole field
RANDOM_OUTPUT_KEYS = frozenset({"nickname"})  # in a JSON tool output: Codex's spawn_agent picks one at random
SYSTEM_FIELDS = frozenset({"system", "instructions"})
SYSTEM_ROLES = frozenset({"system", "developer"})

_HEX = "[0-9a-fA-F]"
ID = re.compile(
    rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"  # UUIDs
    r"|\b[a-z]{2,10}_(?=[A-Za-z0-9-]*\d)[A-Za-z0-9-]{16,}\b"  # provider ids: msg_…, toolu_…, call_…, resp_…
    rf"|\b{_HEX}{{16,}}\b"  # long hex: agent ids, hashes
)
CONTEXT_BLOCK = re.compile(r"<(system-reminder|environment_context|env)>.*?</\1>", re.S)
DATE_TIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b"
)
# Timings and handles in tool outputs: Codex's command output, Claude Code's subagent result.
VOLATILE_OUTPUT = re.compile(
    r"(?m)^(Wall time: )[\d.]+(?= seconds$)|^(Chunk ID: )\w+$|^(duration_ms: )\d+|(<duration_ms>)\d+(?=</duration_ms>)"
)


@dataclass(frozen=True, slots=True)
class RequestKey:
    digest: str  # what requests are matched on
    canonical: dict[str, Any]  # method, path and canonical body: for telling what differs
    ids: tuple[str, ...]  # the random ids of the request, in placeholder order


def request_key(method: str, path: str, body: bytes | None, ignore: Sequence[re.Pattern[str]] = ()) -> RequestKey:
    ids: dict[str, int] = {}
    canon = _Canonical(ids, ignore)
    try:
        document = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        document = None
        content: Any = canon.text(body.decode("utf-8", "replace"), False) if body else ""
    else:
        content = canon.body(document)
    canonical = {"method": method.upper(), "path": canon.text(path, False), "body": content}
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return RequestKey(digest, canonical, tuple(ids))


class _Canonical:
    def __init__(self, ids: dict[str, int], ignore: Sequence[re.Pattern[str]]) -> None:
        self.ids = ids
        self.ignore = ignore

    def body(self, document: Any) -> Any:
        if not isinstance(document, dict):
            return self.value(document, False)
        kept = {}
        for key, value in document.items():
            if key in DROPPED_TOP_LEVEL:
                inner = DROPPED_TOP_LEVEL[key]
                if inner is None or not isinstance(value, dict):
                    continue
                value = {k: v for k, v in value.items() if k != inner}
            kept[key] = self.value(value, key in SYSTEM_FIELDS)
        return _sort_tools(kept)

    def value(self, value: Any, system: bool) -> Any:
        if isinstance(value, dict):
            system = system or value.get("role") in SYSTEM_ROLES
            # In the order sent (ids are numbered in order of appearance); keys may be ids too.
            return _sort_tools({self.text(k, False): self.value(v, system) for k, v in value.items() if k not in DROPPED_KEYS})
        if isinstance(value, list):
            return [self.value(v, system) for v in value]
        if isinstance(value, str):
            if value.startswith("{") and value.endswith("}"):
                try:
                    inner = orjson.loads(value)
                except orjson.JSONDecodeError:
                    pass
                else:
                    if isinstance(inner, dict):
                        inner = {k: v for k, v in inner.items() if k not in RANDOM_OUTPUT_KEYS}
                        return {"<json>": self.value(inner, system)}
            return self.text(value, system)
        return value

    def text(self, text: str, system: bool) -> str:
        for pattern in self.ignore:
            text = pattern.sub(IGNORED, text)
        text = VOLATILE_OUTPUT.sub(lambda m: f"{m[1] or m[2] or m[3] or m[4]}<n>", text)
        if system:
            text = DATE_TIME.sub("<date>", text)
        elif "<" in text:
            text = CONTEXT_BLOCK.sub(lambda m: DATE_TIME.sub("<date>", m[0]), text)
        return ID.sub(self._placeholder, text)

    def _placeholder(self, match: re.Match[str]) -> str:
        number = self.ids.setdefault(match[0], len(self.ids))
        return f"<id:{number}>"


def _sort_tools(fields: dict[str, Any]) -> dict[str, Any]:
    """Tool declarations in name order: Codex lists the tools of a namespace in any order."""
    if isinstance(fields.get("tools"), list):
        fields["tools"] = sorted(fields["tools"], key=_tool_order)
    return fields


def _tool_order(tool: Any) -> tuple[str, str]:
    name = tool.get("name") or (tool.get("function") or {}).get("name") if isinstance(tool, dict) else None
    return str(name or ""), orjson.dumps(tool, option=orjson.OPT_SORT_KEYS).decode()


def first_difference(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """(path, value in a, value in b) of the first place two canonical structures differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in b or key not in a:
                return _join(where, key), a.get(key, "<absent>"), b.get(key, "<absent>")
            found = first_difference(a[key], b[key], _join(where, key))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for n, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}[{n}]")
            if found:
                return found
        if len(a) != len(b):
            n = min(len(a), len(b))
            return f"{where}[{n}]", a[n] if n < len(a) else "<absent>", b[n] if n < len(b) else "<absent>"
        return None
    return None if a == b else (where or "$", a, b)


def similarity(a: Any, b: Any) -> int:
    """How many leaves two canonical structures share at the same place (to rank near misses)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sum(similarity(a[k], b[k]) for k in a.keys() & b.keys())
    if isinstance(a, list) and isinstance(b, list):
        return sum(similarity(x, y) for x, y in zip(a, b))
    return 1 if a == b else 0


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
