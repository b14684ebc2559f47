"""Retrying, in one place: the backoff curve, the policies that decide, and HTTP's Retry-After.

Every backoff in posync is ``initial * multiplier ** (failures - 1)``, capped at ``maximum``
(:func:`backoff_base`). Most callers add "equal jitter" (:func:`backoff`): half the delay is fixed, half
random, so retries of many clients spread out but never come early. Users:

* :class:`RetryPolicy`   per-change retries of the push (dead-letter after ``max_retries``)
* :class:`OutagePolicy`  the whole queue while HO is unreachable (HO's Retry-After is a floor), and
  how often a cheap probe asks whether HO is back (:meth:`OutagePolicy.probe_delay`)
* :class:`IdlePolling`   how seldom an idle outlet asks HO for news, at its own :func:`phase` of the wait
* ``posync.webhooks.sender.SenderRetryPolicy``, ``posync.transfer.engine.TransferPolicy`` (jittered)
* ``posync.services.photos.transfers.retry_after`` (between photo passes, no jitter)

:func:`parse_retry_after` reads a Retry-After header (RFC 9110 §10.2.3): delay-seconds or an HTTP date.
This module imports nothing from posync, so the adapters (HO clients, byte engines) may use it.
"""

from __future__ import annotations

import email.utils
import hashlib
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC

__all__ = ["IdlePolling", "OutagePolicy", "RetryDecision", "RetryPolicy", "backoff", "backoff_base",
           "parse_retry_after"]

# delay-seconds is 1*DIGIT; a fraction or a sign is tolerated (an HO that sends "1.5" or "-1" means it)
_SECONDS = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?")


