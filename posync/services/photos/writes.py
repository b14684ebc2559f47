"""A photo write transaction: after the till's writes when Posync wires in its write gate (posync/db.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy.engine import Connection, Engine

from posync.db import WriteGate, write_transaction
from posync.repositories.photos import translating

__all__ = ["photo_write"]


@contextmanager
def photo_write(engine: Engine, gate: WriteGate | None, operation: str) -> Iterator[Connection]:
    """A write transaction named ``operation`` (in a StorageError), entered through ``gate`` as push's and
    pull's are; without a gate (photos alone, the CLI) SQLite's own locking orders the writers."""
    with translating(operation), gate.posync() if gate is not None else nullcontext(), \
            write_transaction(engine) as conn:
        yield conn
