"""Each outlet's own place in time: a stable offset from its outlet id, a little jitter per run, and the
outlet's time zone for the photo passes (issue 17, item 5).

A fleet whose outlets all tick at the same instant hits HO with every outlet at once, every cycle. Here
every schedule has a phase in ``[0, 1)`` taken from a hash of the outlet id (the same id, the same phase,
on every machine and every start; 2,000 ids spread evenly), times its period; each run adds a small
random jitter on top, drawn afresh, never accumulated.

* :class:`PhasedInterval`: runs at ``offset + k * period`` on the epoch's grid (plus jitter), whenever the
  process started; the first run comes within a short spread of the start, at the outlet's phase of it.
* :class:`OffsetCron`: a cron time in the outlet's time zone (the photo passes), plus the outlet's offset
  within a window (``photo_incremental_spread_minutes``: minute 17 and a 15-minute window run the pass
  between :17 and :32), plus jitter.

Both are APScheduler 3.x triggers; :class:`OutletSchedule` builds them from one outlet's settings.
``OutletSchedule(spread=False)`` is the schedule before issue 17 (no offset, no jitter): what the fleet
bench compares against.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from posync.errors import ConfigurationError
from posync.retry import phase
from posync.settings import PosyncSettings

__all__ = ["FIRST_RUN_SPREAD", "JITTER_FRACTION", "OffsetCron", "OutletSchedule", "PhasedInterval", "outlet_schedule",
           "phase", "zone"]

# each run's jitter: up to this fraction of its window (0.3 s of a 30 s interval, 9 s of a 15-minute window);
# small: the offsets spread the fleet already, and every fresh draw adds noise to HO's peak second
JITTER_FRACTION = 0.01
# a started outlet's first cycle comes within this (or its interval, if shorter), at its phase of it: a fleet
# started together spreads its first cycles, and a till that just opened still syncs at once
FIRST_RUN_SPREAD = 10.0


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Asia/Jakarta``); an unknown one is a ConfigurationError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {name!r}: give an IANA name such as 'Asia/Jakarta' or "
                                 "'UTC'") from exc


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


class PhasedInterval(BaseTrigger):  # type: ignore[misc]
    """Every ``period`` seconds at ``offset`` past the epoch's grid, plus up to ``jitter`` seconds. A run
    moved off the grid (a trigger, an outage's retry) is followed by the next grid point after it."""

    def __init__(self, period: float, offset: float, jitter: float = 0.0, *, first_delay: float | None = None,
                 first_jitter: float = 0.0, rng: random.Random | None = None) -> None:
        if period <= 0 or not 0 <= offset < period or not 0 <= jitter < period:
            raise ValueError("PhasedInterval: need period > 0, 0 <= offset < period and 0 <= jitter < period")
        self.period, self.offset, self.jitter = period, offset, jitter
        self.first_delay = first_delay  # None: the first run is the next grid point
        self.first_jitter = first_jitter
        self._rng = rng or random.Random()

    def next_grid_point(self, after: float) -> float:
        """The first grid point strictly after ``after``'s slot (epoch seconds). A time a hair before a
        grid point (a datetime keeps microseconds only) is that point's: a run is never booked twice."""
        point = self.offset + (math.floor((after - self.offset + 1e-3) / self.period) + 1) * self.period
        return point if point > after else point + self.period

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        if previous_fire_time is None and self.first_delay is not None:
            fire = _epoch(now) + self.first_delay + self._rng.uniform(0, self.first_jitter)
        else:
            fire = self.next_grid_point(_epoch(previous_fire_time or now)) + self._rng.uniform(0, self.jitter)
        return datetime.fromtimestamp(fire, UTC)

    def __str__(self) -> str:
        return f"every {self.period:g}s at +{self.offset:.1f}s (jitter {self.jitter:.1f}s)"

    def __repr__(self) -> str:
        return f"<PhasedInterval {self}>"


class OffsetCron(BaseTrigger):  # type: ignore[misc]
    """``cron``'s times (in its own time zone), each moved ``offset`` seconds later, plus up to ``jitter``.
    Offset and jitter stay well under the cron's period (an hour at the least here)."""

    def __init__(self, cron: CronTrigger, offset: float, jitter: float = 0.0,
                 rng: random.Random | None = None) -> None:
        if offset < 0 or jitter < 0:
            raise ValueError("OffsetCron: offset and jitter must be >= 0")
        self.cron, self.offset, self.jitter = cron, offset, jitter
        self._rng = rng or random.Random()

    def base_after(self, moment: datetime) -> datetime | None:
        """The cron time the next run belongs to: its offset run comes at or after ``moment``."""
        base: datetime | None = self.cron.get_next_fire_time(
            None, moment.astimezone(UTC) - timedelta(seconds=self.offset))
        return base

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is None:
            base = self.base_after(now)
        else:  # the previous run was base + offset + j (j < jitter): the next base is after base + j
            base = self.base_after(previous_fire_time.astimezone(UTC) + timedelta(seconds=1))
        if base is None:
            return None
        # seconds added in UTC: a run never moves with a DST change between the cron time and the run
        return base.astimezone(UTC) + timedelta(seconds=self.offset + self._rng.uniform(0, self.jitter))

    def __str__(self) -> str:
        return f"{self.cron} +{self.offset:.0f}s (jitter {self.jitter:.0f}s)"

    def __repr__(self) -> str:
        return f"<OffsetCron {self}>"


@dataclass(frozen=True)
class OutletSchedule:
    """One outlet's schedules: its id (the phases), its time zone (the photo passes' local times), the
    photo passes' spread windows, and whether schedules spread at all (``spread=False``: every outlet at
    the same instant, no jitter; the schedule before issue 17)."""

    outlet_id: str = ""
    timezone: str = "UTC"
    incremental_spread: float = 900.0  # seconds after the incremental photo pass's minute
    full_spread: float = 3600.0  # seconds after the nightly full check's hour
    spread: bool = True
    jitter_fraction: float = JITTER_FRACTION
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        zone(self.timezone)  # an unknown zone fails here, at start, not at the first photo pass

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)

    def offset(self, job: str, window: float) -> float:
        """The outlet's offset in ``[0, window)`` for ``job``."""
        return phase(self.outlet_id, job) * window if self.spread and window > 0 else 0.0

    def jitter(self, window: float) -> float:
        return self.jitter_fraction * window if self.spread else 0.0

    def interval(self, job: str, seconds: float, *, first_soon: bool = False) -> PhasedInterval:
        """An interval job on the outlet's grid; ``first_soon``: its first run within FIRST_RUN_SPREAD of
        the start (the sync cycle), else at the next grid point (housekeeping)."""
        first = None
        window = min(seconds, FIRST_RUN_SPREAD)
        if first_soon:
            first = phase(self.outlet_id, f"{job}:first") * window if self.spread else 0.0
        return PhasedInterval(seconds, self.offset(job, seconds), self.jitter(seconds), first_delay=first,
                              first_jitter=self.jitter(window), rng=self.rng)

    def cron(self, job: str, window: float, **fields: Any) -> OffsetCron:
        """A cron job (``minute=17``; ``hour=21, minute=0``) in the outlet's time zone, offset within
        ``window`` seconds."""
        cron = CronTrigger(timezone=self.tz, **fields)
        return OffsetCron(cron, self.offset(job, window), self.jitter(window), rng=self.rng)


def outlet_schedule(settings: PosyncSettings) -> OutletSchedule:
    """The schedule of the outlet ``settings`` describe: its id, time zone and photo windows."""
    return OutletSchedule(settings.schedule_key, settings.timezone,
                          incremental_spread=settings.photos.incremental_spread_minutes * 60.0,
                          full_spread=settings.photos.full_spread_minutes * 60.0)
