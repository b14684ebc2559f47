"""The host's writes, seen across processes: a lock file beside a SQLite database.

SQLite has one writer at a time, and a writer that finds the lock taken sleeps in SQLite's busy handler
(1, 2, 5 ... 100 ms between tries) with no queue: a till whose write meets posync's drain in another
worker process (``uvicorn --workers 4``) can lose the race to posync's next transaction again and again,
for a second and more. :class:`~posync.db.WriteGate` orders posync after the host inside one process;
this extends the order to every process on the database:

* a host write transaction in a process where posync's gate is attached holds a shared ``flock`` on
  ``<database>-posync-host`` from its first write statement until it ends (one lock per process,
  counted), and stamps the file's mtime at most twice a second;
* before each of its write transactions, posync in any process waits (bounded) until it can take that
  lock exclusively for an instant: no host write is open anywhere. A host write that starts just after
  waits for one posync transaction at most, and posync keeps those short while the mtime says the host
  has written recently (``recently``).

Only processes that built a ``Posync`` on the database (or attached a ``WriteGate``) are seen; a script
writing the database on its own meets SQLite's locking as before. Where ``fcntl`` is missing (Windows) or
the file cannot be made (a read-only directory, an in-memory database), nothing changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["HostWrites", "host_writes"]

log = logging.getLogger("posync.db")
STAMP_EVERY = 0.5  # seconds between mtime stamps of one process's host writes
SUFFIX = "-posync-host"


class HostWrites:
    """The lock file of one SQLite database, as seen from this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._host_fd: int | None = None  # held shared while this process's host writes are open
        self._probe_fd: int | None = None  # posync's own: a separate open file, so the locks conflict
        self._pid = 0
        self._open = 0
        self._stamped = float("-inf")
        self._broken = False

    def _fds(self) -> tuple[int, int] | None:
        """Open (lazily, and again after a fork: an inherited descriptor shares its lock) the two files."""
        pid = os.getpid()
        if self._broken:
            return None
        if self._pid != pid or self._host_fd is None or self._probe_fd is None:
            try:
                self._host_fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._probe_fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                log.debug("no cross-process host-write signal for %s: %s", self.path, exc)
                self._broken = True
                return None
            self._pid, self._open = pid, 0
        return self._host_fd, self._probe_fd

    # the host's side (WriteGate's statement hooks)

    def host_began(self) -> None:
        with self._lock:
            fds = self._fds()
            if fds is None:
                return
            self._open += 1
            if self._open == 1:
                fcntl.flock(fds[0], fcntl.LOCK_SH)  # posync only ever holds it exclusively for an instant
            now = time.monotonic()
            if now - self._stamped > STAMP_EVERY:
                self._stamped = now
                os.utime(fds[0])

    def host_ended(self) -> None:
        with self._lock:
            if self._open == 0 or self._pid != os.getpid() or self._host_fd is None:
                return
            self._open -= 1
            if self._open == 0:
                fcntl.flock(self._host_fd, fcntl.LOCK_UN)

    # posync's side (every write transaction: posync.db.write_transaction)

    def wait_for_host(self, patience: float) -> bool:
        """Wait, at most ``patience`` seconds, until no host write is open in any process. Answers whether
        it had to wait at all."""
        with self._lock:
            fds = self._fds()
        if fds is None:
            return False
        probe = fds[1]
        deadline = time.monotonic() + patience
        pause = 0.0005
        waited = False
        while True:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return True  # a host transaction left open: SQLite's own locking decides
                waited = True
                time.sleep(pause)
                pause = min(pause * 2, 0.004)
                continue
            fcntl.flock(probe, fcntl.LOCK_UN)
            return waited

    def recently(self, within: float) -> bool:
        """Has a host write begun in any process within the last ``within`` seconds (to STAMP_EVERY)?"""
        with self._lock:
            fds = self._fds()
        if fds is None:
            return False
        return time.time() - os.fstat(fds[1]).st_mtime < within + STAMP_EVERY


_known: dict[Path, HostWrites] = {}
_known_lock = threading.Lock()


def host_writes(bind: Engine | Connection | Any) -> HostWrites | None:
    """The lock file of ``bind``'s SQLite database file; None for another database, an in-memory one, or
    where ``fcntl`` is missing."""
    engine = bind.engine if isinstance(bind, Connection) else bind
    if fcntl is None or engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:") or engine.url.query.get("mode"):
        return None
    path = Path(os.path.abspath(database + SUFFIX))
    with _known_lock:
        found = _known.get(path)
        if found is None:
            found = _known[path] = HostWrites(path)
        return found
