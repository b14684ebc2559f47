"""Push on commit (issue 18, item 6): a committed change goes to HO within a second, not at the next
sync interval.

The syncer hears of a change two ways. In its own process, a ``commit`` listener on the host's engine
sets an event: nothing else, no SQL, so the till's commit never waits on posync. From the other worker
processes (and anything else writing the database), a poll of the outbox's highest id every
``interval`` seconds: one indexed local read, never a request to HO. A wake-up waits for the commits
that follow it (``QUIET`` without another, at most ``BATCH_CAP``), then checks the outbox's highest id:
only when it moved does it push, push only (``SyncWorker.push_due``: no pull, the outage backoff
obeyed). So an idle outlet asks HO nothing more than before, and posync's own commits (lease, settle,
pull) never wake a push. Only the syncer lease's holder reads or pushes; the others' threads sleep.

The engine's ``commit`` event comes just before the database commits: the check after ``QUIET`` almost
always sees the change; when it does not, the next poll does. SQLite numbers a new item after the highest
one left, so once a cycle or a push removed items the highest id may come back unmoved: the mark is then
forgotten, and any item in the outbox is worth one push (which claims nothing when it is all parked).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from posync.db import POSYNC
from posync.errors import PosyncError
from posync.repositories.outbox import OutboxRepository
from posync.workers.sync_worker import SyncWorker

__all__ = ["CommitWatcher"]

log = logging.getLogger("posync.commit_watch")
QUIET = 0.05  # a wake-up waits this long without another commit, so a burst of sales goes in one batch
BATCH_CAP = 0.2  # ... but never longer than this after the first


class CommitWatcher:
    def __init__(self, engine: Engine, worker: SyncWorker, *, interval: float = 0.25,
                 active: Callable[[], bool] = lambda: True) -> None:
        """Listens to ``engine``'s commits from now on. The listener is never removed: SQLAlchemy iterates
        an engine's listeners during every commit, on the host's threads, and removing one meanwhile makes
        that commit fail. Stopped, it does nothing."""
        self._engine = engine
        self._worker = worker
        self._interval = interval
        self._active = active  # this process holds the syncer lease
        self._outbox = OutboxRepository()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: int | None = None  # the outbox's highest id at the last look
        self._runs = 0  # the worker's outbox_runs at the last look
        sa.event.listen(self._engine, "commit", self._committed)

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Listen to the engine's commits and start the watching thread. The outbox's highest id now is
        the mark: what is queued before it is the first cycle's (it runs at once on start)."""
        if self._thread is not None:
            return
        self._runs = self._worker.outbox_runs
        self._seen = self._newest()
        self._thread = threading.Thread(target=self._watch, name="posync-commit-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and ask the thread to end; it ends after the push it may be running (which
        ``SyncWorker.stop`` cuts short). ``join`` waits for it."""
        self._stopping.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
        return not self.running

    # -- the host's thread: at every commit on its engine --------------------------------------------

    def _committed(self, conn: Connection) -> None:
        if not self._stopping.is_set() and not conn.get_execution_options().get(POSYNC):
            self._wake.set()  # posync's own transactions queue nothing

    # -- the watching thread -------------------------------------------------------------------------

    def _watch(self) -> None:
        pending = False  # a change was seen that no push has taken yet
        while not self._stopping.is_set():
            woken = self._wake.wait(self._interval)
            if self._stopping.is_set():
                return
            try:
                if not self._active():
                    self._wake.clear()
                    pending = False  # the syncer that takes over runs a cycle
                    continue
                if woken:
                    self._gather()
                runs = self._worker.outbox_runs
                if runs != self._runs:  # items were removed: an unmoved id may be a new item's
                    self._runs, self._seen = runs, None
                newest = self._newest()
                if newest is not None and newest != self._seen:
                    pending = True
                self._seen = newest
                if pending:
                    pending = self._worker.push_due().busy  # a cycle is running: push after it
            except Exception:  # a bug must not stop pushing on commit for good
                log.exception("push on commit failed")

    def _gather(self) -> None:
        """Wait for the commits that follow the first: ``QUIET`` without one, at most ``BATCH_CAP``."""
        first = time.monotonic()
        self._wake.clear()
        while not self._stopping.is_set():
            left = first + BATCH_CAP - time.monotonic()
            if left <= 0 or not self._wake.wait(min(QUIET, left)):
                return
            self._wake.clear()

    def _newest(self) -> int | None:
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{POSYNC: True})
                return self._outbox.newest_id(conn)
        except (PosyncError, sa.exc.SQLAlchemyError) as exc:  # busy or away: the next look tries again
            log.debug("outbox not read: %s", exc)
            return self._seen
