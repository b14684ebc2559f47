"""Store and database as one (seed 002): each operation touches the bytes and the metadata row together,
with compensation, so no partial state survives a failure.

* write: bytes first, then the row; a failed row removes bytes it had just added;
* delete: the row first, then the bytes; bytes that cannot go bring the row back;
* cascades: a product (or a variant, i.e. a key prefix) removes its photos from both;
* :func:`move_prefix`: seed 002's variant rename (``products/{id}/500ml/`` -> ``products/{id}/1kg/``) copies
  the bytes, moves the rows in one transaction, then removes the old bytes (copies undone on failure).

Bytes shared by several rows (same key) are removed only with the last row that uses them. ``gate``: the
write gate Posync wires in (its row writes go after the till's), None alone.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from posync.db import WriteGate
from posync.errors import PhotoNotFoundError, PhotoStoreError
from posync.ho.photos.wire import key_refusal
from posync.models.photo import RemotePhoto
from posync.repositories import photos as repo
from posync.services.photos.writes import photo_write
from posync.stores.base import PhotoStore, check_key

__all__ = ["MoveResult", "delete_photo", "delete_prefix", "delete_product", "move_prefix", "write_photo"]

log = logging.getLogger("posync.photos")


def write_photo(engine: Engine, store: PhotoStore, photo: RemotePhoto, path: Path, *,
                gate: WriteGate | None = None) -> None:
    """Put verified bytes and their row, as one: if the row cannot be written, bytes this call added are
    removed again (bytes it replaced cannot be brought back; the row then still names the old checksum,
    so the next sync or reconciliation sees the difference and fetches them again)."""
    key = check_key(photo.object_key)
    existed = store.stat(key) is not None
    store.put_file(key, path, md5=photo.checksum, content_type=photo.content_type)
    try:
        with photo_write(engine, gate, "write photo row") as conn:
            repo.record_stored(conn, photo, key, datetime.now(UTC))
    except Exception:
        if not existed:
            with contextlib.suppress(PhotoStoreError):
                store.delete(key)
        raise


def delete_photo(engine: Engine, store: PhotoStore, photo_id: str, *, gate: WriteGate | None = None) -> bool:
    """Bytes first (those no other photo uses), then the row; if the bytes cannot go, the row stays and
    the error is raised. Bytes first because a store may find what to delete through the row (the host's
    own column: ``posync_photo`` maps the key to the host's photo row)."""
    with repo.translating("read photo row"), engine.connect() as conn:
        row = repo.keys_of(conn, photo_id)
        if row is None:
            return False
        # a key that could escape the store never held bytes there (an older posync listed such keys: issue 15)
        keys = {k for k in (row.stored_key, row.object_key) if k and key_refusal(k) is None}
        unused = [k for k in keys if not repo.key_users(conn, k) - {photo_id}]
    for key in unused:
        store.delete(key)
    with photo_write(engine, gate, "delete photo row") as conn:
        repo.delete_row(conn, photo_id)
    return True


def delete_product(engine: Engine, store: PhotoStore, product_id: str, *, gate: WriteGate | None = None) -> int:
    """Cascade: a product deleted at the outlet takes its photos from the store and the database."""
    with engine.connect() as conn:
        ids = repo.ids_of_product(conn, product_id)
    return sum(delete_photo(engine, store, i, gate=gate) for i in ids)


def _prefix(prefix: str) -> str:
    check_key(prefix.rstrip("/"))
    return prefix if prefix.endswith("/") else prefix + "/"


def delete_prefix(engine: Engine, store: PhotoStore, prefix: str, *, gate: WriteGate | None = None) -> int:
    """Cascade for a variant: every photo under ``prefix`` (rows and bytes), and stray bytes there too."""
    prefix = _prefix(prefix)
    with engine.connect() as conn:
        ids = repo.ids_under(conn, prefix)
    removed = sum(delete_photo(engine, store, i, gate=gate) for i in ids)
    for obj in list(store.list(prefix)):
        store.delete(obj.key)
    return removed


@dataclass(frozen=True, slots=True)
class MoveResult:
    rows: int
    objects: int


def move_prefix(engine: Engine, store: PhotoStore, old: str, new: str, *,
                gate: WriteGate | None = None) -> MoveResult:
    """Move every photo under ``old`` to ``new`` (bytes and rows together)."""
    old, new = _prefix(old), _prefix(new)
    if new.startswith(old) or old.startswith(new):
        raise PhotoStoreError(store.kind, "move", f"{old} -> {new}", "one prefix contains the other")
    objects = [o.key for o in store.list(old)]
    copied: list[str] = []
    try:
        for key in objects:
            target = new + key[len(old):]
            store.copy(key, target)
            copied.append(target)
        with photo_write(engine, gate, "move photo rows") as conn:
            rows = repo.move_prefix(conn, old, new)
    except Exception:
        for target in copied:  # undo: the old bytes and rows are untouched
            with contextlib.suppress(PhotoStoreError):
                store.delete(target)
        raise
    for key in objects:
        try:
            store.delete(key)
        except PhotoStoreError:  # the move stands; a stray old copy is an orphan reconciliation removes
            log.warning("photo move: could not remove the old copy of %s", key)
    return MoveResult(rows, len(objects))


def photo_row(engine: Engine, photo_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = repo.photo_values(conn, photo_id)
    if row is None:
        raise PhotoNotFoundError(photo_id)
    return row
