"""Test and benchmark tooling for agent-lineage: the generated-traffic corpus and the accuracy scorer (not shipped in the package)."""
