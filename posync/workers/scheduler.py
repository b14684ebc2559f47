"""The embedded scheduler: APScheduler 3.x in the POS process, one interval job running sync cycles.

Retries are driven by time: the job wakes every ``interval`` seconds whether or not anything was written,
and items whose backoff has passed are due again. One cycle at a time per process: a tick that comes
while a cycle still runs (a slow HO) returns at once, rather than APScheduler warning on every tick that
it skipped one; several processes share the outbox safely through leases.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from posync.errors import ConfigurationError
from posync.workers.sync_worker import SyncWorker

__all__ = ["EmbeddedScheduler"]

log = logging.getLogger("posync.scheduler")
JOB_ID = "posync-sync-cycle"
HOUSEKEEPING_ID = "posync-housekeeping"


class EmbeddedScheduler:
    def __init__(self, worker: SyncWorker, interval_seconds: float, scheduler: Any | None = None, *,
                 housekeeping: Callable[[], None] | None = None, housekeeping_seconds: float = 3600.0,
                 photos: Any | None = None) -> None:
        try:
            from apscheduler.schedulers.background import BackgroundScheduler
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise ConfigurationError("the scheduler needs APScheduler: pip install 'posync[scheduler]'") from exc
        self._worker = worker
        self._interval = interval_seconds
        self._housekeeping = housekeeping
        self._housekeeping_seconds = housekeeping_seconds
        # a host that already runs an APScheduler can pass it in; we then never shut it down
        self._owns_scheduler = scheduler is None
        self._scheduler = scheduler or BackgroundScheduler(timezone="UTC")
        self._photos = photos  # a posync.photos.PhotoSync: its hourly and nightly passes join the schedule
        self._cycle = threading.Lock()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running) and self._scheduler.get_job(JOB_ID) is not None

    def start(self) -> None:
        self._scheduler.add_job(self._tick, "interval", seconds=self._interval, id=JOB_ID, replace_existing=True,
                                max_instances=2, coalesce=True, next_run_time=datetime.now(UTC))
        if self._housekeeping is not None:
            self._scheduler.add_job(self._run_housekeeping, "interval", seconds=self._housekeeping_seconds,
                                    id=HOUSEKEEPING_ID, replace_existing=True, max_instances=1, coalesce=True)
        if self._photos is not None:
            from posync.workers.photo_jobs import photo_jobs

            # the hourly incremental pass and the nightly full check, at the minute and hour the settings
            # gave the PhotoSync; always both: the legacy photo API's deletes are seen by the full check only
            photo_jobs(self._scheduler, self._photos)
        if self._owns_scheduler and not self._scheduler.running:
            self._scheduler.start()

    def trigger(self) -> None:
        """Run a cycle as soon as the scheduler can (seed 003's "sync now")."""
        self._scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))

    def stop(self) -> None:
        """Remove posync's jobs (and stop the scheduler posync started) without waiting for a running
        cycle: the worker is asked to stop and waited for, with a bound, by ``Posync.close``."""
        for job_id in (JOB_ID, HOUSEKEEPING_ID):
            if self._scheduler.get_job(job_id) is not None:
                self._scheduler.remove_job(job_id)
        if self._photos is not None:
            from posync.workers.photo_jobs import remove_photo_jobs

            remove_photo_jobs(self._scheduler)
        if self._owns_scheduler and self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _run_housekeeping(self) -> None:
        try:
            assert self._housekeeping is not None
            self._housekeeping()
        except Exception:
            log.exception("housekeeping failed")

    def _tick(self) -> None:
        if not self._cycle.acquire(blocking=False):
            return  # the cycle still running will see whatever this tick would have
        try:
            self._worker.run_cycle()
        except Exception:  # keep the job alive; a bug must not stop syncing forever
            log.exception("sync cycle failed")
        finally:
            self._cycle.release()
