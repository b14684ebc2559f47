"""Schedules that belong to the outlet (issue 17, item 5): the photo passes at the configured minute and hour
in the outlet's time zone, every schedule at a stable per-outlet offset (from the outlet id) plus jitter,
and the sync cycle brought forward to the worker's next attempt while HO is away. No scheduler runs a job
here: triggers are asked for their next times at fixed instants."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from hypothesis import given
from hypothesis import strategies as st

import posync
from posync.errors import ConfigurationError
from posync.migrations import upgrade
from posync.workers.photo_jobs import FULL_JOB_ID, INCREMENTAL_JOB_ID
from posync.workers.schedule import (
    FIRST_RUN_SPREAD,
    JITTER_FRACTION,
    OutletSchedule,
    PhasedInterval,
    outlet_schedule,
    phase,
    zone,
)
from posync.workers.scheduler import HOUSEKEEPING_ID, JOB_ID, EmbeddedScheduler
from posync.workers.sync_worker import CycleReport

JAKARTA = zone("Asia/Jakarta")  # UTC+7, no DST
NOON_JAKARTA = datetime(2026, 12, 7, 12, 0, tzinfo=JAKARTA)


@pytest.fixture
def photo_jobs(db_url: str, tmp_path: Path) -> Iterator[Any]:
    """A Posync with photos, in Asia/Jakarta, started on a host scheduler that never runs a job; yields
    ``jobs(outlet_id)``: the photo jobs' triggers of that outlet."""
    from posync.photos import build_photo_sync

    engine = posync.create_engine(db_url)
    upgrade(engine)
    opened: list[Any] = []

    def jobs(outlet_id: str) -> dict[str, Any]:
        settings = posync.PosyncSettings(api_key="k", outlet_id=outlet_id, timezone="Asia/Jakarta",
                                         photo_incremental_minute=17, photo_full_hour=21,
                                         photo_store=f"fs:{tmp_path / 'photos'}")
        photos = build_photo_sync(settings, engine=engine)
        posync.rebind_outlet(engine, settings)  # one database, several outlets in turn
        pos = posync.Posync(engine, posync.Registry([]), settings, photos=photos)
        opened.extend([pos, photos])
        host = BackgroundScheduler(timezone="UTC")  # the host's, not started: the jobs wait in it
        pos.start(host)
        return {j.id: j.trigger for j in host.get_jobs()}

    try:
        yield jobs
    finally:
        for thing in opened:
            thing.close()
        engine.dispose()


def test_photo_passes_run_at_the_local_minute_and_hour_plus_the_outlets_offset(photo_jobs: Any) -> None:
    window = {INCREMENTAL_JOB_ID: 15 * 60.0, FULL_JOB_ID: 60 * 60.0}  # the spread settings' defaults
    base = {INCREMENTAL_JOB_ID: NOON_JAKARTA.replace(minute=17),  # the next :17 in Jakarta
            FULL_JOB_ID: NOON_JAKARTA.replace(hour=21)}  # 21:00 in Jakarta (14:00 UTC), not 21:00 UTC
    seen: dict[str, dict[str, float]] = {}
    for outlet_id in ("outlet-417", "outlet-418", "outlet-417"):
        triggers = photo_jobs(outlet_id)
        for job_id in (INCREMENTAL_JOB_ID, FULL_JOB_ID):
            first = triggers[job_id].get_next_fire_time(None, NOON_JAKARTA)
            late = (first - base[job_id]).total_seconds()
            assert 0 <= late < window[job_id] * (1 + JITTER_FRACTION), (job_id, first.astimezone(JAKARTA))
            # the run after it: the same local time a period later (an hour, a day), at the same offset
            period = timedelta(hours=1) if job_id == INCREMENTAL_JOB_ID else timedelta(days=1)
            second = triggers[job_id].get_next_fire_time(first, first)
            assert abs((second - first) - period) < timedelta(seconds=window[job_id] * JITTER_FRACTION)
            seen.setdefault(outlet_id, {})[job_id] = late
    for job_id in (INCREMENTAL_JOB_ID, FULL_JOB_ID):
        jitter = window[job_id] * JITTER_FRACTION
        # the same outlet: the same place (give or take its jitter); another outlet: another place
        assert abs(seen["outlet-417"][job_id] - phase("outlet-417", job_id) * window[job_id]) < jitter
        assert abs(seen["outlet-418"][job_id] - phase("outlet-418", job_id) * window[job_id]) < jitter


