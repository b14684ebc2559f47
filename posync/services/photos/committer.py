"""The byte pass's results, recorded in batches: a photo's row says ``synced`` only once its bytes are safe.

The transfer loop puts bytes in place (``durable=False``: atomic and visible, the folder fsync deferred)
and hands each result here. Every :data:`BATCH` results, the store first makes the batch's puts durable
(:meth:`PhotoStore.flush`: one fsync per touched folder, not one per photo) and then the whole batch is
recorded in one transaction. A crash anywhere leaves rows ``syncing`` whose bytes are either in place (the
next pass adopts them) or not (it fetches them).

Committing from a thread of its own (a bounded queue between the loop and a committer) was measured and
did not pay: on this 2-core machine the committer's Python competed with the transfer loop for the GIL as
much as it saved (bench/README.md, photos).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from posync.db import WriteGate
from posync.errors import PhotoStoreError
from posync.ho.photos.sources import PhotoReport
from posync.repositories import photos as repo
from posync.services.photos.writes import photo_write
from posync.stores.base import PhotoStore

__all__ = ["BATCH", "Committer"]

BATCH = 200  # results per transaction


@dataclass(slots=True)
class _Batch:
    synced: list[tuple[str, str, str]] = field(default_factory=list)  # (id, key, checksum)
    failed: list[tuple[str, str, str, datetime]] = field(default_factory=list)  # (id, reason, detail, next)
    stale: list[str] = field(default_factory=list)  # keys a moved photo no longer uses

    def __len__(self) -> int:
        return len(self.synced) + len(self.failed)


class Committer:
    """``synced``/``failed`` from any thread (the urllib3 engine settles from N); :meth:`close` commits the
    rest. A batch is committed by the thread whose result filled it."""

    def __init__(self, engine: Engine, store: PhotoStore, *, batch: int = BATCH, gate: WriteGate | None = None) -> None:
        self.engine = engine
        self.store = store
        self.gate = gate  # Posync's write gate, when it wired these photos
        self.batch = batch
        self.reports: list[PhotoReport] = []
        self._pending = _Batch()
        self._lock = threading.Lock()  # the pending batch
        self._commit_lock = threading.Lock()  # one commit at a time, in the order batches filled

    def synced(self, photo_id: str, key: str, checksum: str, stale_key: str | None = None) -> None:
        with self._lock:
            self._pending.synced.append((photo_id, key, checksum))
            if stale_key is not None:
                self._pending.stale.append(stale_key)
            full = self._take(self.batch)
        if full is not None:
            self._commit(full)

    def failed(self, photo_id: str, reason: str, detail: str, next_attempt_at: datetime) -> None:
        with self._lock:
            self._pending.failed.append((photo_id, reason, detail, next_attempt_at))
            full = self._take(self.batch)
        if full is not None:
            self._commit(full)

    def close(self) -> None:
        """Commit what is left."""
        with self._lock:
            rest = self._take(1)
        if rest is not None:
            self._commit(rest)

    def abandon(self) -> None:
        """The pass is failing: commit what is pending if that still works (its bytes are in place),
        never raising over the caller's own exception."""
        with contextlib.suppress(Exception):
            self.close()

    def _take(self, at_least: int) -> _Batch | None:
        if len(self._pending) < at_least:
            return None
        full, self._pending = self._pending, _Batch()
        return full

    def _commit(self, batch: _Batch) -> None:
        with self._commit_lock:
            self.store.flush()  # the batch's renames survive a power cut before any row says synced
            now = datetime.now(UTC)
            with photo_write(self.engine, self.gate, "record photo results") as conn:
                repo.mark_synced(conn, batch.synced, now)
                repo.mark_failed(conn, [(i, reason + (f": {detail}" if detail else ""), at)
                                        for i, reason, detail, at in batch.failed])
                unused = [k for k in set(batch.stale) if not repo.key_users(conn, k)]
            self.reports.extend(PhotoReport(i, "synced", now, None) for i, _, _ in batch.synced)
            self.reports.extend(PhotoReport(i, "failed", None, reason) for i, reason, _, _ in batch.failed)
        for key in unused:  # bytes left behind by a photo whose key moved
            with contextlib.suppress(PhotoStoreError):
                self.store.delete(key)
