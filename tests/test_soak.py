"""The soak (scripts/soak) in short: 20 agents for 20 seconds through one mitmdump, sessions
released after 5 idle seconds. The full run is `scripts/soak` (50 agents, 10 minutes)."""

from __future__ import annotations

import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e


def load_soak():
    loader = SourceFileLoader("soak", str(ROOT / "scripts" / "soak"))
    module = module_from_spec(spec_from_loader("soak", loader))
    sys.modules["soak"] = module  # its dataclasses look their module up
    loader.exec_module(module)
    return module


def test_twenty_agents_for_twenty_seconds_no_cross_talk_no_errors_bounded_memory(tmp_path, no_proxy_env):
    result = load_soak().soak(agents=20, seconds=20, workdir=tmp_path, session_ttl=5)
    assert result.calls > 100 and result.conversations > 20
    assert result.failures == [] and result.cross_talk == [] and result.log_problems == []
    third = max(1, len(result.rss_mb) // 3)
    assert max(result.rss_mb[-third:]) < 1.5 * max(result.rss_mb[:third]), result.rss_mb
