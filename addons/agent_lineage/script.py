"""The file given to `mitmdump -s` from an installed package (`agent-lineage addon-path` prints its path).

mitmproxy runs a script outside `sys.modules`; the addon is imported from the package instead, so
it is an ordinary module (dataclasses and all) and a reloaded script gets a fresh instance.
"""

from agent_lineage.addon import Lineage

addons = [Lineage()]
