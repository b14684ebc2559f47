"""Seed 000's own shape: the verified image in the host's photo table, in its BYTEA/BLOB column.

    open_store("db:table=product_photo,key=id,column=image_binary", engine=engine)     # max_mb=16 by default

A POS written to seed 000 reads ``SELECT image_binary FROM product_photo WHERE id = ...``; this store puts
the bytes there, in one transaction with the seed's metadata columns where the table has them
(``checksum``, ``file_size``, ``sync_status='synced'``, ``last_sync_at``, ``sync_error=NULL``; the table
is reflected once, on first use). Nothing else of the host's row is touched, and the row is never
created or removed by posync: the POS's own catalogue makes it.

Which row: the host table is keyed by the photo (``key`` column = HO's photo id), the store interface by
object key; ``posync_photo`` joins the two. A put under a key writes the rows of the photos whose
``object_key`` it is; a read, stat or delete also finds bytes posync recorded under the key
(``stored_key``). A photo whose host row does not exist yet fails with ``no_host_row`` and is retried
with backoff; its verified bytes wait in staging, so the retry needs no download. ``delete`` sets the
column NULL (and ``sync_status`` pending); it never deletes the host's row.

A table posync tracks (it has posync's ``cloud_version``) keeps its ``sync_status``: there it is posync's
row state, not the photo's. Writes run with capture suppressed, so they are never pushed as outlet edits.

Memory is the photo's size (one value, one statement): photos above ``max_mb`` are refused with
``too_large``; large photos belong in the chunked ``db`` store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from posync.capture.triggers import suppressed
from posync.db import write_transaction
from posync.errors import PhotoConfigError, PhotoStoreError
from posync.models.photo import PhotoRecord, PhotoSyncStatus
from posync.stores.base import StoredObject, StrPath, check_key, default_staging, private_dir

__all__ = ["HostColumn", "HostColumnStore", "parse_host_column"]

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]
READ_CHUNK = 1024 * 1024
DEFAULT_MAX_MB = 16
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_IN_BATCH = 500
ToKey = Callable[[str], tuple[Any, ...]]  # a photo id -> the key column's values that stand for it
# the seed's metadata columns, written where the host table has them
_META: dict[str, sa.types.TypeEngine[Any]] = {
    "checksum": sa.String(), "file_size": sa.BigInteger(), "sync_status": sa.String(),
    "last_sync_at": sa.DateTime(timezone=True), "sync_error": sa.Text()}


@dataclass(frozen=True, slots=True)
class HostColumn:
    """Where the image goes: ``table.column``, the row found by ``key`` = HO's photo id."""

    table: str
    key: str = "id"
    column: str = "image_binary"
    max_bytes: int = DEFAULT_MAX_MB * 1024 * 1024

    def __post_init__(self) -> None:
        for what, name in (("table", self.table), ("key", self.key), ("column", self.column)):
            if not _IDENTIFIER.fullmatch(name):
                raise PhotoConfigError(f"db store: {what} {name[:40]!r} is not a plain SQL identifier "
                                       "(letters, digits, underscores)")
        if self.key == self.column:
            raise PhotoConfigError("db store: key and column must be different columns")
        if self.max_bytes < 1:
            raise PhotoConfigError("db store: max_mb must be at least 1")


