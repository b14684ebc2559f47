"""One sync cycle (push, pull, push what conflicts re-queued), a push on its own (push on commit:
posync/workers/commit_watch.py), and what to do when HO is away.

An outage is the normal case for a POS: the cycle gives up quietly, the queue waits, the next attempt
backs off (OutagePolicy, at least HO's Retry-After). While HO is away an attempt is a probe, HO's version
endpoint (one small GET), at most ``probe_cap`` apart and jittered; the first answer ends the outage and
the cycle runs at once, in the same attempt. A cycle that fails again right after a probe was answered
(HO up but not syncing) backs off on the whole curve. One warning when HO goes away, one line when it
is back; nothing per attempt above DEBUG. Refused credentials are told apart (``auth_error``): they are
a configuration to fix, not an outage to wait out. Backoff runs on ``time.monotonic()``, so a wall clock
that is set back never makes a cycle wait.

An outlet that moves nothing either way polls HO less the longer it stays idle (``IdlePolling``): a due
cycle is skipped (``idle``) until its wait is over, at the outlet's own place in the wait (its phase on
the wall clock, so a fleet idle together does not poll together); a push that sends something, a forced
cycle, a change pulled or a failure ends it.

Against an HO that never reports deletes (the seed HO), a cycle also runs the id reconciliation every
``reconcile_interval`` seconds. ``stop()`` asks a running cycle to finish early: no more batches or
pages are started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from posync.errors import AuthenticationError, HOUnavailableError, PosyncError, ProtocolError, TransportError
from posync.retry import IdlePolling, OutagePolicy
from posync.services.pull import PullService, PullStats
from posync.services.push import PushService, PushStats

if TYPE_CHECKING:
    from posync.ho import VersionInfo

__all__ = ["CycleReport", "SyncWorker"]

log = logging.getLogger("posync.worker")
# a reconciliation that failed (a foreign key, its cap) is tried again this soon, not at its next interval
RECONCILE_RETRY = 60.0
# how long a due cycle waits for a push on commit to end before it skips its tick
PUSH_WAIT = 30.0
# while HO does not answer, a sale probes it at most this often (or a quarter of outage_probe_seconds): HO
# back, the sale goes at once instead of at the next scheduled probe; a busy till still makes no storm
SALE_PROBE_GAP = 5.0


@dataclass
class CycleReport:
    ran: bool
    push: PushStats = field(default_factory=PushStats)
    pull: PullStats = field(default_factory=PullStats)
    error: str | None = None
    # the failure's kind, from its exception: "auth" (HO refused the credentials), "unavailable" (HO's 5xx or
    # 429, no answer, or one that could not be read), "error" (anything else); None when the cycle did not fail
    error_kind: str | None = None
    next_attempt_in: float = 0.0
    reconciled: list[str] = field(default_factory=list)
    reconcile_failed: dict[str, str] = field(default_factory=dict)
    removed: int = 0  # local rows the reconciliation removed (HO no longer has them)
    busy: bool = False  # not run: another cycle or push was running
    duration: float = 0.0  # seconds the run took (the worker's monotonic clock)
    probed: bool = False  # HO was probed first (after an outage); ``ran`` False: the probe failed
    idle: bool = False  # not run: the outlet is idle and polls HO less often (IdlePolling)


class SyncWorker:
    def __init__(self, push: PushService, pull: PullService, *, outage: OutagePolicy | None = None,
                 reconcile_every: float | None = None, reconcile_max_delete_fraction: float = 0.5,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 idle: IdlePolling | None = None,
                 on_cycle: Callable[[SyncWorker, CycleReport | None], None] | None = None) -> None:
        self._push = push
        self._idle_polling = idle or IdlePolling(maximum=0)  # the worker alone: every due cycle runs
        self._active_at: float | None = None  # when a change last moved either way (a failure, a trigger)
        self._idle_until = 0.0
        # told after every cycle that ran, with its report (a push on its own: None, and only when the state
        # changed): the outlet's status and the cycle's record in its database
        self._on_cycle = on_cycle
        self._pull = pull
        self._outage = outage or OutagePolicy()
        self._monotonic = monotonic
        self._wall = wall  # the fleet's common clock: where an idle outlet's poll lands on its grid
        self._reconcile_every = reconcile_every
        self._reconcile_fraction = reconcile_max_delete_fraction
        self._next_reconcile = 0.0
        self._failures = 0
        self._cycles_failed = 0  # outage-like failures of cycles (not probes) since the last success
        self._probe_first = False  # HO was away: the next attempt asks its version endpoint first
        self._not_before = 0.0
        self._tried_at = float("-inf")  # when the last attempt went to HO (a sale's probe keeps a gap from it)
        self._retry_until = 0.0  # HO asked to slow down (429, Retry-After): no sale probes HO before this
        self._lock = threading.Lock()  # one cycle (or push on commit) at a time in this process
        self._running_push = False  # what holds the lock is a push on commit, not a cycle
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._after: list[Callable[[], None]] = []
        self._after_lock = threading.Lock()
        self.last_error: str | None = None
        self.auth_error: str | None = None
        self.last_error_kind: str | None = None  # the last failure's CycleReport.error_kind; None once one succeeds
        # runs that may have removed outbox items (sent, folded, or a pull's conflicts): SQLite numbers new
        # items after the highest left, so the commit watcher's mark is stale after one of these
        self.outbox_runs = 0

    @property
    def online(self) -> bool:
        return self._failures == 0

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float) -> bool:
        """Ask a running cycle to finish early and wait up to ``timeout`` for it; answers whether it did."""
        self._stop.set()
        return self._idle.wait(timeout)

    def when_idle(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once no cycle runs: now, or when the running one ends (it finishes its request and
        settles HO's answer first: an upload HO applied is not sent again)."""
        with self._after_lock:
            if not self._idle.is_set():
                self._after.append(fn)
                return
        fn()

    def run_cycle(self, *, force: bool = False) -> CycleReport:
        """Push, pull, push; ``force`` (a trigger, sync_now) does not wait out the outage backoff."""
        return self._run(force=force, push_only=False)

    def push_due(self) -> CycleReport:
        """Push what is due, no pull: a committed change on its way to HO (push on commit). It obeys the
        outage backoff (HO away: a busy till makes no request storm), but probes HO at most every
        SALE_PROBE_GAP seconds while HO does not answer, so the first sale after HO's return goes at once.
        It never waits for a running cycle (``ran=False``, ``busy=True``: its last push may have missed the
        change; ask again after it)."""
        return self._run(force=False, push_only=True)

    def _run(self, *, force: bool, push_only: bool) -> CycleReport:
        now = self._monotonic()
        if self._stop.is_set():
            return CycleReport(ran=False, error="stopped")
        if not force and self._held_back(now, push_only):
            return CycleReport(ran=False, next_attempt_in=self._not_before - now)
        if not force and not push_only and now < self._idle_until:
            return CycleReport(ran=False, idle=True)  # nothing moved for a while: HO is asked less often
        if not self._enter(wait=not push_only):
            return CycleReport(ran=False, error="a cycle is already running", busy=True)
        with self._after_lock:  # busy first, then look at the flag: stop() sets it, then waits for idle
            self._idle.clear()
        if self._stop.is_set():  # asked to stop (while it waited for a push to end, say)
            self._leave()
            return CycleReport(ran=False, error="stopped")
        now = self._monotonic()
        if push_only and self._held_back(now, push_only):
            self._leave()  # a cycle that held the lock just failed (a Retry-After, say): the sale waits
            return CycleReport(ran=False, next_attempt_in=self._not_before - now)
        report = CycleReport(ran=True)
        started, before = self._monotonic(), self._state()
        self._tried_at = started
        try:
            versions: VersionInfo | Literal["ask"] | None = "ask"
            if self._probe_first and not force:
                report.ran, report.probed = False, True
                versions = self._pull.versions()  # raises while HO is still away
                report.ran = True
                self._probe_first, self._not_before = False, 0.0  # HO answered: the breaker is closed
            if push_only:
                report.push.add(self._push.drain())
            else:
                report.push.add(self._push.drain())
                # the probe's answer serves the pull: a fleet back from an outage asks HO once less each
                report.pull = self._pull.pull_all(force=force, versions=versions)
                self._maybe_reconcile(report, force)
                report.push.add(self._push.drain())
        except PosyncError as exc:
            self._failed(exc, report)
        except Exception as exc:  # a bug: never out of sync_now(), shown with its traceback once per kind
            if self.last_error != f"{type(exc).__name__}":
                log.exception("sync cycle failed", extra={"event": "sync.cycle_crashed", "error": type(exc).__name__})
            self.last_error = type(exc).__name__
            self._failed(exc, report, quiet=True)
        else:
            if not push_only or report.push.batches:  # a push that sent nothing learnt nothing of HO
                self._succeeded()
            self._note_activity(report, force=force, push_only=push_only)
        finally:
            report.duration = self._monotonic() - started
            if not push_only or report.push.sent or report.push.coalesced_away:
                self.outbox_runs += 1
            # a push on commit records the outlet's state only when it changed (not one write per sale)
            if not push_only or self._state() != before:
                self._report_state(None if push_only else report)
            self._leave()
        return report

    def _held_back(self, now: float, push_only: bool) -> bool:
        """Not yet: the outage backoff (or HO's Retry-After) runs, and no sale may probe HO meanwhile."""
        return now < self._not_before and not (push_only and self._sale_may_probe(now))

    def _sale_may_probe(self, now: float) -> bool:
        """A push on commit while HO does not answer at all probes it, at most every SALE_PROBE_GAP (or a
        quarter of the probe cap, if longer), and never while HO asked to slow down (a 429, a Retry-After:
        until the spread retry) or answers probes yet fails cycles (that is backoff)."""
        gap = max(SALE_PROBE_GAP, self._outage.probe_cap / 4)
        return (self._probe_first and self._cycles_failed <= 1 and now >= self._retry_until
                and now - self._tried_at >= gap)

    def _leave(self) -> None:
        """Give the one-at-a-time lock back, mark the worker idle and run what waited for that."""
        self._running_push = False
        self._lock.release()
        with self._after_lock:
            self._idle.set()
            after, self._after = self._after, []
        for fn in after:
            fn()

    def _enter(self, *, wait: bool) -> bool:
        """Take the one-at-a-time lock. A cycle waits (bounded) for a push on commit to end, rather than
        skip its tick: pushes are short, and a till that sells all day must not starve pull."""
        if self._lock.acquire(blocking=False):
            self._running_push = not wait
            return True
        if wait and self._running_push and self._lock.acquire(timeout=PUSH_WAIT):
            self._running_push = False
            return True
        return False

    def _state(self) -> tuple[bool, str | None, str | None, str | None]:
        return self.online, self.last_error, self.auth_error, self.last_error_kind

    def _note_activity(self, report: CycleReport, *, force: bool, push_only: bool) -> None:
        """Idle polling: a cycle (or push) that moved something, or was asked for, keeps HO asked every
        interval; quiet cycles make the next one wait the longer the outlet has been idle."""
        now = self._monotonic()
        moved = (report.push.sent or report.push.coalesced_away or report.pull.applied.written
                 or report.pull.applied.deleted or report.pull.applied.conflicts or report.removed)
        if moved or force or self._active_at is None:
            self._active_at, self._idle_until = now, 0.0
        elif not push_only:
            wait = self._idle_polling.wait(now - self._active_at, self._wall())
            self._idle_until = now + wait if wait else 0.0

    def _succeeded(self) -> None:
        if self._failures:
            log.info("head office reachable again after %d failed attempts", self._failures,
                     extra={"event": "ho.reachable", "failures": self._failures})
        if self.auth_error:
            log.info("head office accepts the credentials again", extra={"event": "ho.auth_accepted"})
        self._failures = self._cycles_failed = 0
        self._probe_first = False
        self._not_before = 0.0
        self.last_error = self.auth_error = self.last_error_kind = None

    def _report_state(self, report: CycleReport | None) -> None:
        if self._on_cycle is None:
            return
        try:
            self._on_cycle(self, report)
        except Exception as exc:  # the database is busy or away: the next cycle reports again
            log.debug("cycle state not recorded: %s", exc)

    def _maybe_reconcile(self, report: CycleReport, force: bool) -> None:
        # on its own schedule: a forced cycle (sync_now) ignores the outage backoff, not this one
        if self._reconcile_every is None or self._stop.is_set() or self._monotonic() < self._next_reconcile:
            return
        self._next_reconcile = self._monotonic() + self._reconcile_every
        for result in self._pull.reconcile(max_delete_fraction=self._reconcile_fraction):
            if result.error:
                report.reconcile_failed[result.resource] = result.error
                # tried again soon (its resource backs off on its own meanwhile), not in an hour
                self._next_reconcile = min(self._next_reconcile, self._monotonic() + RECONCILE_RETRY)
            elif not result.skipped:
                report.reconciled.append(result.resource)
                report.removed += result.removed

    def _failed(self, exc: Exception, report: CycleReport, *, quiet: bool = False) -> None:
        self._active_at, self._idle_until = self._monotonic(), 0.0  # back from an outage: polled as due
        self._failures += 1
        retry_after = exc.retry_after if isinstance(exc, HOUnavailableError) else None
        # HO away (connection, timeout, 5xx, 429): probe it; refused credentials or a bad answer are no outage
        outage = isinstance(exc, TransportError) and not isinstance(exc, (AuthenticationError, ProtocolError))
        self._cycles_failed += outage and report.ran
        honoured = self._outage.honoured(retry_after)  # HO's Retry-After with the fleet's spread
        if outage and self._cycles_failed <= 1:
            delay = max(self._outage.probe_delay(self._failures), honoured)
        else:  # not an outage, or HO answers probes yet its cycles fail: the whole backoff
            delay = max(self._outage.delay(self._cycles_failed if outage else self._failures), honoured)
        self._probe_first = outage
        self._not_before = self._monotonic() + delay
        rate_limited = isinstance(exc, HOUnavailableError) and exc.status == 429
        # no sale probes HO before its Retry-After (spread), nor at all before the next try after a bare 429
        self._retry_until = self._not_before if rate_limited and not retry_after else self._monotonic() + honoured
        report.error, report.next_attempt_in = str(exc) or type(exc).__name__, delay
        report.error_kind = ("auth" if isinstance(exc, AuthenticationError)
                             else "unavailable" if isinstance(exc, TransportError) else "error")
        self.last_error_kind = report.error_kind
        if quiet:
            return
        if isinstance(exc, AuthenticationError):
            if self.auth_error is None:
                log.error("head office refuses posync's credentials (%s); fix the settings. Changes stay queued.",
                          exc, extra={"event": "ho.auth_refused", "error": str(exc)})
            self.auth_error = str(exc)
        elif self._failures == 1:
            if isinstance(exc, HOUnavailableError) and exc.status == 429:
                log.warning("head office asks posync to slow down (429, rate limit); changes stay queued, next try "
                            "in %.0fs", delay,
                            extra={"event": "ho.rate_limited", "error": str(exc), "retry_in_seconds": delay})
            elif isinstance(exc, TransportError):
                log.warning("head office unreachable (%s); changes stay queued, next try in %.0fs", exc, delay,
                            extra={"event": "ho.unreachable", "error": str(exc), "retry_in_seconds": delay})
            else:
                log.warning("sync cycle failed (%s); changes stay queued, next try in %.0fs", exc, delay,
                            extra={"event": "sync.cycle_failed", "error": str(exc), "retry_in_seconds": delay})
        else:
            log.debug("still failing (%s); next try in %.0fs", exc, delay)
        self.last_error = str(exc)
