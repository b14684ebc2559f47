"""The byte phase of a pass: every photo that needs bytes gets them, verified, under its key.

Identical bytes are fetched once per pass (photos grouped by checksum) and never again: bytes the edge
already holds under another key are copied there, bytes already right under the photo's own key (a crash
after the commit, a store filled by hand) are adopted. Only then is anything downloaded, through the byte
engine, into a staged file that the store takes atomically. A row says ``synced`` only after that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from posync.db import write_transaction
from posync.models.photo import PhotoSyncStatus
from posync.photos import repository as repo
from posync.photos.client.http import AuthHeaders
from posync.photos.client.sources import PhotoReport, PhotoSource
from posync.photos.decide import WAITING, WorkGroup, WorkItem, group_work
from posync.photos.errors import PhotoStoreError
from posync.photos.listing import Lister
from posync.photos.report import SyncReport, Tally
from posync.photos.stores.base import PhotoStore
from posync.photos.transfer.engine import ByteEngine, FetchJob, FetchOutcome
from posync.photos.transfer.staged import Staged

__all__ = ["Transfers", "retry_after"]

log = logging.getLogger("posync.photos")
FLUSH_EVERY = 200


def retry_after(attempts: int) -> timedelta:
    """Backoff between passes for a photo that keeps failing: 30 s doubling, at most an hour."""
    return timedelta(seconds=min(3600.0, 30.0 * 2 ** max(0, attempts)))


class Transfers:
    def __init__(self, engine: Engine, store: PhotoStore, source: PhotoSource, byte_engine: ByteEngine,
                 auth: AuthHeaders, lister: Lister) -> None:
        self.engine = engine
        self.store = store
        self.source = source
        self.bytes = byte_engine
        self.auth = auth
        self.lister = lister
        self._lock = threading.Lock()
        self._synced: list[tuple[str, str, str]] = []
        self._failed: list[tuple[str, str, datetime]] = []
        self._stale: list[str] = []
        self.reports: list[PhotoReport] = []

    def run(self, report: SyncReport, tally: Tally, *, full: bool, deadline: float) -> None:
        with repo.translating("read photo work"), self.engine.connect() as conn:
            items = repo.work(conn, datetime.now(UTC), include_backoff=full)
            if not items:
                return
            present = self.lister.present(conn, {i.product_id for i in items})
            ready = [i for i in items if i.product_id in present]
            waiting = [i.id for i in items if i.product_id not in present]
            sources = repo.sources_by_checksum(conn, sorted({i.checksum for i in ready}))
        report.waiting_product = len(waiting)
        with repo.translating("mark photos syncing"), write_transaction(self.engine) as conn:
            repo.set_status(conn, waiting, PhotoSyncStatus.PENDING.value, WAITING)
            repo.set_status(conn, [i.id for i in ready], PhotoSyncStatus.SYNCING.value)
        groups = group_work(ready, sources)
        tally.phase = "transferring"
        tally.total = len(ready)
        tally.bytes_total = sum(g.size for g in groups if g.source_key is None)
        targets: dict[str, tuple[WorkItem, ...]] = {}
        jobs = list(self._local_first(groups, targets, report, tally))
        self.bytes.run(jobs, lambda outcome: self._done(outcome, targets[outcome.job.md5], report, tally),
                       deadline=deadline, auth=lambda refresh: self.auth.get(refresh=refresh),
                       on_bytes=tally.add_bytes)
        report.byte_requests += sum(j.attempts for j in jobs)
        self._flush(force=True)

    # -- without a download ------------------------------------------------------------------------------

    def _local_first(self, groups: list[WorkGroup], targets: dict[str, tuple[WorkItem, ...]],
                     report: SyncReport, tally: Tally) -> Iterator[FetchJob]:
        staging = self.store.staging_dir()
        for group in groups:
            items = group.items
            if group.source_key is not None and self._holds(group.source_key, group):
                items = tuple(i for i in items if not self._copy(group.source_key, i, report, tally))
            cheap = self.store.kind != "s3"  # a stat per photo is a request on S3: only after a crash there
            items = tuple(i for i in items
                          if not ((cheap or i.sync_status == PhotoSyncStatus.SYNCING) and self._adopt(i, report, tally)))
            if not items:
                continue
            first = items[0]
            request = self.source.byte_request(first.id, first.image_url)
            if request is None:
                self._fail(items, "no_url", report, tally)
                continue
            targets[group.checksum] = items
            yield FetchJob(group.checksum, first.id, request.url, request.authenticated, group.size,
                           Staged(staging, group.checksum, group.size))

    def _holds(self, key: str, group: WorkGroup) -> bool:
        try:
            stat = self.store.stat(key)
        except PhotoStoreError:
            return False
        return stat is not None and stat.size == group.size and stat.md5 in (None, group.checksum)

    def _copy(self, source_key: str, item: WorkItem, report: SyncReport, tally: Tally) -> bool:
        try:
            if item.object_key != source_key:
                self.store.copy(source_key, item.object_key)
        except PhotoStoreError as exc:
            log.warning("photo %s: copy from %s failed (%s); fetching instead", item.id, source_key, exc)
            return False
        report.copied += 1
        self._settled(item, report, tally)
        return True

    def _adopt(self, item: WorkItem, report: SyncReport, tally: Tally) -> bool:
        try:
            stat = self.store.stat(item.object_key)
            if stat is None or stat.size != item.size or self.store.hash(item.object_key) != item.checksum:
                return False
        except PhotoStoreError:
            return False
        report.adopted += 1
        self._settled(item, report, tally)
        return True

    # -- after a download ---------------------------------------------------------------------------------

    def _done(self, outcome: FetchOutcome, items: tuple[WorkItem, ...], report: SyncReport, tally: Tally) -> None:
        job = outcome.job
        if outcome.error is not None:
            self._fail(items, outcome.error.reason, report, tally)
            return
        committed: list[WorkItem] = []
        try:
            for n, item in enumerate(items):
                self.store.put_file(item.object_key, job.staged.path, md5=job.md5, content_type=item.content_type,
                                    consume=n == len(items) - 1)
                committed.append(item)
        except PhotoStoreError as exc:
            job.staged.keep()  # verified bytes: the next pass commits them without a download
            self._fail(items[len(committed):], "store", report, tally, str(exc))
        else:
            job.staged.committed()
        with self._lock:
            report.fetched += 1
            report.bytes += job.size
        for item in committed:
            self._settled(item, report, tally)

    def _settled(self, item: WorkItem, report: SyncReport, tally: Tally) -> None:
        with self._lock:
            self._synced.append((item.id, item.object_key, item.checksum))
            if item.stored_key and item.stored_key != item.object_key:
                self._stale.append(item.stored_key)
            self.reports.append(PhotoReport(item.id, "synced", datetime.now(UTC), None))
            report.synced += 1
        tally.finished()
        self._flush()

    def _fail(self, items: tuple[WorkItem, ...], reason: str, report: SyncReport, tally: Tally,
              detail: str = "") -> None:
        now = datetime.now(UTC)
        with self._lock:
            for item in items:
                self._failed.append((item.id, reason + (f": {detail}" if detail else ""),
                                     now + retry_after(item.attempts)))
                self.reports.append(PhotoReport(item.id, "failed", None, reason))
                if len(report.failures) < 50:
                    report.failures.append({"photo_id": item.id, "reason": reason})
            report.failed += len(items)
        tally.finished(len(items))
        self._flush()

    def _flush(self, force: bool = False) -> None:
        with self._lock:
            if not force and len(self._synced) + len(self._failed) < FLUSH_EVERY:
                return
            synced, failed, stale = self._synced, self._failed, self._stale
            self._synced, self._failed, self._stale = [], [], []
            now = datetime.now(UTC)
            with repo.translating("record photo results"), write_transaction(self.engine) as conn:
                repo.mark_synced(conn, synced, now)
                repo.mark_failed(conn, failed)
                unused = [k for k in set(stale) if not repo.key_users(conn, k)]
        for key in unused:  # bytes left behind by a photo whose key moved
            with contextlib.suppress(PhotoStoreError):
                self.store.delete(key)
