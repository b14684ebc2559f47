"""Reconciliation (seed 002): is every photo the metadata says is stored really there, with its MD5, is
nothing else in the store, and does the store hold what HO lists? Decided by
:func:`~posync.services.photos.decide.decide_reconcile` from the store, the rows and HO's listing; acted on here.

* orphaned: in the store, no row holds it and HO does not list the key -> ``remove_orphaned`` deletes it;
* adopt / fetch: HO lists the key but no row holds it (the row was lost): the fix's full pass rebuilds the
  row from HO's listing, keeps the bytes if size and MD5 match, else fetches them again. Never removed;
* missing: a row says the store holds it and it does not; corrupt: the bytes' MD5 differs ->
  ``recreate_missing`` marks the row pending, and the fix's full pass fetches the bytes from HO again;
* unjudged: no row holds it and HO's listing could not be read (HO out of reach, a listing that kept
  shifting): kept, since nobody can tell an orphan from a photo whose row was lost. So is a key HO lists
  for a photo posync refused (a refused photo counts as listed, and holds back no other delete).

A dry run unless ``fix``; it reads HO's listing too, and says what a fix would adopt, fetch and remove.
Scope: one product (its rows, HO's photos of it, and the store under ``products/<id>/``, seed 001's
layout) or everything. MD5s are computed by reading the bytes where the store cannot vouch for them
(files, database chunks, multipart S3 objects).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from posync.db import WriteGate
from posync.errors import HOErrorResponse, PhotoStoreError, TransportError
from posync.ho.photos.sources import PhotoSource
from posync.repositories import photos as repo
from posync.services.photos.decide import PageMark, ReconcileAction, ReconcilePlan, decide_reconcile, pass_shifted
from posync.services.photos.report import SyncReport
from posync.services.photos.writes import photo_write
from posync.stores.base import PhotoStore

__all__ = ["HOListing", "ReconcileReport", "read_listing", "reconcile"]

log = logging.getLogger("posync.photos")


@dataclass(frozen=True)
class HOListing:
    """What HO lists, in the reconciliation's scope: ``keys`` is object_key -> MD5; ``error`` says why it
    could not be read (then ``keys`` is None and no key may be judged an orphan). ``held``: the keys of
    listed photos posync refused (where safe to name): HO lists them, so they are never orphans."""

    keys: dict[str, str] | None
    error: str | None = None
    held: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ReconcileReport:
    product_id: str | None
    fixed: bool
    plan: ReconcilePlan
    removed: int
    requeued: int
    errors: list[str]
    listing_error: str | None = None  # HO's listing could not be read: nothing was judged an orphan
    fix_would: dict[str, int] = field(default_factory=dict)  # a dry run: what a fix would adopt, fetch, remove
    pass_report: SyncReport | None = None  # the fix's full pass
    busy: bool = False  # a photo pass was running: nothing was checked

    @property
    def ok(self) -> bool:
        """The check ran whole (HO's listing read, no store errors) and, with ``fix``, left the outlet
        equal to HO. What a dry run finds does not make it fail."""
        return (not self.busy and self.listing_error is None and not self.errors
                and (self.pass_report is None or self.pass_report.ok))

    def as_dict(self) -> dict[str, Any]:
        p = self.plan
        out: dict[str, Any] = {
            "product_id": self.product_id, "fixed": self.fixed, **p.counts(), "removed": self.removed,
            "requeued": self.requeued, "errors": self.errors, "listing_error": self.listing_error,
            "busy": self.busy, "ok": self.ok}
        if not self.fixed:
            out["fix_would"] = self.fix_would
        if self.pass_report is not None:
            out["pass"] = {k: v for k, v in self.pass_report.as_dict().items() if k != "failures"}
        return {**out, "orphaned_files": p.orphaned[:100], "unjudged_files": p.unjudged[:100],
                "adopt_files": p.adopt[:100], "fetch_files": p.fetch[:100], "missing_files": p.missing[:100],
                "corrupt_files": p.corrupt[:100]}


def read_listing(source: PhotoSource, page_size: int, *, product_id: str | None = None,
                 deadline_seconds: float = 3600.0, max_relists: int = 2) -> HOListing:
    """Everything HO lists (read only: no row is written). An offset-paged listing that shifted under its
    offsets may have skipped keys, so it is read again, and one that keeps shifting counts as unread."""
    prefix = f"products/{product_id}/" if product_id else ""
    deadline = time.monotonic() + deadline_seconds
    for _ in range(max_relists + 1):
        keys: dict[str, str] = {}
        held: set[str] = set()
        marks: list[PageMark] = []
        seen: set[str] = set()
        duplicates = offset = 0
        try:
            for page in source.pages(None, page_size):
                marks.append(PageMark(offset, page.count, page.total))  # a refused row is listed too
                offset += page.count
                for p in page.photos:
                    duplicates += p.id in seen
                    seen.add(p.id)
                    if product_id is None or p.product_id == product_id or p.object_key.startswith(prefix):
                        keys[p.object_key] = p.checksum
                for r in page.rejected:
                    if r.photo_id is not None:
                        duplicates += r.photo_id in seen
                        seen.add(r.photo_id)
                    if r.object_key is not None:
                        held.add(r.object_key)
                if time.monotonic() > deadline:
                    return HOListing(None, "HO's listing: the deadline ran out")
        except (TransportError, HOErrorResponse) as exc:
            return HOListing(None, f"HO's listing: {exc}")
        if not pass_shifted(marks, duplicates, complete=True):
            return HOListing(keys, held=frozenset(held - keys.keys()))
    return HOListing(None, "HO's listing kept shifting under its offsets")


def reconcile(engine: Engine, store: PhotoStore, listing: HOListing, *, product_id: str | None = None,
              fix: bool = False, remove_orphaned: bool = True, recreate_missing: bool = True,
              verify_bytes: bool = True, gate: WriteGate | None = None) -> ReconcileReport:
    """Decide, and with ``fix`` remove orphans and re-queue missing or corrupt rows. Adopting and fetching
    what HO lists is the fix's full pass (:meth:`PhotoSync.reconcile`), which rebuilds lost rows. ``gate``:
    Posync's write gate, when it wired these photos."""
    expected, owners = _expected(engine, product_id)
    prefix = f"products/{product_id}/" if product_id else ""
    listed = listing.keys
    actual: dict[str, str | None] = {}
    errors: list[str] = []
    for obj in store.list(prefix):
        actual[obj.key] = obj.md5
    outside = [k for k in (*expected, *(listed or ())) if not k.startswith(prefix)]
    for key in outside:  # a product's photos may live outside its prefix
        if key not in actual and (obj2 := store.stat(key)) is not None:
            actual[key] = obj2.md5
    if verify_bytes:  # the rows' bytes, and bytes no row holds under a key HO lists (adopt, or fetch again?)
        for key in list(actual):
            if actual[key] is None and (key in expected or (listed is not None and key in listed)):
                try:
                    actual[key] = store.hash(key)
                except PhotoStoreError as exc:
                    errors.append(f"{key}: {exc}")
    plan = decide_reconcile(expected, actual, listed=listed, held=listing.held,
                            remove_orphaned=fix and remove_orphaned, recreate_missing=fix and recreate_missing)
    removed = requeued = 0
    requeue: list[str] = []
    for action, key in plan.actions:
        if action is ReconcileAction.REMOVE_ORPHANED:
            try:
                removed += store.delete(key)
            except PhotoStoreError as exc:
                errors.append(f"{key}: {exc}")
        elif action is ReconcileAction.RECREATE_MISSING:
            requeue.extend(owners[key])
    if requeue:
        with photo_write(engine, gate, "requeue photos") as conn:
            requeued = repo.requeue(conn, requeue, "reconcile: bytes missing or corrupt")
    would = {"adopt": len(plan.adopt) if recreate_missing else 0,
             "fetch": len(plan.fetch) + len(plan.missing) + len(plan.corrupt) if recreate_missing else 0,
             "remove": len(plan.orphaned) if remove_orphaned else 0}
    report = ReconcileReport(product_id, fix, plan, removed, requeued, errors, listing.error,
                             {} if fix else would)
    log.info("photo reconcile: %s", {k: v for k, v in report.as_dict().items() if not k.endswith("_files")})
    if listing.error is not None:
        log.warning("photo reconcile: %s; %d files no row holds were kept unjudged", listing.error,
                    len(plan.unjudged))
    return report


def _expected(engine: Engine, product_id: str | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    """key -> the MD5 the rows say the store holds there, and key -> the photos whose bytes those are."""
    expected: dict[str, str] = {}
    owners: dict[str, list[str]] = {}
    with repo.translating("read photo metadata"), engine.connect() as conn:
        stored = repo.stored_photos(conn, product_id)
    for photo in stored:
        expected.setdefault(photo.key, photo.checksum)
        owners.setdefault(photo.key, []).append(photo.id)
    return expected, owners
