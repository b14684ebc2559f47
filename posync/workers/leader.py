"""One syncer per outlet database (issue 18, item 3): of the POS's worker processes, the one holding the
``syncer`` lease runs the sync jobs; the others capture and answer, and ask the holder for a cycle through
the database.

Every ``renew_seconds`` each process looks at the lease (one read). The holder renews it to ``seconds``
ahead; a process that finds it free or run out takes it, and gives the previous holder's in-flight outbox
items back at once, so a SIGKILLed syncer's batch waits for the lease (seconds), not for the item leases
(a minute). A process counts itself the holder only until a little before the lease it wrote runs out, by
its own monotonic clock, so two processes never both believe they hold it. Host writes never touch the
lease; its writes are one short statement every ``renew_seconds`` by the holder only.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from posync.db import write_transaction
from posync.errors import PosyncError, StorageError
from posync.repositories.lease import LeaseRepository
from posync.repositories.outbox import OutboxRepository

__all__ = ["Renewal", "SyncerLease"]

log = logging.getLogger("posync.leader")
NAME = "syncer"
MARGIN = 1.0  # seconds before the lease runs out that its holder stops counting on it (clock drift, GC)


@dataclass(frozen=True, slots=True)
class Renewal:
    held: bool
    taken_over: bool = False  # newly taken (from nobody, or from a holder that stopped renewing)
    asked: bool = False  # another process asked for a cycle since the last renewal


class SyncerLease:
    def __init__(self, engine: Engine, holder: str, *, seconds: float = 6.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 2 * MARGIN:
            raise ValueError(f"the syncer lease must last more than {2 * MARGIN} s")
        self._engine = engine
        self.holder = holder
        self.seconds = seconds
        self._clock = clock
        self._monotonic = monotonic
        self._repo = LeaseRepository()
        self._outbox = OutboxRepository()
        self._held_until = 0.0
        self._asked_at = -math.inf
        self._released = False  # after release(), a renewal already under way must not take it back
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._monotonic() < self._held_until

    def renew(self) -> Renewal:
        """Take, keep or leave the lease. A database that cannot be reached or is busy is not an error here:
        the holder stops counting on the lease when it runs out, and the next renewal tries again."""
        with self._lock:
            if self._released:
                return Renewal(held=False)
            try:
                return self._renew()
            except (PosyncError, SQLAlchemyError) as exc:  # connecting is outside the repository
                log.debug("syncer lease not renewed: %s", type(exc).__name__)
                return Renewal(held=self.held)

    def _renew(self) -> Renewal:
        was_held = self.held
        started = self._monotonic()
        with self._engine.connect() as conn:  # a read first: a process that cannot take it writes nothing
            state = self._repo.state(conn, NAME)
        now = self._clock()
        if state is None or not self._takeable(state.holder, state.expires_at, now):
            self._held_until = 0.0
            return Renewal(held=False)
        with write_transaction(self._engine) as conn:
            state = self._repo.state(conn, NAME)  # again, under the write lock: it may have changed hands
            if state is None or not self._repo.take_or_renew(conn, NAME, self.holder, now, self.seconds):
                self._held_until = 0.0
                return Renewal(held=False)
            if state.holder not in (None, self.holder):
                given = self._outbox.give_back(conn, state.holder, now)
                log.info("took the syncer lease over from %s (it stopped renewing); %d in-flight changes "
                         "are due again", state.holder, given,
                         extra={"event": "syncer.taken_over", "previous": state.holder, "given_back": given})
        self._held_until = started + self.seconds - MARGIN
        asked = state.trigger_at is not None and state.trigger_at > self._asked_at
        if state.trigger_at is not None:
            self._asked_at = state.trigger_at
        return Renewal(held=True, taken_over=not was_held, asked=asked and was_held)

    def _takeable(self, holder: str | None, expires_at: float, now: float) -> bool:
        """Ours, nobody's, run out, or written under a clock that has since been set back (it would
        otherwise stay 'unexpired' for as long as the clock went back)."""
        return holder in (None, self.holder) or expires_at <= now or expires_at > now + self.seconds + 1.0

    def ask_for_cycle(self) -> None:
        """From a process that does not hold the lease: the holder runs a cycle at its next renewal."""
        try:
            with write_transaction(self._engine) as conn:
                self._repo.ask_for_cycle(conn, NAME, self._clock())
        except SQLAlchemyError as exc:
            raise StorageError(f"asking the syncer for a cycle failed: {type(exc).__name__}") from exc

    def release(self, give_back: bool) -> None:
        """Leave the lease to the next process. With ``give_back`` (nothing of this process is on the wire)
        its claimed changes are due again now and the lease is free at once; without, the lease is marked
        run out but still names this process, so the next holder gives its changes back when it takes over."""
        with self._lock:
            self._released = True
            self._held_until = 0.0
            try:
                with write_transaction(self._engine) as conn:
                    if give_back:
                        self._outbox.give_back(conn, self.holder, self._clock())
                        self._repo.give_up(conn, NAME, self.holder)
                    else:
                        self._repo.run_out(conn, NAME, self.holder)
            except (PosyncError, SQLAlchemyError) as exc:  # the lease runs out by itself
                log.warning("syncer lease not released: %s", type(exc).__name__)
