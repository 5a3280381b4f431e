"""agent-lineage: session, turn and subagent lineage of coding-agent LLM traffic, from the wire alone."""

__version__ = "0.1.0"