def test_an_unknown_time_zone_is_refused_with_a_typed_error() -> None:
    with pytest.raises(ConfigurationError, match="time zone"):
        posync.PosyncSettings(api_key="k", timezone="Asia/Atlantis")
    with pytest.raises(ConfigurationError, match="Mars/Olympus"):
        OutletSchedule("outlet-1", "Mars/Olympus")


def test_the_local_time_holds_across_a_dst_change() -> None:
    """Europe/Berlin: 02:00 local is 01:00 UTC in winter and 00:00 UTC in summer; the offset is added in
    real seconds on top."""
    berlin = OutletSchedule("outlet-9", "Europe/Berlin", full_spread=600.0, jitter_fraction=0.0)
    full = berlin.cron(FULL_JOB_ID, berlin.full_spread, hour=2, minute=0)
    offset = timedelta(seconds=berlin.offset(FULL_JOB_ID, 600.0))
    winter = full.get_next_fire_time(None, datetime(2026, 3, 27, 12, tzinfo=UTC))  # the night to the 28th
    summer = full.get_next_fire_time(winter, winter)  # the 29th is the first summer day; 02:00 does not exist
    after = full.get_next_fire_time(summer, summer)
    assert winter == datetime(2026, 3, 28, 1, tzinfo=UTC) + offset
    assert after == datetime(2026, 3, 30, 0, tzinfo=UTC) + offset  # 02:00 CEST
    assert winter < summer < after


@given(st.text(max_size=40), st.sampled_from([0.1, 30.0, 3600.0, 86_400.0]), st.text(max_size=20))
def test_an_offset_is_within_its_period_and_the_same_for_the_same_outlet(outlet_id: str, period: float,
                                                                         job: str) -> None:
    offset = OutletSchedule(outlet_id).offset(job, period)
    assert 0 <= offset < period
    assert OutletSchedule(outlet_id).offset(job, period) == offset  # stable: a hash, not Python's hash()
    assert OutletSchedule(outlet_id, spread=False).offset(job, period) == 0.0  # the schedule before issue 17


def test_two_thousand_outlets_spread_evenly_over_the_interval() -> None:
    period, buckets = 30.0, 30
    counts = Counter(int(OutletSchedule(f"outlet-{n}").offset(JOB_ID, period) * buckets / period)
                     for n in range(2000))
    assert len(counts) == buckets  # every second of the interval has outlets
    assert max(counts.values()) <= 2000 / buckets * 1.5  # no second holds more than 1.5x its share


@given(st.floats(0.5, 7200.0), st.floats(0, 0.999), st.floats(0, 0.049), st.floats(1e9, 2e9))
def test_the_interval_stays_on_its_grid_and_its_jitter_never_accumulates(period: float, phase_: float,
                                                                         jitter: float, start: float) -> None:
    trigger = PhasedInterval(period, phase_ * period, jitter * period, rng=random.Random(int(start)))
    fire = trigger.get_next_fire_time(None, datetime.fromtimestamp(start, UTC))
    for _ in range(50):
        previous, fire = fire, trigger.get_next_fire_time(fire, fire)
        grid = (fire.timestamp() - phase_ * period) % period  # how far past its grid point
        assert min(grid, period - grid) <= jitter * period + 1e-3 * period
        assert period * (1 - 0.05) - 1e-3 < (fire - previous).total_seconds() < period * 1.05 + 1e-3


class _Worker:
    def __init__(self, report: CycleReport) -> None:
        self.report = report

    def run_cycle(self, *, force: bool = False) -> CycleReport:
        return self.report


