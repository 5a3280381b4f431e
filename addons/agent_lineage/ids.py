"""Ids that are safe as Dynamo header values and as file names, and deterministic ones we derive."""

from __future__ import annotations

import hashlib
import re

MAX_ID_BYTES = 256  # Dynamo answers 400 to longer session ids
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@+=-]")


def sanitize_id(raw: str) -> str:
    """`raw` itself when it is already safe; otherwise a readable, deterministic normalisation.

    Safe means printable ASCII without spaces, path separators or control characters, at most
    MAX_ID_BYTES, not starting with a dot. A normalised id keeps a hash of the original so two
    different raw ids never collapse into one.
    """
    if raw and len(raw) <= MAX_ID_BYTES and not _UNSAFE.search(raw) and not raw.startswith("."):
        return raw
    cleaned = _UNSAFE.sub("_", raw.strip()).lstrip(".")[:64] or "id"
    return f"{cleaned}~{digest(raw)}"


def digest(*parts: str, length: int = 16) -> str:
    h = hashlib.blake2b(digest_size=length // 2)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def derived_id(prefix: str, *parts: str) -> str:
    """A content-derived id: the same inputs give the same id in every run."""
    return f"{prefix}-{digest(*parts)}"
