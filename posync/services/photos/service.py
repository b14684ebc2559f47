"""``PhotoSync``: one pass = list (HO's manifest into rows), transfer (bytes for rows that need them),
delete (HO's deletes, after an error-free pass, under a cap), report (the older API's status call).

One pass at a time per outlet: a lock in the process and a lock file beside the staged downloads (so two
processes sharing a store do not fetch into the same partial files); a pass that finds either taken
returns at once with ``busy``. Every wait is bounded: HTTP timeouts on each request, and the pass's own
deadline over all of them. Each pass records the store it ran against (its summary's ``store``); a pass that
finds another store runs as a full pass, since the rows' synced state is the other store's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy.engine import Engine

from posync.db import WriteGate
from posync.errors import DeleteCapExceeded, HOErrorResponse, PhotoStoreError, TransportError
from posync.ho.auth import AuthHeaders
from posync.ho.photos.sources import PhotoSource
from posync.models.photo import PhotoSyncStatus
from posync.repositories import photos as repo
from posync.services.photos import ops
from posync.services.photos.decide import ReconcilePlan, plan_deletes
from posync.services.photos.listing import Lister, ProductLookup
from posync.services.photos.reconcile import ReconcileReport, read_listing, reconcile
from posync.services.photos.report import ProgressFn, SyncReport, Tally
from posync.services.photos.transfers import Transfers
from posync.services.photos.writes import photo_write
from posync.stores.base import PhotoStore, store_identity
from posync.transfer.engine import ByteEngine

__all__ = ["PhotoSync"]

log = logging.getLogger("posync.photos")

# which passes learn of HO's deletes, per photo API (seed 000's listing has no deleted_ids)
DELETES_SEEN_BY = {"v1": "every pass (HO's deleted_ids) and the full check",
                   "legacy": "full check only (the legacy API reports no deletes): see last_full_at"}


class PhotoSync:
    def __init__(self, engine: Engine, source: PhotoSource, store: PhotoStore, byte_engine: ByteEngine,
                 auth: AuthHeaders, *, checkpoint_key: str, page_size: int = 100, max_deletes: int = 100,
                 deadline_seconds: float = 3600.0, products: ProductLookup | None = None,
                 closers: list[Any] | None = None, incremental_minute: int = 0, full_hour: int = 2,
                 gate: WriteGate | None = None) -> None:
        self.engine = engine
        self.source = source
        self.store = store
        self.byte_engine = byte_engine
        self.auth = auth
        self.checkpoint_key = checkpoint_key
        self.max_deletes = max_deletes
        self.deadline_seconds = deadline_seconds
        self.lister = Lister(engine, source, checkpoint_key, page_size=page_size, products=products, gate=gate)
        self._closers = closers or []
        # when photo_jobs runs the hourly incremental pass and the nightly full check (settings.photos'
        # incremental_minute / full_hour: POSYNC_PHOTO_INCREMENTAL_MINUTE, POSYNC_PHOTO_FULL_HOUR)
        self.incremental_minute = incremental_minute
        self.full_hour = full_hour
        self._lock = threading.RLock()  # re-entered only by reconcile (see _exclusive)
        self._depth = 0

    @property
    def gate(self) -> WriteGate | None:
        """The write gate photo write transactions enter (Posync's, handed over when it wires these photos):
        they go after the till's writes, as push's and pull's do. None: SQLite's locking alone."""
        return self.lister.gate

    @gate.setter
    def gate(self, gate: WriteGate | None) -> None:
        self.lister.gate = gate

    def __repr__(self) -> str:
        return f"PhotoSync(source={self.source.name!r}, store={self.store!r})"

    # -- a pass ------------------------------------------------------------------------------------------

    def sync(self, *, full: bool = False, progress: ProgressFn | None = None,
             max_deletes: int | None = None) -> SyncReport:
        """One pass. ``full`` lists everything (the nightly check) and retries failed photos at once;
        otherwise only what HO changed since the checkpoint, plus photos still owed bytes."""
        report = SyncReport(full=full)
        started = time.monotonic()
        with self._exclusive() as got:
            if not got:
                report.busy = True
                return report
            deadline = started + self.deadline_seconds
            tally = Tally(report, progress)
            requests_before = self.source_requests()
            store, recorded = store_identity(self.store), self._recorded_store()
            if recorded not in (None, store):  # the rows' synced state is another store's: check every photo
                log.warning("photos: the store changed (was %s, now %s): this pass checks every photo against it, "
                            "as a full pass does", recorded, store, extra={"event": "photos.store_changed"})
                full = report.full = True
            if full and not self._requeue_missing(report) and recorded is not None:
                store = recorded  # the new store could not be checked: the next pass tries again
            self.lister.run(report, tally, full=full, deadline=deadline)
            transfers = Transfers(self.engine, self.store, self.source, self.byte_engine, self.auth, self.lister,
                                  gate=self.gate)
            transfers.run(report, tally, full=full, deadline=deadline)
            tally.phase = "deleting"
            tally.emit(force=True)
            self._deletes(report, self.max_deletes if max_deletes is None else max_deletes)
            self._report_to_ho(transfers, report)
            self._count_states(report)
            report.api_requests = self.source_requests() - requests_before
            report.seconds = time.monotonic() - started
            tally.phase = "done"
            tally.emit(force=True)
            self._save_summary(report, store)
        log.info("photo pass (%s): %d listed, %d synced, %d failed, %d deleted, %d not synced, %.1f MB in %.2fs",
                 "full" if full else "incremental", report.listed, report.synced, report.failed, report.deleted,
                 report.unsynced, report.bytes / 1e6, report.seconds,
                 extra={"event": "photos.pass", "full": full, "listed": report.listed, "synced": report.synced,
                        "failed": report.failed, "deleted": report.deleted, "unsynced": report.unsynced,
                        "bytes": report.bytes, "seconds": round(report.seconds, 3)})
        return report

    def _recorded_store(self) -> str | None:
        """The store the last pass ran against (its summary's ``store``); None before any pass recorded one."""
        with repo.translating("read photo checkpoint"), self.engine.connect() as conn:
            cp = repo.load_checkpoint(conn, self.checkpoint_key)
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            recorded = json.loads(cp.last_summary).get("store") if cp is not None and cp.last_summary else None
            return recorded if isinstance(recorded, str) else None
        return None

    def _requeue_missing(self, report: SyncReport) -> bool:
        """The full check also finds bytes gone from the store (a folder wiped by hand, another store on the
        same database): those photos are fetched again in this pass. One listing of the store. False when
        the store could not be listed."""
        with repo.translating("read stored keys"), self.engine.connect() as conn:
            owners = repo.stored_owners(conn)
        if not owners:
            return True
        try:
            present = {obj.key for obj in self.store.list()}
        except PhotoStoreError as exc:
            log.warning("photos: the full check could not list the store: %s", exc)
            return False
        missing = [photo_id for key, ids in owners.items() if key not in present for photo_id in ids]
        if missing:
            with photo_write(self.engine, self.gate, "requeue photos") as conn:
                report.requeued = repo.requeue(conn, missing, "full check: bytes missing from the store")
            log.warning("photos: %d photos' bytes were missing from the store; fetching them again", len(missing))
        return True

    def source_requests(self) -> int:
        return int(getattr(self.source, "requests", 0))

    def _deletes(self, report: SyncReport, cap: int) -> None:
        with repo.translating("read HO deletes"), self.engine.connect() as conn:
            ids = repo.tombstoned(conn)
        # a refused photo failed alone and the listing was whole: it holds back no delete (issue 15)
        clean = report.error is None and report.failed == report.refused and not report.shifted
        decision = plan_deletes(len(ids), cap, clean_pass=clean)
        if not decision.apply:
            if ids:
                report.deletes_held = len(ids) if clean else 0
                report.delete_note = decision.reason
                if clean:
                    log.warning("photos: %s", DeleteCapExceeded(len(ids), cap))
            return
        for photo_id in ids:
            try:
                report.deleted += ops.delete_photo(self.engine, self.store, photo_id, gate=self.gate)
            except PhotoStoreError as exc:
                report.failed += 1
                report.failures.append({"photo_id": photo_id, "reason": f"delete: {exc.operation}"})

    def _count_states(self, report: SyncReport) -> None:
        with repo.translating("count photo states"), self.engine.connect() as conn:
            report.states = repo.listed_states(conn)
        report.unsynced = sum(n for state, n in report.states.items()
                              if state not in (PhotoSyncStatus.SYNCED.value, "waiting_product"))

    def _report_to_ho(self, transfers: Transfers, report: SyncReport) -> None:
        results = [*self.lister.reports, *transfers.reports]  # refused by the listing, then the byte pass
        if not results:
            return
        try:
            self.source.report(results)
        except (TransportError, HOErrorResponse) as exc:  # the photos are fine; HO learns next time
            log.warning("photos: status report to HO failed: %s", exc)

    def _save_summary(self, report: SyncReport, store: str) -> None:
        summary = {k: v for k, v in report.as_dict().items() if k != "failures"}
        summary["at"] = datetime.now(UTC).isoformat()
        summary["store"] = store  # the store the rows' synced state refers to (kind and location, no secret)
        with contextlib.suppress(Exception), photo_write(self.engine, self.gate, "save photo summary") as conn:
            repo.save_checkpoint(conn, self.checkpoint_key, last_summary=json.dumps(summary))

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        if not self._lock.acquire(blocking=False):
            yield False
            return
        if self._depth:  # the holding thread again: reconcile's fix runs its full pass inside its own hold
            self._depth += 1
            try:
                yield True
            finally:
                self._depth -= 1
                self._lock.release()
            return
        lock_file: IO[bytes] | None = None
        self._depth = 1
        try:
            lock_file = _lock_file(self.store)
            yield lock_file is not None
        finally:
            self._depth = 0
            if lock_file is not None:
                lock_file.close()  # closing releases the flock
            self._lock.release()

    # -- state -------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts per sync status (plus waiting for a product, deleted at HO), the first failed photos with
        their reasons, the last passes (``last_full_at``: the last full check), which passes see HO's deletes,
        and when the scheduled passes run."""
        with repo.translating("read photo status"), self.engine.connect() as conn:
            counts = repo.counts(conn)
            failures = repo.failures(conn)
            cp = repo.load_checkpoint(conn, self.checkpoint_key)
        last = json.loads(cp.last_summary) if cp is not None and cp.last_summary else None
        return {"source": self.source.name, "store": self.store.kind, "photos": counts, "failures": failures,
                "updated_since": _iso(cp.updated_since if cp is not None else None),
                "last_incremental_at": _iso(cp.last_incremental_at if cp is not None else None),
                "last_full_at": _iso(cp.last_full_at if cp is not None else None), "last_pass": last,
                "deletes_seen_by": DELETES_SEEN_BY.get(self.source.name, DELETES_SEEN_BY["v1"]),
                "schedule": {"incremental_minute": self.incremental_minute, "full_hour": self.full_hour}}

    def reconcile(self, *, product_id: str | None = None, fix: bool = False, remove_orphaned: bool = True,
                  recreate_missing: bool = True) -> ReconcileReport:
        """Check store against metadata and HO's listing (:mod:`posync.services.photos.reconcile`); returns a
        ReconcileReport. With ``fix``: orphans (keys HO does not list) removed, missing or corrupt bytes
        re-queued, then a full pass, which rebuilds rows HO lists and adopts or fetches their bytes. With
        HO out of reach nothing is removed. Holds the pass lock throughout: no pass writes meanwhile."""
        with self._exclusive() as got:
            if not got:
                return ReconcileReport(product_id, fix, ReconcilePlan(), 0, 0, [], busy=True)
            listing = read_listing(self.source, self.lister.page_size, product_id=product_id,
                                   deadline_seconds=self.deadline_seconds)
            report = reconcile(self.engine, self.store, listing, product_id=product_id, fix=fix,
                               remove_orphaned=remove_orphaned, recreate_missing=recreate_missing, gate=self.gate)
            if fix and recreate_missing:
                report = dataclasses.replace(report, pass_report=self.sync(full=True))
            return report

    def close(self) -> None:
        for closer in (self.byte_engine, self.store, *self._closers):
            with contextlib.suppress(Exception):
                closer.close()

    def __enter__(self) -> PhotoSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).isoformat()  # SQLite reads naive UTC


def _lock_file(store: PhotoStore) -> IO[bytes] | None:
    """An exclusive, non-blocking lock beside the staged downloads; None when another process holds it."""
    f = open(store.staging_dir() / ".lock", "ab")  # noqa: SIM115 - returned to the caller, who closes it
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the in-process lock is all there is
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    os.set_inheritable(f.fileno(), False)
    return f
