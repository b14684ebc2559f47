"""The database store (seed 000's BYTEA/BLOB column, in the outlet database): ``posync_photo_blob`` plus
its bytes in ``posync_photo_chunk`` rows of 1 MiB.

A write is one transaction (old chunks out, new chunks in, the blob row last), so a reader sees the old
photo or the new one. Chunks keep memory bounded both ways: a write reads the verified file a chunk at a
time, a read streams the chunks of one SELECT (one snapshot, so never half of each version).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from posync.db import write_transaction
from posync.errors import PhotoStoreError
from posync.models.photo import PhotoBlob, PhotoChunk
from posync.stores.base import (
    StoredObject,
    StrPath,
    check_key,
    default_staging,
    md5_of_chunks,
    private_dir,
    stat_each,
)

__all__ = ["DatabaseStore"]

BLOB = PhotoBlob.__table__  # type: ignore[attr-defined]
CHUNKS = PhotoChunk.__table__  # type: ignore[attr-defined]
DB_CHUNK = 1024 * 1024


class DatabaseStore:
    kind = "db"

    def __init__(self, engine: Engine, *, staging: str | Path | None = None, chunk_size: int = DB_CHUNK) -> None:
        self.engine = engine  # the host's (or posync's); never disposed here
        self._chunk = chunk_size
        self._staging = Path(staging) if staging else default_staging(engine.url.render_as_string(hide_password=True))

    def __repr__(self) -> str:
        return f"DatabaseStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def identity(self) -> str:  # posync's tables, beside the rows that refer to them
        return "db"

    def staging_dir(self) -> Path:
        return private_dir(self._staging)

    def put_file(self, key: str, path: StrPath, *, md5: str, content_type: str, consume: bool = False,
                 durable: bool = True, synced: bool = False) -> None:
        check_key(key)
        try:
            with write_transaction(self.engine) as conn, open(path, "rb") as f:
                conn.execute(CHUNKS.delete().where(CHUNKS.c.object_key == key))
                seq = size = 0
                while chunk := f.read(self._chunk):
                    conn.execute(CHUNKS.insert().values(object_key=key, seq=seq, data=chunk))
                    seq += 1
                    size += len(chunk)
                conn.execute(BLOB.delete().where(BLOB.c.object_key == key))
                conn.execute(BLOB.insert().values(object_key=key, size=size, md5=md5, content_type=content_type,
                                                  chunks=seq, stored_at=datetime.now(UTC)))
        except (SQLAlchemyError, OSError) as exc:
            raise PhotoStoreError(self.kind, "write", key, type(exc).__name__) from exc
        if consume:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def flush(self) -> None:
        return None  # each put is its own committed transaction

    def read(self, key: str) -> Iterator[bytes]:
        check_key(key)
        if self.stat(key) is None:
            raise PhotoStoreError(self.kind, "read", key, "no such object")
        return self._chunks(key)

    def _chunks(self, key: str) -> Iterator[bytes]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execution_options(stream_results=True, yield_per=4).execute(
                    sa.select(CHUNKS.c.data).where(CHUNKS.c.object_key == key).order_by(CHUNKS.c.seq))
                for (data,) in rows:
                    yield bytes(data)
        except SQLAlchemyError as exc:
            raise PhotoStoreError(self.kind, "read", key, type(exc).__name__) from exc

    def content_type(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(BLOB.c.content_type).where(BLOB.c.object_key == key)).scalar()

    def stat(self, key: str) -> StoredObject | None:
        check_key(key)
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(BLOB.c.size, BLOB.c.md5).where(BLOB.c.object_key == key)).first()
        except SQLAlchemyError as exc:
            raise PhotoStoreError(self.kind, "stat", key, type(exc).__name__) from exc
        # the md5 column says what was written, not what is there now: reconciliation hashes the chunks
        return None if row is None else StoredObject(key, int(row.size), None)

    def stat_many(self, keys: Collection[str]) -> dict[str, StoredObject]:
        return stat_each(self, keys)

    def hash(self, key: str) -> str | None:
        if self.stat(key) is None:
            return None
        return md5_of_chunks(self._chunks(key))

    def copy(self, src: str, dst: str) -> None:
        check_key(src)
        check_key(dst)
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(CHUNKS.delete().where(CHUNKS.c.object_key == dst))
                conn.execute(BLOB.delete().where(BLOB.c.object_key == dst))
                conn.execute(CHUNKS.insert().from_select(
                    ["object_key", "seq", "data"],
                    sa.select(sa.literal(dst), CHUNKS.c.seq, CHUNKS.c.data).where(CHUNKS.c.object_key == src)))
                done = conn.execute(BLOB.insert().from_select(
                    ["object_key", "size", "md5", "content_type", "chunks", "stored_at"],
                    sa.select(sa.literal(dst), BLOB.c.size, BLOB.c.md5, BLOB.c.content_type, BLOB.c.chunks,
                              BLOB.c.stored_at).where(BLOB.c.object_key == src)))
                if done.rowcount == 0:
                    raise PhotoStoreError(self.kind, "copy", src, "no such object")
        except SQLAlchemyError as exc:
            raise PhotoStoreError(self.kind, "copy", f"{src} -> {dst}", type(exc).__name__) from exc

    def delete(self, key: str) -> bool:
        check_key(key)
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(CHUNKS.delete().where(CHUNKS.c.object_key == key))
                return bool(conn.execute(BLOB.delete().where(BLOB.c.object_key == key)).rowcount)
        except SQLAlchemyError as exc:
            raise PhotoStoreError(self.kind, "delete", key, type(exc).__name__) from exc

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        query = sa.select(BLOB.c.object_key, BLOB.c.size).order_by(BLOB.c.object_key)
        if prefix:
            query = query.where(BLOB.c.object_key.startswith(prefix, autoescape=True))
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise PhotoStoreError(self.kind, "list", prefix or "/", type(exc).__name__) from exc
        for row in rows:
            yield StoredObject(row.object_key, int(row.size), None)

    def close(self) -> None:
        return None
