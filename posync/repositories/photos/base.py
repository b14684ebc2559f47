"""What the photo statements share: the tables, the error translation, ``IN`` batches, bind conversion.

The statements that run once per photo go to the driver's ``executemany`` on SQLite with each column's
own bind conversion, as the core's page apply does (``posync/repositories/entities.py``): SQLAlchemy's
per-row parameter processing was most of their cost. psycopg's executemany is a round trip a row, so
PostgreSQL keeps SQLAlchemy's batching.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from posync.errors import StorageError
from posync.models.photo import PhotoCheckpoint, PhotoRecord

__all__ = ["CHECKPOINTS", "META", "PHOTOS", "bind_processors", "bound", "chunks", "on_driver", "translating"]

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]
CHECKPOINTS = PhotoCheckpoint.__table__  # type: ignore[attr-defined]
# the metadata columns, in RemotePhoto.meta() order
META = ("product_id", "object_key", "filename", "size", "content_type", "checksum", "version", "is_primary",
        "sort_order", "created_at", "updated_at", "image_url")
_IN_BATCH = 500


@contextmanager
def translating(operation: str) -> Iterator[None]:
    """SQLAlchemy's errors as StorageError, at the service boundary."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageError(f"photos: {operation}", type(exc).__name__) from exc


def chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``IN`` lists of a size every driver takes."""
    for start in range(0, len(values), _IN_BATCH):
        yield values[start:start + _IN_BATCH]


_binds: dict[tuple[str, ...], list[Any]] = {}


def bind_processors(conn: Connection, columns: Sequence[str]) -> list[Any]:
    """Each column's own bind conversion on this dialect (None where values go as they are)."""
    dialect = conn.dialect
    key = (dialect.name, *columns)
    found = _binds.get(key)
    if found is None:
        found = _binds[key] = [PHOTOS.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    return found


def bound(process: Any, value: Any) -> Any:
    return value if process is None or value is None else process(value)


def on_driver(conn: Connection) -> bool:
    """Per-photo statements go straight to the driver (SQLite; see the module's docstring)."""
    return conn.dialect.name == "sqlite"
