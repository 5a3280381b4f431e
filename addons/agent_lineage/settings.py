"""The pipeline's settings, with their defaults in one place (the addon's options, `convert`'s flags)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Settings:
    stamp: bool = True  # send x-dynamo-* lineage headers upstream
    respect_client_lineage: bool = True  # keep x-dynamo-* lineage a client already sent
    turn_gap_seconds: float = 900.0  # idle time after which a root agent's next request opens a turn
    session_ttl_seconds: float = 3600.0  # idle time after which a session's state is released
    harness_file: str | None = None  # YAML merged over the built-in harness table
    # x-dynamo-request-priority by scope ("main", "subagent", "side"); empty: send none.
    priority: dict[str, int] = field(default_factory=dict)
    max_decoded_bytes: int = 64 * 2**20  # bodies that decode to more are forwarded unobserved
    mask_keys: bool = False  # mask well-known API key patterns in trajectories and the calls log


DEFAULTS = Settings()


PRIORITY_SCOPES = ("main", "subagent", "side")


def parse_priority(text: str) -> dict[str, int]:
    """`main=2,subagent=1,side=0` -> levels by scope; ValueError naming what is wrong."""
    levels: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        scope, equals, value = item.partition("=")
        scope = scope.strip()
        if not equals or scope not in PRIORITY_SCOPES:
            raise ValueError(f"{item!r}: expected SCOPE=INTEGER with SCOPE one of {', '.join(PRIORITY_SCOPES)}")
        try:
            levels[scope] = int(value)
        except ValueError:
            raise ValueError(f"{item!r}: the priority must be an integer") from None
    return levels