def phase(outlet_id: str, schedule: str = "") -> float:
    """The outlet's phase in ``[0, 1)``: SHA-256 of its id (not Python's ``hash``, which changes per
    process), so a fleet's outlets spread their requests over a period without talking to each other.
    ``schedule`` names the job, so one outlet's jobs do not all share one phase."""
    digest = hashlib.sha256(f"{schedule}\x00{outlet_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def backoff_base(failures: int, initial: float, maximum: float, multiplier: float = 2.0) -> float:
    """The un-jittered delay after ``failures`` failures (1 -> ``initial``), at most ``maximum``."""
    if initial <= 0:
        return min(maximum, max(0.0, initial))
    try:
        grown = initial * multiplier ** max(0, failures - 1)
    except OverflowError:  # thousands of failures: far beyond any maximum
        return maximum
    return min(maximum, grown)


def backoff(failures: int, initial: float, maximum: float, multiplier: float = 2.0,
            rng: random.Random | None = None) -> float:
    """:func:`backoff_base` with equal jitter: uniform in ``[base / 2, base]``."""
    base = backoff_base(failures, initial, maximum, multiplier)
    return base / 2 + (rng or random).uniform(0, base / 2)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    delay: float  # seconds from now


@dataclass(frozen=True)
class RetryPolicy:
    """Per-change retries for failures that concern one change (seed 003's RetryConfig by default).

    ``decide(failures)`` -> retry after a jittered delay, or None: dead-letter.
    """

    max_retries: int = 3
    initial_backoff: float = 60.0
    max_backoff: float = 1800.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("RetryPolicy: need max_retries >= 0 and 0 <= initial_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError("RetryPolicy: multiplier must be >= 1")

    def backoff(self, failures: int, rng: random.Random | None = None) -> float:
        return backoff(failures, self.initial_backoff, self.max_backoff, self.multiplier, rng)

    def decide(self, failures: int, rng: random.Random | None = None) -> RetryDecision | None:
        """``failures``: how many times this change has failed, this time included."""
        if failures > self.max_retries:
            return None
        return RetryDecision(self.backoff(failures, rng))


@dataclass(frozen=True)
class IdlePolling:
    """How often an idle outlet asks HO for news. An outlet that has moved nothing either way for ``after``
    seconds polls less the longer it stays idle: its next cycle waits about ``ratio`` of the time it has
    been idle, at most ``maximum`` seconds (idle 2 min: every 30 s; 20 min: every 5 min or so; 80 min and
    on: every 20 min). A sale (push on commit), a trigger, a cycle that moved something or a failure ends
    it. An idle outlet then sends a few small requests an hour instead of one per interval
    (bench/bench_fleet.py).

    Given the clock (``now``, epoch seconds: the fleet's common time), the poll lands on the outlet's own
    grid: period ``maximum / 2**k`` (the nearest to the wait), offset ``phase`` of it. A fleet that
    went idle together (the night, a restart, HO's return) then spreads its polls over the period instead
    of polling in one burst every few minutes. ``maximum`` 0: never idle."""

    maximum: float = 1200.0
    after: float = 120.0
    ratio: float = 0.25
    phase: float = 0.0  # the outlet's phase in [0, 1) (:func:`phase`)

    def wait(self, idle_for: float, now: float | None = None) -> float:
        """Seconds the next cycle waits, having moved nothing for ``idle_for`` seconds (0: run as due);
        with ``now``, to the outlet's next grid point at least half a period away (at most ``maximum``):
        one poll a period, spread over the fleet."""
        if self.maximum <= 0 or idle_for < self.after:
            return 0.0
        bare = min(self.maximum, idle_for * self.ratio)
        if now is None or bare < 1.0 or not math.isfinite(self.maximum):  # no period of a second or more
            return bare
        # the period nearest the bare wait (on a log scale), each outlet at its own place in it; every
        # outlet at that level polls once a period, whenever it went idle
        period = math.ldexp(self.maximum, -max(0, round(math.log2(self.maximum / bare))))  # maximum / 2**k
        offset = self.phase * period
        # the next grid point at least half a period away (entering the longest period, at least a second):
        # a level's polls come a period apart
        earliest = now + max(1.0, min(period / 2, self.maximum - period))
        due = offset + math.ceil((earliest - offset) / period) * period
        return min(self.maximum, due - now)


@dataclass(frozen=True)
class OutagePolicy:
    """When HO is unreachable the whole queue waits; nothing is dead-lettered for an outage.

    Backs off from ``initial`` to ``maximum``; a Retry-After from HO is a floor, capped at
    ``max_retry_after`` (an HO that asks for a day would otherwise hold an outlet's sales for a day), with
    up to a quarter more (at most ``probe_cap``, within both caps) so outlets told the same Retry-After at
    once do not all come back at once. While HO is unreachable the worker sends only a probe (one small
    request), at most ``probe_cap`` apart (:meth:`probe_delay`): HO's return is seen within that, and the
    fleet's probes are jittered.
    """

    initial: float = 2.0
    maximum: float = 300.0
    multiplier: float = 2.0
    max_retry_after: float = 900.0
    probe_cap: float = 20.0

    def delay(self, consecutive_failures: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        jittered = backoff(consecutive_failures, self.initial, self.maximum, self.multiplier, rng)
        return self._at_least_retry_after(jittered, retry_after, rng)

    def probe_delay(self, consecutive_failures: int, retry_after: float | None = None,
                    rng: random.Random | None = None) -> float:
        """When to probe HO next: the same curve, capped at ``probe_cap`` (equal jitter: from half of it)."""
        cap = min(self.maximum, self.probe_cap)
        jittered = backoff(consecutive_failures, min(self.initial, cap), cap, self.multiplier, rng)
        return self._at_least_retry_after(jittered, retry_after, rng)

    def honoured(self, retry_after: float | None, rng: random.Random | None = None) -> float:
        """HO's Retry-After as posync honours it: the floor, capped, plus the fleet's spread; 0 without one."""
        if not retry_after:
            return 0.0
        floor = min(retry_after, self.max_retry_after)
        spread = (rng or random).uniform(0, min(floor / 4, self.probe_cap))
        # never past the cap, nor past the backoff's own maximum unless HO asked for longer
        return min(floor + spread, max(floor, self.maximum), self.max_retry_after)

    def _at_least_retry_after(self, delay: float, retry_after: float | None, rng: random.Random | None) -> float:
        return max(delay, self.honoured(retry_after, rng)) if retry_after else delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date, ``now`` being the outlet's
    epoch seconds. A date in the past (or a negative number) is 0; absent or garbled is None. Huge values
    are the caller's to cap."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):  # ASCII digits only: float() takes other scripts
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
