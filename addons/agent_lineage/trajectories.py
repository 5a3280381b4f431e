"""Trajectory files: one `trajectory-<session id>.json` per root session, always valid on disk.

`TrajectoryFiles` builds the documents and writes them; it is the synchronous core, used as is
by `agent-lineage convert` and `write_trajectories`. `TrajectoryWriter` is the live sink: the
proxy's event loop only enqueues a call, and one background thread builds and rewrites each
changed session's file at most once per `write_interval` seconds, and a big one less often: at
most REWRITE_BYTES_PER_SECOND per session. Every write goes to a temp file
in the same directory, then `os.replace`: a crash or kill -9 at any moment leaves the previous
complete file or the new one, never a torn one. (No fsync: what a killed process wrote is safe in
the OS; surviving power loss would cost a disk flush per write.)

A session that comes back after its state was released (evicted after the session TTL, or a
previous proxy run wrote its file) is not folded into the old file, which holds calls we no
longer have in memory: it continues in `trajectory-<id>.2.json` (then `.3`, ...), the previous
file gets the ATIF `continued_trajectory_ref` pointing at the new one, and the new one says
which file it continues under `extra.agent_lineage.continues`.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import orjson

from . import keys
from .atif import TrajectoryBuilder
from .ids import digest
from .model import Call

log = logging.getLogger("agent_lineage")


# File names stop at 255 bytes: a longer id (Dynamo allows 256) is named by a prefix and a digest.
MAX_ID_IN_FILE_NAME = 128
_NOT_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._:@+=~-]")


def trajectory_file_name(session_id: str, part: int = 1) -> str:
    """`trajectory-<id>.json` (part 1) or `trajectory-<id>.<part>.json`, where <id> is the session
    id itself when it is short and safe, else its first 64 safe characters, `~` and a digest of
    the whole id (the full id is in the file, as its `session_id`)."""
    name = session_id
    if len(name) > MAX_ID_IN_FILE_NAME or _NOT_IN_FILE_NAMES.search(name) or name.startswith("."):
        name = f"{_NOT_IN_FILE_NAMES.sub('_', session_id)[:64]}~{digest(session_id)}"
    return f"trajectory-{name}.json" if part == 1 else f"trajectory-{name}.{part}.json"


class TrajectoryFiles:
    """Builds sessions' trajectories from calls and writes their files into one directory.

    Not thread-safe: one thread owns it. `replace_existing` decides what happens to a file that
    was already there when this instance started: keep it and continue in the next part (a
    restarted proxy), or overwrite it (a conversion run again over the same recording).
    """

    def __init__(self, directory: str | Path, replace_existing: bool = False, mask_keys: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._root = self.directory.resolve()
        self.replace_existing = replace_existing
        self.mask_keys = mask_keys  # well-known API key patterns in the content masked (keys.py)
        self.builder = TrajectoryBuilder()
        self.dirty: dict[str, None] = {}  # sessions whose file is stale, in the order they changed
        self.written: dict[Path, None] = {}  # every file written, in first-write order
        self._files: dict[str, tuple[Path, int]] = {}  # session in memory -> its file and part number
        self.sizes: dict[str, int] = {}  # session in memory -> bytes of its file's last write
        self._refused: set[str] = set()

    def add(self, call: Call) -> None:
        """Fold a call into its session, whose file is then stale (`dirty`)."""
        if call.scope is None or call.scope.session_id in self._refused:
            return
        session_id = call.scope.session_id
        self.builder.add(call)
        if session_id not in self._files:
            file = self._new_file(session_id)
            if file is None:
                self.builder.drop(session_id)
                return
            self._files[session_id] = file
        self.dirty[session_id] = None

    def write(self, session_id: str) -> None:
        """Rewrite the session's file if it changed (raises OSError; it stays pending then)."""
        if session_id not in self.dirty:
            return
        path, part = self._files[session_id]
        data = self.builder.render(session_id)
        write_atomically(path, keys.mask_keys(data) if self.mask_keys else data)
        self.sizes[session_id] = len(data)
        del self.dirty[session_id]
        if path not in self.written:
            self.written[path] = None
            if part > 1:
                self._link_previous_part(self._root / trajectory_file_name(session_id, part - 1), path.name)

    def session_evicted(self, session_id: str) -> None:
        """Write the session now and release it; a later call for it starts the next part."""
        self.write(session_id)
        self.release(session_id)

    def release(self, session_id: str) -> None:
        self.builder.drop(session_id)
        self._files.pop(session_id, None)
        self.sizes.pop(session_id, None)
        self.dirty.pop(session_id, None)

    def close(self) -> None:
        for session_id in list(self.dirty):
            self.write(session_id)

    def _new_file(self, session_id: str) -> tuple[Path, int] | None:
        """The file (and part number) of a session new to memory; None if its name is unsafe."""
        part = 1
        while True:
            path = self._safe_path(trajectory_file_name(session_id, part))
            if path is None:
                self._refused.add(session_id)
                log.error("agent-lineage: refusing to write session %r: its file name leaves %s", session_id, self.directory)
                return None
            if path not in self.written and not (path.exists() and not self.replace_existing):
                break
            part += 1
        if part > 1:
            self.builder.mark_continuation(session_id, trajectory_file_name(session_id, part - 1))
        return path, part

    def _safe_path(self, name: str) -> Path | None:
        path = self._root / name
        if os.sep in name or (os.altsep and os.altsep in name) or "\0" in name or path.resolve().parent != self._root:
            return None
        return path

    @staticmethod
    def _link_previous_part(previous: Path, name: str) -> None:
        """Point the previous part of a continued session at its continuation `name`."""
        try:
            document = orjson.loads(previous.read_bytes())
            document["continued_trajectory_ref"] = name
            write_atomically(previous, orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        except (OSError, orjson.JSONDecodeError, TypeError) as e:  # TypeError: not a JSON object
            log.warning("agent-lineage: cannot link %s to its continuation %s: %s", previous, name, e)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers (and a crash) see the old file or the new one."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:  # a full disk: leave no half-written temp file behind
        temp.unlink(missing_ok=True)
        raise


RETRY_SECONDS = 1.0  # how often a session whose file could not be written is tried again


# A long session's file is rewritten less often than every write interval, so that rewriting it
# costs at most this many bytes per second (a 25 MB file every 6 s, not every second).
REWRITE_BYTES_PER_SECOND = 4 * 2**20


class TrajectoryWriter:
    """The live CallSink: a queue in front of one writer thread that owns a TrajectoryFiles."""

    def __init__(
        self,
        directory: str | Path,
        write_interval: float,
        mask_keys: bool = False,
        rewrite_bytes_per_second: float = REWRITE_BYTES_PER_SECOND,
    ) -> None:
        self.files = TrajectoryFiles(directory, mask_keys=mask_keys)
        self.write_interval = write_interval
        self.rewrite_bytes_per_second = rewrite_bytes_per_second
        # A Call to fold in, a session id to evict, or None to stop.
        self._queue: queue.SimpleQueue[Call | str | None] = queue.SimpleQueue()
        self._closed = False
        self._failing = False  # the last write failed (logged once until one works again)
        self._thread = threading.Thread(target=self._run, name="agent-lineage-trajectories", daemon=True)
        self._thread.start()

    def add(self, call: Call) -> None:
        """Called on the proxy's event loop: only hands the call over."""
        self._queue.put(call)

    def session_evicted(self, session_id: str) -> None:
        self._queue.put(session_id)

    def close(self) -> None:
        """Write everything still pending and stop the thread; later calls are ignored."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        due: dict[str, float] = {}  # changed session -> when its file may be rewritten
        last_write: dict[str, float] = {}
        while True:
            timeout = max(0.0, min(due.values()) - time.monotonic()) if due else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                pass  # a session is due
            else:
                if item is None:
                    for session_id in list(self.files.dirty):
                        self._write(session_id)
                    return
                try:
                    if isinstance(item, str):
                        due.pop(item, None)
                        last_write.pop(item, None)
                        if self._write(item):
                            self.files.release(item)
                        else:  # kept until it can be written
                            due[item] = time.monotonic() + RETRY_SECONDS
                    else:
                        self.files.add(item)
                        changed = item.scope.session_id if item.scope is not None else None
                        if changed in self.files.dirty and changed not in due:
                            due[changed] = last_write.get(changed, -math.inf) + self._interval(changed)
                except Exception:  # the thread must outlive a call it cannot fold in
                    log.exception("agent-lineage: cannot record a call in its trajectory")
            now = time.monotonic()
            for session_id in [s for s, t in due.items() if t <= now]:
                del due[session_id]
                last_write[session_id] = now
                if not self._write(session_id):
                    due[session_id] = now + RETRY_SECONDS

    def _interval(self, session_id: str) -> float:
        """Seconds from a session's last rewrite to its next: the write interval, stretched for a
        big file (the bytes rewritten per second stay bounded); 0 stays 0 (every call)."""
        if self.write_interval == 0:
            return 0.0
        return max(self.write_interval, self.files.sizes.get(session_id, 0) / self.rewrite_bytes_per_second)

    def _write(self, session_id: str) -> bool:
        """Rewrite one session's file; False if it failed (a full disk, a read-only directory): the
        first failure is logged, the session stays pending and is retried, and the first write
        that works again says so."""
        try:
            self.files.write(session_id)
        except OSError as e:
            if not self._failing:
                log.error(
                    "agent-lineage: cannot write trajectories in %s: %s (traffic is forwarded as ever; writing is retried "
                    "every %gs and further failures are not logged)",
                    self.files.directory,
                    e,
                    RETRY_SECONDS,
                )
            self._failing = True
            return False
        if self._failing:
            self._failing = False
            log.warning("agent-lineage: writing trajectories in %s again", self.files.directory)
        return True


def write_trajectories(calls: Iterable[Call], directory: str | Path) -> list[Path]:
    """Offline: the files the live writer ends with for the same calls; existing files are replaced."""
    files = TrajectoryFiles(directory, replace_existing=True)
    for call in calls:
        files.add(call)
    files.close()
    return list(files.written)
