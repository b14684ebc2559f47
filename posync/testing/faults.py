"""Fault injection for the reference HO, settable live from Python or with ``POST /_faults``.

:class:`Faults` holds the knobs; :class:`FaultMiddleware` is the outermost ASGI layer that obeys them for
requests under ``paths`` (default ``/api/``; the admin and fault endpoints are never faulted):

* ``latency`` seconds of delay, then a pending ``burst`` answers ``status`` with ``Retry-After``;
* ``error_rate``: answer ``error_status`` (500) before doing anything;
* ``drop_after_commit_rate``: do the work (commit), then close the connection without answering;
* ``truncate_rate``: answer the real status with the body cut in half (and a matching Content-Length);
* ``clock_skew`` seconds are added to HO's clock (``updated_at``, ``sync_timestamp``);
* ``seed`` makes the random draws repeatable.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Burst", "FaultMiddleware", "Faults"]

_RATES = ("error_rate", "drop_after_commit_rate", "truncate_rate")


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
class _Draw:
    latency: float = 0.0
    answer: tuple[int, str, float | None] | None = None  # (status, code, retry_after)
    drop: bool = False
    truncate: bool = False


@dataclass
class Faults:
    error_rate: float = 0.0
    drop_after_commit_rate: float = 0.0
    truncate_rate: float = 0.0
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
        allowed = {*_RATES, "latency", "burst", "clock_skew", "seed", "error_status", "paths"}
        unknown = set(settings) - allowed
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        for name in _RATES:
            if name in settings and not 0.0 <= float(settings[name]) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if "latency" in settings and float(settings["latency"]) < 0:
            raise ValueError("latency must be >= 0")
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
                if name in (*_RATES, "latency", "clock_skew"):
                    value = float(value)
                setattr(self, name, value)

    def reset(self) -> None:
        """No faults; keeps the seed and the ``injected`` tally."""
        self.update(error_rate=0.0, drop_after_commit_rate=0.0, truncate_rate=0.0, latency=0.0, burst=None,
                    clock_skew=0.0, error_status=500, paths=("/api/",))

    def snapshot(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate, "drop_after_commit_rate": self.drop_after_commit_rate,
            "truncate_rate": self.truncate_rate, "latency": self.latency, "clock_skew": self.clock_skew,
            "burst": None if self.burst is None else {"status": self.burst.status, "count": self.burst.count,
                                                      "retry_after": self.burst.retry_after},
            "seed": self.seed, "error_status": self.error_status, "paths": list(self.paths),
            "injected": dict(self.injected),
        }

    def applies_to(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.paths)

    def draw(self) -> _Draw:
        rng: random.Random = self.__dict__["_rng"]
        with self._lock:
            d = _Draw(latency=self.latency)
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
            elif self.truncate_rate and rng.random() < self.truncate_rate:
                d.truncate = True
                self.injected["truncate"] += 1
            return d


async def _swallow(message: Message) -> None:
    return None


async def _drop_connection(send: Send) -> None:
    """Close the client's connection without an answer.

    Uvicorn's ``send`` is a bound method of its request cycle, which holds the transport: closing it and
    letting ``connection_lost`` run marks the cycle disconnected, so uvicorn neither answers nor logs. If
    that is not reachable (another server, a wrapping middleware), start a response and fail, which
    every ASGI server answers by closing the connection mid-response.
    """
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(cycle, "disconnected"):
        transport.close()
        for _ in range(20):
            if cycle.disconnected:
                return
            await asyncio.sleep(0)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
    raise ConnectionAbortedError("reference HO fault: connection dropped after commit")


class FaultMiddleware:
    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.faults.applies_to(scope["path"]):
            await self.app(scope, receive, send)
            return
        d = self.faults.draw()
        if d.latency > 0:
            await asyncio.sleep(d.latency)
        if d.answer is not None:
            await _answer(send, *d.answer)
        elif d.drop:
            await self.app(scope, receive, _swallow)
            await _drop_connection(send)
        elif d.truncate:
            await self.app(scope, receive, _Truncating(send))
        else:
            await self.app(scope, receive, send)


async def _answer(send: Send, status: int, code: str, retry_after: float | None) -> None:
    body = json.dumps({"status": "error", "code": code, "message": "injected fault"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(0, math.ceil(retry_after))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Truncating:
    """Buffers the response and sends the first half of its body with a matching Content-Length."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        full = b"".join(self.chunks)
        cut = full[: len(full) // 2]
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(cut)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": cut, "more_body": False})
