"""The embedded scheduler: APScheduler 3.x in the POS process, one interval job running sync cycles.

Retries are driven by time: the job wakes every ``interval`` seconds whether or not anything was written,
and items whose backoff has passed are due again. One cycle at a time per process: a tick that comes
while a cycle still runs (a slow HO) returns at once, rather than APScheduler warning on every tick that
it skipped one. With several processes on one outlet database (``uvicorn --workers 4``), only the holder
of the syncer lease (posync/workers/leader.py) runs the sync cycle, housekeeping and the photo passes;
the others renew-or-watch the lease and pass a trigger on to the holder through the database. ``enabled``
(the outlet's sync switch, ``posync.services.outlet.SyncSwitch``) is asked before each of those jobs runs:
switched off, they wait; the lease is still renewed and capture goes on. Between
ticks, a committed change is pushed at once (push on commit: posync/workers/commit_watch.py).

Each job runs at the outlet's own phase of its period (``posync.workers.schedule``: an offset from the
outlet id, plus jitter), so a fleet does not tick together; the photo passes run at their local times in
the outlet's time zone. While HO is away, the worker's next attempt (a cheap probe, then the cycle) is
brought forward to its due time rather than waiting for the next tick.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from posync.errors import ConfigurationError
from posync.workers.commit_watch import CommitWatcher
from posync.workers.leader import SyncerLease
from posync.workers.sync_worker import SyncWorker

if TYPE_CHECKING:  # APScheduler is imported when a scheduler is built, not with posync
    from posync.workers.schedule import OutletSchedule

__all__ = ["EmbeddedScheduler"]

log = logging.getLogger("posync.scheduler")
JOB_ID = "posync-sync-cycle"
HOUSEKEEPING_ID = "posync-housekeeping"
LEASE_ID = "posync-syncer-lease"


JOBS_LOGGER = "posync.jobs"  # APScheduler's per-run lines for posync's jobs ("Running job", "executed")


def _quiet(name: str) -> logging.Logger:
    """The logger of the APScheduler posync owns. Its INFO lines come twice a cycle: they are off unless the
    host set a level on this logger itself (``logging.getLogger("posync.jobs").setLevel(logging.INFO)``);
    warnings and errors go through as posync's own. Only posync's own logger is touched."""
    quiet = logging.getLogger(name)
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)
    return quiet


def _quiet_executor() -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor

    class QuietExecutor(ThreadPoolExecutor):  # type: ignore[misc]
        """posync's jobs on threads named ``posync-job_N``, logging to ``posync.jobs``."""

        def start(self, scheduler: Any, alias: str) -> None:
            super().start(scheduler, alias)
            self._logger = _quiet(JOBS_LOGGER)  # run_job looks the logger up by this one's name

    return QuietExecutor(max_workers=10, pool_kwargs={"thread_name_prefix": "posync-job"})