def parse_host_column(options: str) -> HostColumn:
    """``table=T[,key=K][,column=C][,max_mb=N]`` (what follows ``db:`` in a store spec)."""
    values: dict[str, str] = {}
    for part in options.split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or name not in ("table", "key", "column", "max_mb") or not value or name in values:
            raise PhotoConfigError(f"db store option {part.strip()[:40]!r}: give table=T[,key=K][,column=C]"
                                   "[,max_mb=N], each once")
        values[name] = value
    if "table" not in values:
        raise PhotoConfigError("db: store needs table=..., e.g. db:table=product_photo,key=id,column=image_binary")
    max_mb = values.pop("max_mb", str(DEFAULT_MAX_MB))
    if not max_mb.isdigit():
        raise PhotoConfigError(f"db store: max_mb {max_mb[:20]!r} is not a whole number of MiB")
    return HostColumn(**values, max_bytes=int(max_mb) * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class _Layout:
    """The host table as reflected once: the columns this store writes, typed for binding."""

    table: sa.TableClause
    key: sa.ColumnClause[Any]
    image: sa.ColumnClause[Any]
    meta: frozenset[str]
    to_key: ToKey


class HostColumnStore:
    kind = "db-column"

    def __init__(self, engine: Engine, target: HostColumn, *, staging: str | Path | None = None) -> None:
        self.engine = engine  # the host's; never disposed here
        self.target = target
        self._staging = Path(staging) if staging else default_staging(engine.url.render_as_string(hide_password=True))
        self._layout: _Layout | None = None
        self._lock = threading.Lock()  # the reflection (puts come from the byte engine's threads)

    def __repr__(self) -> str:
        t = self.target
        return (f"HostColumnStore({self.engine.url.render_as_string(hide_password=True)!r}, "
                f"{t.table}.{t.column} by {t.key})")

    @property
    def identity(self) -> str:
        t = self.target
        return f"db-column:{t.table}.{t.column} by {t.key}"

    def _fail(self, op: str, key: str, exc: Exception) -> PhotoStoreError:
        return PhotoStoreError(self.kind, op, key, type(exc).__name__)

    # -- the host table, reflected once ---------------------------------------------------------------------

    def layout(self) -> _Layout:
        """The host table's shape; PhotoConfigError if it lacks the key or the column."""
        with self._lock:
            if self._layout is None:
                try:
                    with self.engine.connect() as conn:
                        self._layout = self._reflect(conn)
                except SQLAlchemyError as exc:
                    raise PhotoStoreError(self.kind, "open", self.target.table, type(exc).__name__) from exc
            return self._layout

    def _reflect(self, conn: Connection) -> _Layout:
        t = self.target
        inspector = sa.inspect(conn)
        if not inspector.has_table(t.table):
            raise PhotoConfigError(f"db store: the host table {t.table!r} does not exist")
        columns = {c["name"]: c["type"] for c in inspector.get_columns(t.table)}
        for what, name in (("key", t.key), ("column", t.column)):
            if name not in columns:
                raise PhotoConfigError(f"db store: {t.table!r} has no column {name!r} (its {what}=)")
        sqlite = conn.dialect.name == "sqlite"  # SQLite keeps a BLOB whatever the column's declared type
        if not sqlite and not isinstance(columns[t.column], sa.LargeBinary):
            raise PhotoConfigError(f"db store: {t.table}.{t.column} is {columns[t.column]}, not a binary column")
        key_type, to_key = _key_type(columns[t.key], sqlite)
        # in a table posync tracks, sync_status is posync's row state (pending/synced/conflict), not the photo's
        tracked = "cloud_version" in columns
        meta = frozenset(n for n in _META if n in columns and n not in (t.key, t.column)
                         and not (tracked and n == "sync_status"))
        table = sa.table(t.table, sa.column(t.key, key_type), sa.column(t.column, sa.LargeBinary()),
                         *(sa.column(n, _META[n]) for n in sorted(meta)))
        return _Layout(table, table.c[t.key], table.c[t.column], meta, to_key)

    # -- which rows a key names -------------------------------------------------------------------------------

    @staticmethod
    def _writers(conn: Connection, key: str) -> list[str]:
        """The photos whose bytes belong under ``key`` now."""
        return list(conn.execute(sa.select(PHOTOS.c.id).where(PHOTOS.c.object_key == key)
                                 .order_by(PHOTOS.c.id)).scalars())

    @staticmethod
    def _named(conn: Connection, keys: Sequence[str]) -> list[tuple[str, str, bool]]:
        """``(key, photo id, recorded)`` for photos that name one of ``keys`` as their object key or as
        where posync recorded their bytes (``recorded``); recorded ones first."""
        out: list[tuple[str, str, bool]] = []
        for start in range(0, len(keys), _IN_BATCH):
            chunk = keys[start:start + _IN_BATCH]
            rows = conn.execute(sa.select(PHOTOS.c.id, PHOTOS.c.object_key, PHOTOS.c.stored_key).where(
                sa.or_(PHOTOS.c.object_key.in_(chunk), PHOTOS.c.stored_key.in_(chunk))).order_by(PHOTOS.c.id))
            wanted = set(chunk)
            for photo_id, object_key, stored_key in rows:
                if stored_key in wanted:
                    out.append((stored_key, photo_id, True))
                if object_key in wanted and object_key != stored_key:
                    out.append((object_key, photo_id, False))
        out.sort(key=lambda r: not r[2])  # stable: recorded first, then by photo id
        return out

    def _sizes(self, conn: Connection, layout: _Layout, photo_ids: Collection[str]) -> dict[str, int]:
        """Photo id -> the byte length of its host row's image, for rows that hold one."""
        by_value = {value: photo_id for photo_id in photo_ids for value in layout.to_key(photo_id)}
        values = list(by_value)
        found: dict[str, int] = {}
        for start in range(0, len(values), _IN_BATCH):
            rows = conn.execute(sa.select(layout.key, sa.func.length(layout.image)).where(
                layout.key.in_(values[start:start + _IN_BATCH]), layout.image.is_not(None)))
            found.update((by_value[value], int(size)) for value, size in rows)
        return found

    def _objects(self, conn: Connection, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        """key -> (photo id, size) of the first host row holding bytes under it."""
        layout = self.layout()
        named = self._named(conn, keys)
        sizes = self._sizes(conn, layout, {photo_id for _, photo_id, _ in named})
        out: dict[str, tuple[str, int]] = {}
        for key, photo_id, _ in named:
            if key not in out and photo_id in sizes:
                out[key] = (photo_id, sizes[photo_id])
        return out

    # -- writing ----------------------------------------------------------------------------------------------

    def _write(self, conn: Connection, key: str, data: bytes, md5: str) -> None:
        """The image and its metadata into the rows of the photos ``key`` names, all or none."""
        layout = self.layout()
        photo_ids = self._writers(conn, key)
        if not photo_ids:
            raise PhotoStoreError(self.kind, "write", key, "no_photo_row: no listed photo has this key",
                                  reason="no_photo_row")
        values = {photo_id: layout.to_key(photo_id) for photo_id in photo_ids}
        present = set(conn.execute(sa.select(layout.key).where(
            layout.key.in_([v for vs in values.values() for v in vs])).with_for_update()).scalars())
        missing = [photo_id for photo_id, vs in values.items() if not present.intersection(vs)]
        if missing:
            raise PhotoStoreError(self.kind, "write", key, f"no_host_row: {self.target.table} has no row "
                                  f"{self.target.key}={', '.join(missing[:3])} yet", reason="no_host_row")
        meta = {"checksum": md5, "file_size": len(data), "sync_status": PhotoSyncStatus.SYNCED.value,
                "last_sync_at": datetime.now(UTC), "sync_error": None}
        with suppressed(conn):
            conn.execute(layout.table.update().where(layout.key.in_(list(present))).values(
                {layout.image: data, **{layout.table.c[n]: meta[n] for n in layout.meta}}))

    def _refuse_large(self, op: str, key: str, size: int) -> None:
        if size > self.target.max_bytes:
            raise PhotoStoreError(self.kind, op, key, f"too_large: {size} bytes, above this store's "
                                  f"{self.target.max_bytes // (1024 * 1024)} MiB (large photos: the chunked db store)",
                                  reason="too_large")

    # -- the interface ----------------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        return private_dir(self._staging)

    def put_file(self, key: str, path: StrPath, *, md5: str, content_type: str, consume: bool = False,
                 durable: bool = True, synced: bool = False) -> None:
        check_key(key)
        self.layout()  # a table that does not fit is a PhotoConfigError, before any bytes are read
        try:
            self._refuse_large("write", key, os.stat(path).st_size)
            with open(path, "rb") as f:
                data = f.read(self.target.max_bytes + 1)
            self._refuse_large("write", key, len(data))  # grew since the stat
            if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
                raise PhotoStoreError(self.kind, "write", key, "the bytes differ from their verified MD5")
            with write_transaction(self.engine) as conn:
                self._write(conn, key, data, md5)
        except (SQLAlchemyError, OSError) as exc:
            raise self._fail("write", key, exc) from exc
        if consume:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def flush(self) -> None:
        return None  # each put is its own committed transaction

    def _image(self, conn: Connection, key: str) -> bytes | None:
        found = self._objects(conn, [key]).get(key)
        if found is None:
            return None
        layout = self.layout()
        data = conn.execute(sa.select(layout.image).where(layout.key.in_(layout.to_key(found[0])))).scalar()
        return None if data is None else bytes(data)

    def _load(self, op: str, key: str) -> bytes | None:
        check_key(key)
        try:
            with self.engine.connect() as conn:
                return self._image(conn, key)
        except SQLAlchemyError as exc:
            raise self._fail(op, key, exc) from exc

    def read(self, key: str) -> Iterator[bytes]:
        data = self._load("read", key)
        if data is None:
            raise PhotoStoreError(self.kind, "read", key, "no such object")
        return (data[start:start + READ_CHUNK] for start in range(0, len(data), READ_CHUNK))

    def stat(self, key: str) -> StoredObject | None:
        return self.stat_many([key]).get(key)

    def stat_many(self, keys: Collection[str]) -> dict[str, StoredObject]:
        wanted = [check_key(k) for k in keys]
        if not wanted:
            return {}
        try:
            with self.engine.connect() as conn:
                found = self._objects(conn, wanted)
        except SQLAlchemyError as exc:
            raise self._fail("stat", wanted[0] if len(wanted) == 1 else f"{len(wanted)} keys", exc) from exc
        # the checksum column says what was written, not what is there now: reconciliation hashes the bytes
        return {key: StoredObject(key, size, None) for key, (_, size) in found.items()}

    def hash(self, key: str) -> str | None:
        data = self._load("hash", key)
        return None if data is None else hashlib.md5(data, usedforsecurity=False).hexdigest()

    def copy(self, src: str, dst: str) -> None:
        check_key(src)
        check_key(dst)
        self.layout()
        try:
            with write_transaction(self.engine) as conn:
                data = self._image(conn, src)
                if data is None:
                    raise PhotoStoreError(self.kind, "copy", src, "no such object")
                self._write(conn, dst, data, hashlib.md5(data, usedforsecurity=False).hexdigest())
        except SQLAlchemyError as exc:
            raise self._fail("copy", f"{src} -> {dst}", exc) from exc

    def delete(self, key: str) -> bool:
        """The column goes NULL, and with it the image's ``checksum`` and ``file_size`` (``sync_status``
        pending); the host's row stays."""
        check_key(key)
        layout = self.layout()
        try:
            with write_transaction(self.engine) as conn:
                named = self._named(conn, [key])
                holding = list(self._sizes(conn, layout, {photo_id for _, photo_id, _ in named}))
                if not holding:
                    return False
                values: dict[Any, Any] = {layout.image: None}
                for name in ("checksum", "file_size"):  # they described the bytes that are gone
                    if name in layout.meta:
                        values[layout.table.c[name]] = None
                if "sync_status" in layout.meta:
                    values[layout.table.c.sync_status] = PhotoSyncStatus.PENDING.value
                with suppressed(conn):
                    conn.execute(layout.table.update().where(
                        layout.key.in_([v for i in holding for v in layout.to_key(i)])).values(values))
        except SQLAlchemyError as exc:
            raise self._fail("delete", key, exc) from exc
        return True

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """A photo's bytes are listed under the key posync recorded them at, else under its object key."""
        listed = sa.func.coalesce(PHOTOS.c.stored_key, PHOTOS.c.object_key)
        query = sa.select(PHOTOS.c.id, listed).order_by(listed, PHOTOS.c.id)
        if prefix:
            query = query.where(listed.startswith(prefix, autoescape=True))
        layout = self.layout()
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
                sizes = self._sizes(conn, layout, {photo_id for photo_id, _ in rows})
        except SQLAlchemyError as exc:
            raise self._fail("list", prefix or "/", exc) from exc
        seen: set[str] = set()
        for photo_id, key in rows:
            if photo_id in sizes and key not in seen:
                seen.add(key)
                yield StoredObject(key, sizes[photo_id], None)

    def close(self) -> None:
        return None


def _key_type(reflected: sa.types.TypeEngine[Any], sqlite: bool) -> tuple[sa.types.TypeEngine[Any], ToKey]:
    """How a photo id binds to the key column: an integer, a native UUID (PostgreSQL), else text; on SQLite
    a UUID id also as the 32 hex digits SQLAlchemy's ``Uuid`` stores there. An id the column cannot hold
    stands for no row."""
    try:
        python_type = reflected.python_type
    except NotImplementedError:
        python_type = str
    if python_type is int:
        return sa.BigInteger(), _candidates(lambda i: (int(i),))
    if python_type is uuid.UUID and not sqlite:
        return reflected, _candidates(lambda i: (uuid.UUID(i),))
    if sqlite:
        return sa.String(), _candidates(lambda i: (i, uuid.UUID(i).hex), fallback=True)
    return sa.String(), _candidates(lambda i: (i,))


def _candidates(convert: ToKey, *, fallback: bool = False) -> ToKey:
    def to_key(photo_id: str) -> tuple[Any, ...]:
        try:
            return convert(photo_id)
        except ValueError:
            return (photo_id,) if fallback else ()

    return to_key
