"""JSON for the hot paths: push request bodies, frozen payloads, HO's answers, the reference HO.

orjson rather than the standard library: on a 1,000-change push batch it encodes and decodes several
times faster (bench/README.md), and those bytes are handled on every batch, by both sides.
Errors keep the standard library's types: ``loads`` raises a ``ValueError`` subclass, ``dumps`` a
``TypeError`` for a value JSON cannot hold.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "dumps_text", "loads"]


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes (what goes on the wire)."""
    return orjson.dumps(value)


def dumps_text(value: Any) -> str:
    """Compact JSON as text (what goes into a JSON or TEXT column)."""
    return orjson.dumps(value).decode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)
