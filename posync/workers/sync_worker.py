"""One sync cycle (push, pull, push what conflicts re-queued) and what to do when HO is away.

An outage is the normal case for a POS: the cycle gives up quietly, the queue waits, the next attempt
backs off (OutagePolicy, at least HO's Retry-After). One warning when HO goes away, one line when it
is back; nothing per attempt above DEBUG.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from posync.errors import HOUnavailableError, TransportError
from posync.services.pull import PullService, PullStats
from posync.services.push import PushService, PushStats
from posync.services.retry import OutagePolicy

__all__ = ["CycleReport", "SyncWorker"]

log = logging.getLogger("posync.worker")


@dataclass
class CycleReport:
    ran: bool
    push: PushStats = field(default_factory=PushStats)
    pull: PullStats = field(default_factory=PullStats)
    error: str | None = None
    next_attempt_in: float = 0.0


class SyncWorker:
    def __init__(self, push: PushService, pull: PullService, *, outage: OutagePolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._push = push
        self._pull = pull
        self._outage = outage or OutagePolicy()
        self._clock = clock
        self._failures = 0
        self._not_before = 0.0
        self._lock = threading.Lock()  # one cycle at a time in this process

    @property
    def online(self) -> bool:
        return self._failures == 0

    def run_cycle(self, *, force: bool = False) -> CycleReport:
        now = self._clock()
        if not force and now < self._not_before:
            return CycleReport(ran=False, next_attempt_in=self._not_before - now)
        if not self._lock.acquire(blocking=False):
            return CycleReport(ran=False, error="a cycle is already running")
        report = CycleReport(ran=True)
        try:
            report.push.add(self._push.drain())
            report.pull = self._pull.pull_all()
            report.push.add(self._push.drain())
        except TransportError as exc:
            self._failures += 1
            retry_after = exc.retry_after if isinstance(exc, HOUnavailableError) else None
            delay = self._outage.delay(self._failures, retry_after)
            self._not_before = self._clock() + delay
            report.error, report.next_attempt_in = str(exc), delay
            if self._failures == 1:
                log.warning("head office unreachable (%s); changes stay queued, next try in %.0fs", exc, delay)
            else:
                log.debug("head office still unreachable (%s); next try in %.0fs", exc, delay)
        else:
            if self._failures:
                log.info("head office reachable again after %d failed attempts", self._failures)
            self._failures = 0
            self._not_before = 0.0
        finally:
            self._lock.release()
        return report