class EmbeddedScheduler:
    def __init__(self, worker: SyncWorker, interval_seconds: float, scheduler: Any | None = None, *,
                 housekeeping: Callable[[], None] | None = None, housekeeping_seconds: float = 3600.0,
                 photos: Any | None = None, lease: SyncerLease | None = None,
                 renew_seconds: float = 1.5, enabled: Callable[[], bool] | None = None,
                 watcher: CommitWatcher | None = None, schedule: OutletSchedule | None = None) -> None:
        try:
            from apscheduler.schedulers.background import BackgroundScheduler
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ConfigurationError("APScheduler is missing (a dependency of posync): reinstall posync") from exc
        self._worker = worker
        self._interval = interval_seconds
        self._housekeeping = housekeeping
        self._housekeeping_seconds = housekeeping_seconds
        # a host that already runs an APScheduler can pass it in; we then never shut it down
        self._owns_scheduler = scheduler is None
        self._scheduler = scheduler or BackgroundScheduler(timezone="UTC", logger=_quiet(JOBS_LOGGER),
                                                           executors={"default": _quiet_executor()})
        self._photos = photos  # a posync.photos.PhotoSync: its hourly and nightly passes join the schedule
        self._cycle = threading.Lock()
        self._forced = threading.Event()  # the next cycle was asked for (trigger), not just due
        self._lease = lease  # None: this process syncs whatever others do (a single-process host)
        self._renew_seconds = renew_seconds
        self._enabled = enabled  # None: always on
        self._watcher = watcher  # push on commit: its thread runs beside the jobs, pushing for the syncer only
        if schedule is None:
            from posync.workers.schedule import OutletSchedule

            schedule = OutletSchedule()
        self._schedule = schedule  # the outlet's phases and time zone

    @property
    def syncer(self) -> bool:
        """Whether this process runs the sync jobs now (it holds the syncer lease, or there is none)."""
        return self._lease is None or self._lease.held

    def may_sync(self) -> bool:
        """Whether a sync job (cycle, housekeeping, photo pass) runs now: this process is the syncer and
        the outlet's sync switch is on. Cheap: the switch reads the database at most every few seconds."""
        return self.syncer and (self._enabled is None or self._enabled())

    def next_runs(self, now: datetime | None = None) -> dict[str, datetime | None]:
        """posync's jobs (not the lease's renewal) and when each runs next, by name without "posync-". On
        the outlet's own grid (posync/workers/schedule.py: its phase comes from the outlet id), so every
        worker process tells the same times, whichever is the syncer; each run adds its small jitter."""
        from posync.workers.schedule import OffsetCron, PhasedInterval

        now = now or datetime.now(UTC)
        runs: dict[str, datetime | None] = {}
        for job in self._scheduler.get_jobs():
            if not job.id.startswith("posync-") or job.id == LEASE_ID:
                continue
            trigger = job.trigger
            when: datetime | None
            if isinstance(trigger, PhasedInterval):
                when = datetime.fromtimestamp(trigger.next_grid_point(now.timestamp()), UTC)
            elif isinstance(trigger, OffsetCron):
                base = trigger.base_after(now)
                when = None if base is None else base.astimezone(UTC) + timedelta(seconds=trigger.offset)
            else:  # a job of a scheduler not started yet has no next_run_time
                when = getattr(job, "next_run_time", None)
            runs[job.id.removeprefix("posync-")] = when
        return runs

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running) and self._scheduler.get_job(JOB_ID) is not None

    def start(self) -> None:
        if self._lease is not None:  # decided before the first tick: the holder runs the first cycle
            self._lease.renew()
            self._scheduler.add_job(self._renew, "interval", seconds=self._renew_seconds, id=LEASE_ID,
                                    replace_existing=True, max_instances=1, coalesce=True)
        if self._watcher is not None:  # before the first cycle: what it does not push, the watcher sees
            self._watcher.start()
        # the first cycle soon after the start (at the outlet's phase of a few seconds), then on its grid
        self._scheduler.add_job(self._tick, self._schedule.interval(JOB_ID, self._interval, first_soon=True),
                                id=JOB_ID, replace_existing=True, max_instances=2, coalesce=True)
        if self._housekeeping is not None:
            self._scheduler.add_job(self._run_housekeeping,
                                    self._schedule.interval(HOUSEKEEPING_ID, self._housekeeping_seconds),
                                    id=HOUSEKEEPING_ID, replace_existing=True, max_instances=1, coalesce=True)
        if self._photos is not None:
            from posync.workers.photo_jobs import photo_jobs

            # the hourly incremental pass and the nightly full check, at the minute and hour the settings
            # gave the PhotoSync, in the outlet's time zone, offset within their windows; always both: the
            # legacy photo API's deletes are seen by the full check only
            photo_jobs(self._scheduler, self._photos, when=self.may_sync, schedule=self._schedule)
        if self._owns_scheduler and not self._scheduler.running:
            self._scheduler.start()

    def trigger(self) -> None:
        """Run a cycle as soon as the scheduler can (seed 003's "sync now": asked for, so it does not wait
        out an outage's backoff)."""
        self._forced.set()
        self._scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))

    def stop(self) -> None:
        """Remove posync's jobs (and stop the scheduler posync started) without waiting for a running
        cycle: the worker is asked to stop and waited for, with a bound, by ``Posync.close``; so is the
        commit watcher's thread."""
        if self._watcher is not None:
            self._watcher.stop()
        for job_id in (JOB_ID, HOUSEKEEPING_ID, LEASE_ID):
            if self._scheduler.get_job(job_id) is not None:
                self._scheduler.remove_job(job_id)
        if self._photos is not None:
            from posync.workers.photo_jobs import remove_photo_jobs

            remove_photo_jobs(self._scheduler)
        if self._owns_scheduler and self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _renew(self) -> None:
        renewal = self._lease.renew() if self._lease is not None else None
        if renewal is not None and (renewal.taken_over or renewal.asked):
            self.trigger()  # a new holder drains what the old one left; another process asked for a cycle

    def _run_housekeeping(self) -> None:
        if not self.may_sync():
            return
        try:
            assert self._housekeeping is not None
            self._housekeeping()
        except Exception:
            log.exception("housekeeping failed")

    def _tick(self) -> None:
        if not self.may_sync():
            return  # another process of this outlet syncs, or the outlet's sync is switched off
        if not self._cycle.acquire(blocking=False):
            return  # the cycle still running will see whatever this tick would have
        try:
            if self._forced.is_set():
                self._forced.clear()
                report = self._worker.run_cycle(force=True)
            else:
                report = self._worker.run_cycle()
        except Exception:  # keep the job alive; a bug must not stop syncing forever
            log.exception("sync cycle failed")
            return
        finally:
            self._cycle.release()
        if report.next_attempt_in > 0:  # HO away: the next attempt (a probe) when it is due, not at a tick
            self._bring_forward(report.next_attempt_in)

    def _bring_forward(self, seconds: float) -> None:
        """Run the cycle job in ``seconds`` if that is before its next run. Safe from inside the job:
        APScheduler holds its job-store lock while it books a run, so this waits for that to finish."""
        due = datetime.now(UTC) + timedelta(seconds=seconds)
        job = self._scheduler.get_job(JOB_ID)
        if job is None or (job.next_run_time is not None and job.next_run_time <= due):
            return
        from apscheduler.jobstores.base import JobLookupError

        with contextlib.suppress(JobLookupError):  # removed meanwhile (stop()): nothing to bring forward
            self._scheduler.modify_job(JOB_ID, next_run_time=due)
