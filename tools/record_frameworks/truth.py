"""Ground truth by construction, recorded inside a recording app, never read off the wire.

The app says who is talking: `Session.turn(n)` around each user turn, `agent(...)` around each
agent's conversation (a root agent's turn, a delegated worker's task). Both are contextvars, so
asyncio tasks and `contextvars.copy_context()` carry them; where a framework runs a worker on a
thread of its own, the app wraps that worker's entry point with `agent(...)` there.

`install()` patches the transports of httpx (or httpx2: the layer under the OpenAI SDK and LiteLLM) to write one
row per request: the scope in force, the time, the SHA-256 of the body as sent and the
`x-request-id` the scripted upstream answered with. The request is untouched (no header is
added); the driver pairs rows with the recorded flows by that response id and checks the hash.

Standard library only (httpx is imported when installing): it runs inside each framework's throwaway venv.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Session:
    id: str
    turn_index: int = 0
    _numbers: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new_agent_id(self, name: str) -> str:
        """A fresh id for one conversation of agent `name` (a worker delegated twice is two agents)."""
        with self._lock:
            return f"{name}#{next(self._numbers)}"

    @contextlib.contextmanager
    def turn(self, index: int, root_agent: str | None) -> Iterator[Scope]:
        """User turn `index` of this session, spoken to its root agent (one conversation across turns).

        With `root_agent` None the app opens the turn's root agent itself, with `agent(...)` (a
        framework that starts a new root conversation for every turn).
        """
        self.turn_index = index
        scope = Scope(self, root_agent, None, root_agent)
        token = _CURRENT.set(scope)
        try:
            yield scope
        finally:
            _CURRENT.reset(token)


@dataclass(frozen=True)
class Scope:
    session: Session
    agent_id: str | None
    parent_id: str | None
    name: str | None
    side_type: str | None = None  # set: a side request (title, speaker selection, ...), no agent


_CURRENT: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("truth_scope", default=None)


def current() -> Scope | None:
    return _CURRENT.get()


def new_agent(name: str, session: Session | None = None, parent_id: str | None = None) -> Scope:
    """A new conversation of agent `name`, child of the scope in force (or of `parent_id` in `session`)."""
    outer = _CURRENT.get()
    session = session or (outer.session if outer else None)
    if session is None:
        raise RuntimeError(f"agent {name!r} started outside any session")
    if parent_id is None and outer is not None:
        parent_id = outer.agent_id
    return Scope(session, session.new_agent_id(name), parent_id, name)


@contextlib.contextmanager
def agent(name: str, session: Session | None = None, parent_id: str | None = None) -> Iterator[Scope]:
    """Run a new conversation of agent `name` (see `new_agent`)."""
    with scope(new_agent(name, session, parent_id)) as entered:
        yield entered


@contextlib.contextmanager
def side(side_type: str, session: Session | None = None) -> Iterator[Scope]:
    """Requests that belong to the session but to no agent's conversation."""
    outer = _CURRENT.get()
    session = session or (outer.session if outer else None)
    if session is None:
        raise RuntimeError(f"side request {side_type!r} outside any session")
    token = _CURRENT.set(Scope(session, None, None, None, side_type))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def scope(value: Scope) -> Iterator[Scope]:
    """Re-enter a scope captured elsewhere (on a framework's worker thread)."""
    token = _CURRENT.set(value)
    try:
        yield value
    finally:
        _CURRENT.reset(token)


class Recorder:
    """One row per HTTP request sent through httpx while installed."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def note(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        s = _CURRENT.get()
        row = {
            "t": time.time(),
            "method": method,
            "path": path,
            "sha256": hashlib.sha256(body).hexdigest(),
            "root_session_id": s.session.id if s else None,
            "agent_id": s.agent_id if s else None,
            "parent_agent_id": s.parent_id if s else None,
            "agent_name": s.name if s else None,
            "turn_index": s.session.turn_index if s else None,
            "kind": None if s is None else ("side" if s.side_type else "agent"),
            "side_type": s.side_type if s else None,
        }
        with self._lock:
            self.rows.append(row)
        return row

    def install(self) -> None:
        """Patch the transports of httpx and of httpx2 (the fork newer OpenAI SDKs use), whichever exist."""
        patched = [name for name in ("httpx", "httpx2") if self._patch(name)]
        if not patched:
            raise RuntimeError("neither httpx nor httpx2 is installed: no request can be recorded")

    def _patch(self, module_name: str) -> bool:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return False
        recorder = self
        sync_send, async_send = module.HTTPTransport.handle_request, module.AsyncHTTPTransport.handle_async_request

        def handle_request(transport: Any, request: Any) -> Any:
            row = recorder.note(request.method, request.url.raw_path.decode(), request.read())
            response = sync_send(transport, request)
            row["request_id"] = response.headers.get("x-request-id")
            return response

        async def handle_async_request(transport: Any, request: Any) -> Any:
            row = recorder.note(request.method, request.url.raw_path.decode(), await request.aread())
            response = await async_send(transport, request)
            row["request_id"] = response.headers.get("x-request-id")
            return response

        module.HTTPTransport.handle_request = handle_request
        module.AsyncHTTPTransport.handle_async_request = handle_async_request
        return True

    def write(self, path: str | Path, meta: dict[str, Any]) -> None:
        Path(path).write_text(json.dumps({**meta, "rows": self.rows}, indent=1))
