"""The Dynamo lineage rule, exactly as NVIDIA NeMo Relay applies it.

`x-dynamo-session-id` is the id of the agent scope that made the request;
`x-dynamo-parent-session-id` is the id of the immediately enclosing agent scope, kept even when
equal, and removed when there is none so a stale parent never survives. Turns are not agents.
"""

from __future__ import annotations

SESSION_HEADER = "x-dynamo-session-id"
PARENT_HEADER = "x-dynamo-parent-session-id"
# A Dynamo request hint, not lineage (Dynamo 1.6.1 reads it into `nvext.agent_hints.priority`).
PRIORITY_HEADER = "x-dynamo-request-priority"


def lineage_headers(agent_id: str, parent_id: str | None) -> dict[str, str | None]:
    """Header name -> value to set, or None to remove every field of that name."""
    return {SESSION_HEADER: agent_id, PARENT_HEADER: parent_id}
