"""Idempotency keys: HO applies a change once per key, however often it is resent."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

__all__ = ["idempotency_keys"]


def idempotency_keys(n: int) -> Iterator[str]:
    """``n`` UUIDv7 keys (RFC 9562) as 32 hex digits: the millisecond clock, the version, 74 random bits.

    Time-ordered so that HO's unique index on (outlet, key) grows at one end. With wholly random keys a
    1,000-change batch lands on hundreds of scattered index pages once HO holds 100,000 keys: ~14 ms per
    batch in SQLite instead of ~3 (bench/bench_keys.py). One call to the OS's random source per batch."""
    clock = f"{time.time_ns() // 1_000_000:012x}7"
    noise = secrets.token_hex(10 * n)
    for i in range(0, 20 * n, 20):
        # 12 random bits, a digit holding the variant and 2 random bits, 60 more random bits
        yield clock + noise[i : i + 3] + _VARIANT[noise[i + 3]] + noise[i + 4 : i + 19]


# a random hex digit -> 8, 9, a or b: the RFC 9562 variant (binary 10) followed by two of its random bits
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
