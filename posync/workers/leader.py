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
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from posync.db import write_transaction
from posync.errors import PosyncError
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

    @property
    def held(self) -> bool:
        return self._monotonic() < self._held_until

    def renew(self) -> Renewal:
        """Take, keep or leave the lease. A database that cannot be reached or is busy is not an error here:
        the holder stops counting on the lease when it runs out, and the next renewal tries again."""
        was_held = self.held
        started = self._monotonic()
        try:
            with self._engine.connect() as conn:
                state = self._repo.state(conn, NAME)
            now = self._clock()
            if state is None or (state.holder not in (None, self.holder) and state.expires_at > now):
                self._held_until = 0.0
                return Renewal(held=False)
            with write_transaction(self._engine) as conn:
                if not self._repo.take_or_renew(conn, NAME, self.holder, now, self.seconds):
                    self._held_until = 0.0
                    return Renewal(held=False)
                if state.holder not in (None, self.holder):
                    given = self._outbox.give_back(conn, state.holder, now)
                    log.info("took the syncer lease over from %s (it stopped renewing); %d in-flight changes "
                             "are due again", state.holder, given)
        except PosyncError as exc:
            log.debug("syncer lease not renewed: %s", exc)
            return Renewal(held=self.held)
        self._held_until = started + self.seconds - MARGIN
        asked = state.trigger_at is not None and state.trigger_at > self._asked_at
        if state.trigger_at is not None:
            self._asked_at = state.trigger_at
        return Renewal(held=True, taken_over=not was_held, asked=asked and was_held)

    def ask_for_cycle(self) -> None:
        """From a process that does not hold the lease: the holder runs a cycle at its next renewal."""
        with write_transaction(self._engine) as conn:
            self._repo.ask_for_cycle(conn, NAME, self._clock())

    def release(self, give_back: bool) -> None:
        """Leave the lease to the next process at once; with ``give_back``, the changes this process still
        holds in flight are due again too (it has stopped, nothing of its is on the wire)."""
        self._held_until = 0.0
        try:
            with write_transaction(self._engine) as conn:
                if give_back:
                    self._outbox.give_back(conn, self.holder, self._clock())
                self._repo.give_up(conn, NAME, self.holder)
        except PosyncError as exc:  # the lease runs out by itself
            log.warning("syncer lease not released: %s", exc)
