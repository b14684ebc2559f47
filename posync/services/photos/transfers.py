"""The byte phase of a pass: every photo that needs bytes gets them, verified, under its key.

Identical bytes are fetched once per pass (photos grouped by checksum) and never again: bytes the edge
already holds under another key are copied there, bytes already right under the photo's own key (a crash
after the commit, a store filled by hand) are adopted. Only then is anything downloaded, through the byte
engine, into a staged file that the store takes atomically. A row says ``synced`` only after that: the
results are recorded in batches by :class:`~posync.services.photos.committer.Committer`, after the store has made
the batch's puts durable.

A failure is recorded with its reason and the system's words (``no_space: No space left on device``); a
photo that failed for a full disk is due again at the next pass, any other failure after a backoff. A store
write that fails is that photo's alone: the photos sharing its bytes are still put under their keys.

Jobs are made as the engine has room for them (a generator), so the first downloads start while the
rest are still being checked against the store.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from posync.db import WriteGate
from posync.errors import PhotoStoreError, PhotoTransferError
from posync.ho.auth import AuthHeaders
from posync.ho.photos.sources import ByteRequest, PhotoReport, PhotoSource
from posync.ho.photos.wire import key_refusal
from posync.models.photo import UNSAFE_KEY, WAITING, PhotoSyncStatus, WorkItem
from posync.repositories import photos as repo
from posync.retry import backoff_base
from posync.services.photos.committer import Committer
from posync.services.photos.decide import WorkGroup, group_work
from posync.services.photos.listing import Lister
from posync.services.photos.report import SyncReport, Tally
from posync.services.photos.writes import photo_write
from posync.stores.base import PhotoStore, StoredObject
from posync.transfer.engine import ByteEngine, FetchJob, FetchOutcome
from posync.transfer.staged import NO_SPACE, Staged

__all__ = ["Transfers", "retry_after"]

log = logging.getLogger("posync.photos")


def retry_after(attempts: int) -> timedelta:
    """Backoff between passes for a photo that keeps failing: 30 s doubling, at most an hour (no jitter: a
    pass comes every few minutes anyway). ``attempts`` counts the failures before this one."""
    return timedelta(seconds=backoff_base(attempts + 1, 30.0, 3600.0))


def _split_unsafe(items: list[WorkItem]) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
    """Rows an older posync listed with a key that could escape the store (issue 15) fail alone, never
    reaching the store (the listing refuses such keys now); the rest, and those with why."""
    unsafe = [(i, why) for i in items if (why := key_refusal(i.object_key)) is not None]
    if not unsafe:
        return items, []
    refused = {i.id for i, _ in unsafe}
    return [i for i in items if i.id not in refused], unsafe


class Transfers:
    def __init__(self, engine: Engine, store: PhotoStore, source: PhotoSource, byte_engine: ByteEngine,
                 auth: AuthHeaders, lister: Lister, *, gate: WriteGate | None = None) -> None:
        self.engine = engine
        self.store = store
        self.source = source
        self.bytes = byte_engine
        self.auth = auth
        self.lister = lister
        self.gate = gate  # Posync's write gate, when it wired these photos
        self._lock = threading.Lock()  # the report's counters (the urllib3 engine settles from N threads)
        self.reports: list[PhotoReport] = []

    def run(self, report: SyncReport, tally: Tally, *, full: bool, deadline: float) -> None:
        with repo.translating("read photo work"), self.engine.connect() as conn:
            items, unsafe = _split_unsafe(repo.work(conn, datetime.now(UTC), include_backoff=full))
            if not items and not unsafe:
                return
            present = self.lister.present(conn, {i.product_id for i in items})
            ready = [i for i in items if i.product_id in present]
            waiting = [i.id for i in items if i.product_id not in present]
            sources = repo.sources_by_checksum(conn, sorted({i.checksum for i in ready}))
        report.waiting_product = len(waiting)
        with photo_write(self.engine, self.gate, "mark photos syncing") as conn:
            repo.set_status(conn, waiting, PhotoSyncStatus.PENDING.value, WAITING)
            repo.set_status(conn, [i.id for i in ready], PhotoSyncStatus.SYNCING.value)
            repo.mark_failed(conn, [(i.id, f"{UNSAFE_KEY}: {why}", datetime.now(UTC)) for i, why in unsafe])
        report.add_failures([{"photo_id": i.id, "reason": UNSAFE_KEY} for i, _ in unsafe], refused=True)
        groups = group_work(ready, sources)
        tally.phase = "transferring"
        tally.total = len(ready)
        tally.bytes_total = sum(g.size for g in groups if g.source_key is None)
        targets: dict[str, tuple[WorkItem, ...]] = {}
        jobs: list[FetchJob] = []
        committer = Committer(self.engine, self.store, gate=self.gate)
        self.reports = committer.reports
        try:
            self.bytes.run(self._local_first(groups, targets, jobs, committer, report, tally),
                           lambda outcome: self._done(outcome, targets[outcome.job.md5], committer, report, tally),
                           deadline=deadline, auth=lambda refresh: self.auth.get(refresh=refresh),
                           on_bytes=tally.add_bytes if tally.shown else None)
        except BaseException:
            committer.abandon()  # what is settled is committed; the pass's own error is the one raised
            raise
        finally:
            report.byte_requests += sum(j.attempts for j in jobs)
        committer.close()

    # -- without a download ------------------------------------------------------------------------------

    def _local_first(self, groups: list[WorkGroup], targets: dict[str, tuple[WorkItem, ...]],
                     jobs: list[FetchJob], committer: Committer, report: SyncReport,
                     tally: Tally) -> Iterator[FetchJob]:
        staging = str(self.store.staging_dir())
        parts = frozenset(os.listdir(staging))  # partial downloads earlier runs left: the rest need no lookup
        cheap = self.store.kind != "s3"  # a stat per photo is a request on S3: only after a crash there
        try:  # one folder read per folder on the filesystem store, not a stat per photo
            there = self.store.stat_many([i.object_key for g in groups for i in g.items
                                          if cheap or i.sync_status == PhotoSyncStatus.SYNCING])
        except PhotoStoreError:
            there = {}
        for group in groups:
            items = group.items
            if group.source_key is not None and self._holds(group.source_key, group):
                items = tuple(i for i in items if not self._copy(group.source_key, i, committer, report, tally))
            items = tuple(i for i in items if not (
                i.object_key in there and self._adopt(i, there[i.object_key], committer, report, tally)))
            if not items:
                continue
            request, first, items = self._request(items, committer, report, tally)
            if request is None or first is None:
                continue
            targets[group.checksum] = items
            job = FetchJob(group.checksum, first.id, request.url, request.authenticated, group.size,
                           Staged(staging, group.checksum, group.size, on_disk=f"{group.checksum}.part" in parts))
            jobs.append(job)
            yield job

    def _request(self, items: tuple[WorkItem, ...], committer: Committer, report: SyncReport,
                 tally: Tally) -> tuple[ByteRequest | None, WorkItem | None, tuple[WorkItem, ...]]:
        """The request for a group's bytes, from the first photo whose URL posync fetches; a photo whose own
        URL is refused (file://...) or missing fails alone, never taking its twins with it."""
        request: ByteRequest | None = None
        first: WorkItem | None = None
        fetchable: list[WorkItem] = []
        for item in items:
            try:
                own = self.source.byte_request(item.id, item.image_url)
            except PhotoTransferError as exc:  # no request at all for it
                self._fail((item,), exc.reason, committer, report, tally, exc.detail)
                continue
            if own is None:
                self._fail((item,), "no_url", committer, report, tally)
                continue
            if request is None:
                request, first = own, item
            fetchable.append(item)
        return request, first, tuple(fetchable)

    def _holds(self, key: str, group: WorkGroup) -> bool:
        try:
            stat = self.store.stat(key)
        except PhotoStoreError:
            return False
        return stat is not None and stat.size == group.size and stat.md5 in (None, group.checksum)

    def _copy(self, source_key: str, item: WorkItem, committer: Committer, report: SyncReport, tally: Tally) -> bool:
        try:
            if item.object_key != source_key:
                self.store.copy(source_key, item.object_key)
        except PhotoStoreError as exc:
            log.warning("photo %s: copy from %s failed (%s); fetching instead", item.id, source_key, exc)
            return False
        with self._lock:
            report.copied += 1
        self._settled(item, committer, report, tally)
        return True

    def _adopt(self, item: WorkItem, stat: StoredObject, committer: Committer, report: SyncReport,
               tally: Tally) -> bool:
        try:
            if stat.size != item.size or self.store.hash(item.object_key) != item.checksum:
                return False
        except PhotoStoreError:
            return False
        with self._lock:
            report.adopted += 1
        self._settled(item, committer, report, tally)
        return True

    # -- after a download ---------------------------------------------------------------------------------

    def _done(self, outcome: FetchOutcome, items: tuple[WorkItem, ...], committer: Committer, report: SyncReport,
              tally: Tally) -> None:
        job = outcome.job
        if outcome.error is not None:
            self._fail(items, outcome.error.reason, committer, report, tally, outcome.error.detail)
            return
        committed: list[WorkItem] = []
        refused: list[tuple[WorkItem, PhotoStoreError]] = []
        last = len(items) - 1
        for n, item in enumerate(items):  # each put on its own: one key the store refuses fails that photo alone
            try:
                # visible now; durable once the committer's flush has run, before any row says synced
                self.store.put_file(item.object_key, job.staged.file_name, md5=job.md5,
                                    content_type=item.content_type, consume=n == last and not refused,
                                    durable=False, synced=True)  # verdict() fsynced it
            except PhotoStoreError as exc:
                refused.append((item, exc))
            else:
                committed.append(item)
        if refused:
            job.staged.keep()  # verified bytes: the next pass commits them without a download
        else:
            job.staged.committed()
        for item, error in refused:
            self._fail((item,), "no_space" if _no_space(error) else error.reason, committer, report, tally,
                       str(error))
        with self._lock:
            report.fetched += 1
            report.bytes += job.size
        for item in committed:
            self._settled(item, committer, report, tally)

    def _settled(self, item: WorkItem, committer: Committer, report: SyncReport, tally: Tally) -> None:
        with self._lock:
            report.synced += 1
        tally.finished()
        stale = item.stored_key if item.stored_key and item.stored_key != item.object_key else None
        committer.synced(item.id, item.object_key, item.checksum, stale)

    def _fail(self, items: tuple[WorkItem, ...], reason: str, committer: Committer, report: SyncReport,
              tally: Tally, detail: str = "") -> None:
        now = datetime.now(UTC)
        report.add_failures([{"photo_id": item.id, "reason": reason, "detail": detail} for item in items])
        tally.finished(len(items))
        for item in items:
            # a full disk: due again at the next pass (room may be back by then), not after a backoff
            committer.failed(item.id, reason, detail, now if reason == "no_space" else now + retry_after(item.attempts))


def _no_space(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in NO_SPACE
