"""Fault injection for the reference HO, settable live from Python or with ``POST /_faults``.

:class:`Faults` holds the knobs and draws what happens to each request; the outermost ASGI layer,
:class:`~posync.testing.fault_middleware.FaultMiddleware`, obeys the draw for requests under ``paths``
(default ``/api/``; the admin and fault endpoints are never faulted):

* ``latency`` seconds of delay before anything else (every faulted request);
* ``burst`` (``{"status": 429|503, "count": n, "retry_after": s}``): the next ``count`` requests answer
  ``status`` with ``Retry-After`` (whole seconds, rounded up), doing nothing;
* ``error_rate``: answer ``error_status`` (default 500; 503 adds ``Retry-After: 1``) before doing anything;
* ``drop_after_commit_rate``: do the work (commit), then close the connection without sending a byte;
* ``truncate_rate``: do the work, answer the real status with the first half of the body and a
  *matching* Content-Length (a short body that looks complete);
* ``cut_rate``: do the work, announce the *full* Content-Length, send the first half of the body, then
  close the connection (the client sees an incomplete body);
* ``corrupt_rate``: do the work, answer the real status and length with some bytes of the body changed
  (one in 64, at least one; each changed byte differs from the original);
* ``drip_rate``: do the work, send the status and headers at once, then the body one byte every
  ``drip_interval`` seconds (default 0.05): slow, yet never silent long enough to trip a per-read timeout;
* ``clock_skew`` seconds are added to HO's clock (``updated_at``, ``sync_timestamp``);
* ``seed`` makes the random draws repeatable (also which bytes ``corrupt_rate`` changes);
* ``error_status`` and ``paths`` as above.

At most one of burst, error, drop, truncate, cut, corrupt and drip applies to a request, drawn in that
order. The injected answers (burst, error) use the profile's error body (``error_body``):
``{"status","code","message"}`` for posync, ``{"error","code"}`` for the seed profile. ``injected``
tallies each kind. ``reset()`` turns every fault off.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DRIP_INTERVAL", "Burst", "Draw", "Faults"]

_NEVER_FAULTED = ("/_admin", "/_faults")
_RATES = ("error_rate", "drop_after_commit_rate", "truncate_rate", "cut_rate", "corrupt_rate", "drip_rate")
_SECONDS = ("latency", "clock_skew", "drip_interval")
DRIP_INTERVAL = 0.05

@dataclass
class Burst:
    """The next ``count`` requests answer ``status`` (429 or 503) with ``Retry-After: retry_after``."""

    status: int = 503
    count: int = 1
    retry_after: float = 1.0

    def __post_init__(self) -> None:
        if self.status not in (429, 503):
            raise ValueError("burst status must be 429 or 503")
        if self.count < 0 or self.retry_after < 0:
            raise ValueError("burst count and retry_after must be >= 0")


@dataclass
class Draw:
    """What happens to one faulted request."""

    latency: float = 0.0
    answer: tuple[int, str, float | None] | None = None  # (status, code, retry_after)
    drop: bool = False
    body: str | None = None  # "truncate" | "cut" | "corrupt" | "drip": what happens to the real answer
    drip_interval: float = DRIP_INTERVAL
    corrupt_seed: int = 0


@dataclass
class Faults:
    error_rate: float = 0.0
    drop_after_commit_rate: float = 0.0
    truncate_rate: float = 0.0
    cut_rate: float = 0.0
    corrupt_rate: float = 0.0
    drip_rate: float = 0.0
    drip_interval: float = DRIP_INTERVAL
    latency: float = 0.0
    burst: Burst | None = None
    clock_skew: float = 0.0
    seed: int | None = None
    error_status: int = 500
    paths: tuple[str, ...] = ("/api/",)
    injected: Counter[str] = field(default_factory=Counter, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "seed":  # (re)seeding restarts the sequence of draws
            object.__setattr__(self, "_rng", random.Random(value))
        if name == "burst" and isinstance(value, dict):
            value = Burst(**value)
        object.__setattr__(self, name, value)

    def update(self, **settings: Any) -> None:
        """Set several knobs at once, validated (``POST /_faults`` calls this). Unknown names raise."""
        allowed = {*_RATES, *_SECONDS, "burst", "seed", "error_status", "paths"}
        unknown = set(settings) - allowed
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        for name in _RATES:
            if name in settings and not 0.0 <= float(settings[name]) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency", "drip_interval"):
            if name in settings and float(settings[name]) < 0:
                raise ValueError(f"{name} must be >= 0")
        if "error_status" in settings and not 500 <= int(settings["error_status"]) <= 599:
            raise ValueError("error_status must be a 5xx status")
        burst = settings.get("burst")
        if isinstance(burst, dict):
            settings["burst"] = Burst(**burst)
        elif burst is not None and not isinstance(burst, Burst):
            raise ValueError("burst must be an object {status, count, retry_after} or null")
        if "paths" in settings:
            settings["paths"] = tuple(str(p) for p in settings["paths"])
        with self._lock:
            for name, value in settings.items():
                if name in (*_RATES, *_SECONDS):
                    value = float(value)
                setattr(self, name, value)

    def reset(self) -> None:
        """No faults; keeps the seed and the ``injected`` tally."""
        self.update(**dict.fromkeys(_RATES, 0.0), latency=0.0, burst=None, clock_skew=0.0,
                    drip_interval=DRIP_INTERVAL, error_status=500, paths=("/api/",))

    def snapshot(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate, "drop_after_commit_rate": self.drop_after_commit_rate,
            "truncate_rate": self.truncate_rate, "cut_rate": self.cut_rate, "corrupt_rate": self.corrupt_rate,
            "drip_rate": self.drip_rate, "drip_interval": self.drip_interval,
            "latency": self.latency, "clock_skew": self.clock_skew,
            "burst": None if self.burst is None else {"status": self.burst.status, "count": self.burst.count,
                                                      "retry_after": self.burst.retry_after},
            "seed": self.seed, "error_status": self.error_status, "paths": list(self.paths),
            "injected": dict(self.injected),
        }

    def applies_to(self, path: str) -> bool:
        if path.startswith(_NEVER_FAULTED):  # the knobs must work whatever ``paths`` says
            return False
        return any(path.startswith(p) for p in self.paths)

    def draw(self) -> Draw:
        rng: random.Random = self.__dict__["_rng"]
        with self._lock:
            d = Draw(latency=self.latency)
            burst = self.burst
            if burst is not None and burst.count > 0:
                burst.count -= 1
                code = "RATE_LIMITED" if burst.status == 429 else "UNAVAILABLE"
                d.answer = (burst.status, code, burst.retry_after)
                self.injected["burst"] += 1
            elif self.error_rate and rng.random() < self.error_rate:
                d.answer = (self.error_status, "INTERNAL_ERROR" if self.error_status == 500 else "UNAVAILABLE",
                            1.0 if self.error_status == 503 else None)
                self.injected["error"] += 1
            elif self.drop_after_commit_rate and rng.random() < self.drop_after_commit_rate:
                d.drop = True
                self.injected["drop"] += 1
            else:
                # a rate left at 0 draws nothing, so adding a knob keeps the sequences of the others
                for kind in ("truncate", "cut", "corrupt", "drip"):
                    rate = getattr(self, f"{kind}_rate")
                    if rate and rng.random() < rate:
                        d.body = kind
                        self.injected[kind] += 1
                        break
                d.drip_interval = self.drip_interval
                if d.body == "corrupt":
                    d.corrupt_seed = rng.getrandbits(32)
            return d
