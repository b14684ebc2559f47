"""Reconciliation (seed 002): is every photo the metadata says is stored really there, with its MD5, and
is nothing else in the store? Decided by :func:`~posync.photos.decide.decide_reconcile`; acted on here.

* orphaned: in the store, no row holds it -> ``remove_orphaned`` deletes the bytes;
* missing: a row says the store holds it and it does not; corrupt: the bytes' MD5 differs ->
  ``recreate_missing`` marks the row pending, so the next pass fetches the bytes from HO again.

A dry run unless ``fix``; the counts come back either way. Scope: one product (its rows, and the store
under ``products/<id>/``, seed 001's layout) or everything. MD5s are computed by reading the bytes where
the store cannot vouch for them (files, database chunks, multipart S3 objects).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from posync.db import write_transaction
from posync.models.photo import PhotoSyncStatus
from posync.photos.decide import ReconcileAction, ReconcilePlan, decide_reconcile
from posync.photos.errors import PhotoStoreError
from posync.photos.repository import PHOTOS, translating
from posync.photos.stores.base import PhotoStore

__all__ = ["ReconcileReport", "reconcile"]

log = logging.getLogger("posync.photos")


@dataclass(frozen=True)
class ReconcileReport:
    product_id: str | None
    fixed: bool
    plan: ReconcilePlan
    removed: int
    requeued: int
    errors: list[str]

    def as_dict(self) -> dict[str, Any]:
        p = self.plan
        return {"product_id": self.product_id, "fixed": self.fixed, **p.counts(), "removed": self.removed,
                "requeued": self.requeued, "errors": self.errors, "orphaned_files": p.orphaned[:100],
                "missing_files": p.missing[:100], "corrupt_files": p.corrupt[:100]}


def reconcile(engine: Engine, store: PhotoStore, *, product_id: str | None = None, fix: bool = False,
              remove_orphaned: bool = True, recreate_missing: bool = True,
              verify_bytes: bool = True) -> ReconcileReport:
    expected, owners = _expected(engine, product_id)
    prefix = f"products/{product_id}/" if product_id else ""
    actual: dict[str, str | None] = {}
    errors: list[str] = []
    for obj in store.list(prefix):
        actual[obj.key] = obj.md5
    for key in expected:  # a product's photos may live outside its prefix
        if key not in actual and (obj2 := store.stat(key)) is not None:
            actual[key] = obj2.md5
    if verify_bytes:
        for key in list(actual):
            if key in expected and actual[key] is None:
                try:
                    actual[key] = store.hash(key)
                except PhotoStoreError as exc:
                    errors.append(f"{key}: {exc}")
    plan = decide_reconcile(expected, actual, remove_orphaned=fix and remove_orphaned,
                            recreate_missing=fix and recreate_missing)
    removed = requeued = 0
    requeue: list[str] = []
    for action, key in plan.actions:
        if action is ReconcileAction.REMOVE_ORPHANED:
            try:
                removed += store.delete(key)
            except PhotoStoreError as exc:
                errors.append(f"{key}: {exc}")
        else:
            requeue.extend(owners[key])
    if requeue:
        with translating("requeue photos"), write_transaction(engine) as conn:
            for start in range(0, len(requeue), 500):
                requeued += conn.execute(PHOTOS.update().where(PHOTOS.c.id.in_(requeue[start:start + 500])).values(
                    sync_status=PhotoSyncStatus.PENDING.value, sync_error="reconcile: bytes missing or corrupt",
                    stored_key=None, stored_checksum=None, attempts=0, next_attempt_at=None)).rowcount
    report = ReconcileReport(product_id, fix, plan, removed, requeued, errors)
    log.info("photo reconcile: %s", {k: v for k, v in report.as_dict().items() if not k.endswith("_files")})
    return report


def _expected(engine: Engine, product_id: str | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    query = sa.select(PHOTOS.c.id, PHOTOS.c.stored_key, PHOTOS.c.stored_checksum).where(
        PHOTOS.c.stored_key.is_not(None), PHOTOS.c.stored_checksum.is_not(None))
    if product_id is not None:
        query = query.where(PHOTOS.c.product_id == product_id)
    expected: dict[str, str] = {}
    owners: dict[str, list[str]] = {}
    with translating("read photo metadata"), engine.connect() as conn:
        for photo_id, key, md5 in conn.execute(query):
            expected.setdefault(key, md5)
            owners.setdefault(key, []).append(photo_id)
    return expected, owners
