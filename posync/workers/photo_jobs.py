"""Scheduler jobs for APScheduler 3.x (``BackgroundScheduler.add_job``, as posync/workers/scheduler.py):
an hourly incremental pass and a nightly full check (seed 001's Celery beat: hourly, and 2 AM full), at
the minute and hour the settings give (``photo_incremental_minute``, ``photo_full_hour``), which
``build_photo_sync`` hands the PhotoSync. Both are always added: with the legacy API (seed 000), whose
listing reports no deletes, the full check is the only pass that removes photos HO deleted.

    photo_jobs(scheduler, photo_sync)            # add both; the host's scheduler, started by the host
    remove_photo_jobs(scheduler)

Given the outlet's :class:`~posync.workers.schedule.OutletSchedule` (``Posync.start`` gives it), the times
are the outlet's local times (setting ``timezone``) and each outlet runs at its own offset within a window
after them (``photo_incremental_spread_minutes``, ``photo_full_spread_minutes``), plus jitter: 2,000 outlets
do not all list HO's photos at :00.

``max_instances=1`` and ``coalesce`` keep one run of each at a time; PhotoSync itself runs one pass at a time
(a full check that finds an incremental running returns ``busy`` and runs again on its next tick).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from posync.services.photos.service import PhotoSync
from posync.workers.schedule import OutletSchedule

__all__ = ["FULL_JOB_ID", "INCREMENTAL_JOB_ID", "photo_jobs", "remove_photo_jobs", "run_pass"]

log = logging.getLogger("posync.photos")
INCREMENTAL_JOB_ID = "posync-photos-incremental"
FULL_JOB_ID = "posync-photos-full"


def run_pass(photo_sync: PhotoSync, full: bool, when: Callable[[], bool] | None = None) -> dict[str, Any] | None:
    """What a job runs: one pass, errors logged (a failing pass must not kill the job); nothing when
    ``when`` says this process is not the outlet's syncer."""
    if when is not None and not when():
        return None
    try:
        report = photo_sync.sync(full=full)
    except Exception:
        log.exception("photo %s pass failed", "full" if full else "incremental")
        return None
    if not report.ok and not report.busy:
        log.warning("photo %s pass: %d failed, %d not synced %s, %d deletes held (%s), error: %s",
                    "full" if full else "incremental", report.failed, report.unsynced, report.states,
                    report.deletes_held, report.delete_note, report.error)
    return report.as_dict()


def photo_jobs(scheduler: Any, photo_sync: PhotoSync, *, incremental_minute: int | None = None,
               full_hour: int | None = None, full_minute: int = 0, timezone: str | None = None,
               when: Callable[[], bool] | None = None, schedule: OutletSchedule | None = None) -> list[str]:
    """Add the two jobs to ``scheduler``; returns their ids. The minute and hour default to the
    PhotoSync's (from the settings). Times are in ``timezone``, else the ``schedule``'s (the outlet's time
    zone), else the scheduler's: the outlet's night is what matters for the full check. With a ``schedule``
    each pass runs at the outlet's offset within its window after that time."""
    if incremental_minute is None:
        incremental_minute = photo_sync.incremental_minute
    if full_hour is None:
        full_hour = photo_sync.full_hour
    common = {"replace_existing": True, "max_instances": 1, "coalesce": True}
    if schedule is None:  # the host's own scheduler and times, no offset
        tz = {"timezone": timezone} if timezone else {}
        scheduler.add_job(run_pass, "cron", args=[photo_sync, False, when], minute=incremental_minute,
                          id=INCREMENTAL_JOB_ID, misfire_grace_time=900, **common, **tz)
        scheduler.add_job(run_pass, "cron", args=[photo_sync, True, when], hour=full_hour, minute=full_minute,
                          id=FULL_JOB_ID, misfire_grace_time=3600, **common, **tz)
        return [INCREMENTAL_JOB_ID, FULL_JOB_ID]
    if timezone:
        schedule = OutletSchedule(schedule.outlet_id, timezone, schedule.incremental_spread, schedule.full_spread,
                                  schedule.spread, schedule.jitter_fraction, schedule.rng)
    incremental = schedule.cron(INCREMENTAL_JOB_ID, schedule.incremental_spread, minute=incremental_minute)
    full = schedule.cron(FULL_JOB_ID, schedule.full_spread, hour=full_hour, minute=full_minute)
    scheduler.add_job(run_pass, incremental, args=[photo_sync, False, when], id=INCREMENTAL_JOB_ID,
                      misfire_grace_time=900, **common)
    scheduler.add_job(run_pass, full, args=[photo_sync, True, when], id=FULL_JOB_ID, misfire_grace_time=3600,
                      **common)
    return [INCREMENTAL_JOB_ID, FULL_JOB_ID]


def remove_photo_jobs(scheduler: Any) -> None:
    for job_id in (INCREMENTAL_JOB_ID, FULL_JOB_ID):
        if scheduler.get_job(job_id) is not None:
            scheduler.remove_job(job_id)
