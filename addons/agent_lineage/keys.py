"""Well-known API key patterns, masked in what we write when `lineage_mask_keys` is on.

Keys sent as credentials (Authorization, x-api-key, x-goog-api-key, cookies, `?key=`) are never
recorded at all (model.SECRET_HEADERS, flows.redact_query). A key a user pastes into a prompt is
content, kept as sent by default; with the option on, trajectories and the calls log show
`<masked:PREFIX>` in its place. Saved flows (`-w`) keep the traffic as it was.
"""

from __future__ import annotations

import re

KEY_PATTERNS = re.compile(
    rb"(?P<prefix>sk-)[A-Za-z0-9_-]{16,}"  # OpenAI (sk-proj-...), Anthropic (sk-ant-...)
    rb"|(?P<prefix2>AKIA)[0-9A-Z]{16}"  # AWS access key id
    rb"|(?P<prefix3>gh[pousr]_)[A-Za-z0-9]{36,}"  # GitHub tokens
    rb"|(?P<prefix4>AIza)[0-9A-Za-z_-]{35}"  # Google API keys
    rb"|(?P<prefix5>xox[abposr]-)[A-Za-z0-9-]{10,}"  # Slack tokens
)


def mask_keys(data: bytes) -> bytes:
    """`data` with every well-known key pattern replaced by `<masked:PREFIX>`."""
    return KEY_PATTERNS.sub(lambda m: b"<masked:" + next(g for g in m.groups() if g) + b">", data)
