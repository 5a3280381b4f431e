"""The pipeline's settings, with their defaults in one place (the addon's options, `convert`'s flags)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Settings:
    stamp: bool = True  # send x-dynamo-* lineage headers upstream
    respect_client_lineage: bool = True  # keep x-dynamo-* lineage a client already sent
    turn_gap_seconds: float = 900.0  # idle time after which a root agent's next request opens a turn
    session_ttl_seconds: float = 3600.0  # idle time after which a session's state is released
    harness_file: str | None = None  # YAML merged over the built-in harness table


DEFAULTS = Settings()
