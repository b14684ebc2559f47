"""Retry policies as values that return a decision; the push worker just obeys them."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["OutagePolicy", "RetryDecision", "RetryPolicy"]


@dataclass(frozen=True)
class RetryDecision:
    delay: float  # seconds from now


@dataclass(frozen=True)
class RetryPolicy:
    """Per-change retries for failures that concern one change (seed 003's RetryConfig by default).

    ``decide(failures)`` -> retry after a delay, or None: dead-letter. Exponential with "equal jitter":
    half the delay is fixed, half random, so retries of many changes spread out but never come early.
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
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, failures - 1))
        return base / 2 + (rng or random).uniform(0, base / 2)

    def decide(self, failures: int, rng: random.Random | None = None) -> RetryDecision | None:
        """``failures``: how many times this change has failed, this time included."""
        if failures > self.max_retries:
            return None
        return RetryDecision(self.backoff(failures, rng))


@dataclass(frozen=True)
class OutagePolicy:
    """When HO is unreachable the whole queue waits; nothing is dead-lettered for an outage.

    Backs off from ``initial`` to ``maximum``; a Retry-After from HO is a floor.
    """

    initial: float = 2.0
    maximum: float = 300.0
    multiplier: float = 2.0

    def delay(self, consecutive_failures: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, consecutive_failures - 1))
        jittered = base / 2 + (rng or random).uniform(0, base / 2)
        return max(jittered, retry_after or 0.0)