def test_the_first_cycle_is_offset_then_every_job_is_on_the_outlets_grid() -> None:
    now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    first: dict[str, float] = {}
    for outlet_id in ("outlet-417", "outlet-418"):
        host = BackgroundScheduler(timezone="UTC")
        scheduler = EmbeddedScheduler(_Worker(CycleReport(ran=True)), 30.0, host,  # type: ignore[arg-type]
                                      housekeeping=lambda: None, schedule=OutletSchedule(outlet_id))
        scheduler.start()
        jobs = {j.id: j.trigger for j in host.get_jobs()}
        cycle = jobs[JOB_ID].get_next_fire_time(None, now)
        first[outlet_id] = (cycle - now).total_seconds()
        assert 0 < first[outlet_id] < min(30.0, FIRST_RUN_SPREAD) * (1 + JITTER_FRACTION)
        later = jobs[JOB_ID].get_next_fire_time(cycle, cycle)
        expected = phase(outlet_id, JOB_ID) * 30.0
        assert abs(later.timestamp() % 30.0 - expected) <= 30.0 * JITTER_FRACTION
        housekeeping = jobs[HOUSEKEEPING_ID].get_next_fire_time(None, now)  # the next point of its hourly grid
        assert abs(housekeeping.timestamp() % 3600.0 - phase(outlet_id, HOUSEKEEPING_ID) * 3600.0) <= 180.0
    assert first["outlet-417"] != first["outlet-418"]


def test_while_ho_is_away_the_cycle_is_brought_forward_to_the_next_attempt() -> None:
    """An interval of an hour, HO away, the worker's next attempt (a probe) due in 3 s: the job runs then,
    not in an hour; a later attempt than the job's next run changes nothing."""
    host = BackgroundScheduler(timezone="UTC")
    host.start(paused=True)  # next run times are booked; nothing runs
    try:
        worker = _Worker(CycleReport(ran=False, error="HO away", next_attempt_in=3.0, probed=True))
        scheduler = EmbeddedScheduler(worker, 3600.0, host, schedule=OutletSchedule("outlet-417"))  # type: ignore[arg-type]
        scheduler.start()
        host.modify_job(JOB_ID, next_run_time=datetime.now(UTC) + timedelta(hours=1))  # the first run was
        before = datetime.now(UTC)
        scheduler._tick()
        after = datetime.now(UTC)
        due = host.get_job(JOB_ID).next_run_time
        assert before + timedelta(seconds=3) <= due <= after + timedelta(seconds=3)
        worker.report = CycleReport(ran=False, next_attempt_in=7200.0)
        scheduler._tick()
        assert host.get_job(JOB_ID).next_run_time == due
        scheduler.stop()
    finally:
        host.shutdown(wait=False)


def test_seed_profile_outlets_named_by_their_store_alone_do_not_run_in_step() -> None:
    """The README's seed-profile settings give store_id, not outlet_id (it keeps its default): two such
    outlets still get their own phases, for the sync cycle, the photo pass and the idle polls; and two
    tills of one store (a review) do too."""
    from posync.settings import PosyncSettings

    def outlet(store: str) -> PosyncSettings:
        return PosyncSettings(ho_profile="seed", username="edge_user", password="pw", company_id="c-1",
                              brand_id="b-1", store_id=store)

    one, two = outlet("fe2d2dbf-0001"), outlet("fe2d2dbf-0002")
    assert one.outlet_id == two.outlet_id  # the default, the same everywhere
    for job, window in ((JOB_ID, 30.0), (INCREMENTAL_JOB_ID, 900.0)):
        assert outlet_schedule(one).offset(job, window) != outlet_schedule(two).offset(job, window)
    assert one.idle_polling().phase != two.idle_polling().phase
    till_a, till_b = (PosyncSettings(api_key="k", store_id="store-7", outlet_id=f"till-{n}") for n in "ab")
    assert outlet_schedule(till_a).offset(JOB_ID, 30.0) != outlet_schedule(till_b).offset(JOB_ID, 30.0)  # one store
