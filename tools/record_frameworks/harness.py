"""What every recording app shares: its command line, its upstream, its truth rows.

    python app_<framework>.py --base-url http://127.0.0.1:PROXY/v1 --upstream-port PORT --rows FILE

The app serves its scripted upstream on PORT (mitmdump, started by record.py, forwards PROXY to
it), sends every LLM call to --base-url, and writes the truth rows to FILE when it is done.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from scripted import Respond, ScriptedUpstream
from truth import Recorder

API_KEY = "sk-scripted-not-a-key"  # the scripted upstream takes any key; nothing secret is recorded
MODEL = "gpt-4o-mini"


def run(
    client: str, packages: list[str], respond: Respond, app: Callable[[str], Any], description: dict[str, Any], prompts: dict[str, str]
) -> None:
    """Serve `respond`, run `app(base_url)` (a function or a coroutine function), write the rows."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--rows", required=True)
    args = parser.parse_args()
    recorder = Recorder()
    recorder.install()
    with ScriptedUpstream(respond, args.upstream_port) as upstream:
        result = app(args.base_url)
        if inspect.iscoroutine(result):
            asyncio.run(result)
        if upstream.errors:
            raise SystemExit(f"the script failed: {upstream.errors}")
    framework = {name: version(name) for name in packages if _installed(name)}
    recorder.write(args.rows, {"client": client, "framework": framework, "app": description, "prompts": prompts})


def _installed(package: str) -> bool:
    try:
        version(package)
    except PackageNotFoundError:
        return False
    return True
