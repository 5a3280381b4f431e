"""The file given to `mitmdump -s` in a checkout; the addon itself is agent_lineage/addon.py."""

from agent_lineage.addon import Lineage

addons = [Lineage()]
