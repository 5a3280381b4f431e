"""agent-lineage: session, turn and subagent lineage of coding-agent LLM traffic, from the wire alone."""

from pathlib import Path

__version__ = "0.1.0"


def addon_path() -> str:
    """The file to give `mitmdump -s` (works from a checkout and from an installed package)."""
    return str(Path(__file__).with_name("script.py"))
