"""What happens to the `x-dynamo-*` headers a client sends, other than the lineage pair.

Dynamo reads request hints from headers: `x-dynamo-request-priority` and
`x-dynamo-request-strict-priority` (32-bit integers) and `x-dynamo-meta-policy-class` (a queue
class name). A hint the client sends on an LLM request is forwarded only in a form Dynamo reads as
intended, else it is removed, so a malformed or injected hint never reaches the router:

- priorities: one field holding a 32-bit signed integer (surrounding blanks trimmed); anything
  else, repeated fields included, is removed;
- policy class: one field of at most 128 printable ASCII characters without spaces;
- any other `x-dynamo-*` header: one field of at most 256 printable ASCII characters;
- the lineage pair (`x-dynamo-session-id`, `x-dynamo-parent-session-id`) is ours: see lineage.py.

Applied when lineage stamping is on (with `lineage_stamp=false` the addon changes no request).
"""

from __future__ import annotations

import re

from .lineage import PARENT_HEADER, SESSION_HEADER

PRIORITY_HEADERS = ("x-dynamo-request-priority", "x-dynamo-request-strict-priority")
POLICY_CLASS_HEADER = "x-dynamo-meta-policy-class"
_INT32 = re.compile(r"[+-]?[0-9]{1,10}")
_TOKEN = re.compile(r"[!-~]{1,128}")  # printable ASCII, no space
_PRINTABLE = re.compile(r"[ -~]{1,256}")


def client_hints(headers: dict[str, str]) -> dict[str, str | None]:
    """The changes to make to the client's `x-dynamo-*` hints (`headers`: lower-cased names, repeated
    fields joined by ", "): a cleaned value to set, or None to remove the header."""
    changes: dict[str, str | None] = {}
    for name, value in headers.items():
        if not name.startswith("x-dynamo-") or name in (SESSION_HEADER, PARENT_HEADER):
            continue
        cleaned = _cleaned(name, value)
        if cleaned != value:
            changes[name] = cleaned
    return changes


def _cleaned(name: str, value: str) -> str | None:
    if name in PRIORITY_HEADERS:
        value = value.strip()
        if _INT32.fullmatch(value) and -(2**31) <= int(value) < 2**31:
            return value
        return None
    if name == POLICY_CLASS_HEADER:
        value = value.strip()
        return value if _TOKEN.fullmatch(value) else None
    return value if _PRINTABLE.fullmatch(value) and ", " not in value else None
