"""Pure decisions: states in, actions out. No I/O here; the service and reconcile act on what this says.

* :func:`plan_listed` - what one listed photo does to its metadata row (:func:`is_refusal`: a row the
  listing refused waits for HO, not for the byte pass);
* :func:`group_work` - photos that need bytes, grouped so identical bytes are fetched (or copied) once;
* :func:`pass_shifted` - whether an offset-paged listing may have skipped rows;
* :func:`plan_deletes` - whether HO's deletes may be applied now (error-free pass, under the cap);
* :func:`decide_reconcile` - orphaned / unjudged / adopt / fetch / missing / corrupt / synced, and what a fix
  would do (only a key HO does not list is an orphan).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from posync.models.photo import (
    WAITING,
    LocalPhoto,
    PhotoSyncStatus,
    RemotePhoto,
    WorkItem,
    is_refusal,
)

__all__ = [
    "DeleteDecision",
    "ListedPlan",
    "LocalPhoto",
    "ReconcileAction",
    "ReconcilePlan",
    "WorkGroup",
    "WorkItem",
    "decide_reconcile",
    "group_work",
    "is_refusal",
    "pass_shifted",
    "plan_deletes",
    "plan_listed",
]

@dataclass(frozen=True, slots=True)
class ListedPlan:
    write: bool  # the row must be inserted or updated
    status: str  # the row's sync_status afterwards
    reset_attempts: bool  # new bytes wanted: the retry clock starts again
    error: str | None = None
    untombstone: bool = False


def plan_listed(remote: RemotePhoto, local: LocalPhoto | None, product_present: bool) -> ListedPlan:
    """A listed photo: bytes already right under its key -> synced; else pending (or still failed, keeping
    its backoff when nothing about the bytes changed). A photo of a product the outlet lacks waits. A row
    the listing refused before is judged afresh: HO has fixed it."""
    meta = tuple(remote.meta().values())
    if local is None:
        if not product_present:
            return ListedPlan(True, PhotoSyncStatus.PENDING, True, WAITING)
        return ListedPlan(True, PhotoSyncStatus.PENDING, True)
    in_place = remote.checksum == local.stored_checksum and remote.object_key == local.stored_key
    if in_place:
        status = PhotoSyncStatus.SYNCED
        write = meta != local.meta or local.sync_status != status or local.tombstoned
        return ListedPlan(write, status, write and local.sync_status != status, None, local.tombstoned)
    bytes_changed = remote.checksum != local.checksum or remote.object_key != local.object_key
    refused = local.sync_status == PhotoSyncStatus.FAILED and is_refusal(local.sync_error)
    if local.sync_status == PhotoSyncStatus.FAILED and not bytes_changed and not refused:
        return ListedPlan(meta != local.meta or local.tombstoned, PhotoSyncStatus.FAILED, False,
                          local.sync_error, local.tombstoned)
    error = None if product_present else WAITING
    status = PhotoSyncStatus.PENDING
    write = (bytes_changed or meta != local.meta or local.tombstoned or local.sync_status != status
             or local.sync_error != error)
    return ListedPlan(write, status, bytes_changed or refused, error, local.tombstoned)


@dataclass(frozen=True, slots=True)
class WorkGroup:
    """Photos wanting the same bytes: fetched once (or copied from ``source_key``), then put under each key."""

    checksum: str
    size: int
    items: tuple[WorkItem, ...]
    source_key: str | None  # a key in the store that already holds these bytes


def group_work(items: Iterable[WorkItem], local_sources: Mapping[str, str]) -> list[WorkGroup]:
    """Group by checksum (sizes must agree too: a disagreeing size makes its own group, to fail alone)."""
    groups: dict[tuple[str, int], list[WorkItem]] = {}
    for item in items:
        groups.setdefault((item.checksum, item.size), []).append(item)
    return [WorkGroup(md5, size, tuple(members), local_sources.get(md5))
            for (md5, size), members in groups.items()]


class PageMark(NamedTuple):
    offset: int
    rows: int  # how many elements the page had
    total: int | None


def pass_shifted(marks: Sequence[PageMark], duplicates: int, complete: bool) -> bool:
    """An offset-paged listing over a set that changed under it may have skipped rows: the total moved
    between pages, an id came twice, or a complete pass saw a different number of rows than announced."""
    if duplicates:
        return True
    totals = {m.total for m in marks if m.total is not None}
    if len(totals) > 1:
        return True
    if complete and totals:
        return sum(m.rows for m in marks) != next(iter(totals))
    return False


@dataclass(frozen=True, slots=True)
class DeleteDecision:
    apply: bool
    reason: str | None = None


def plan_deletes(wanted: int, cap: int, *, clean_pass: bool) -> DeleteDecision:
    if wanted == 0:
        return DeleteDecision(False)
    if not clean_pass:
        return DeleteDecision(False, "the pass had errors: deletes wait for an error-free pass")
    if wanted > cap:
        return DeleteDecision(False, f"{wanted} deletes exceed the cap of {cap}")
    return DeleteDecision(True)


class ReconcileAction(StrEnum):
    REMOVE_ORPHANED = "remove_orphaned"  # delete the bytes: no row holds them and HO does not list the key
    RECREATE_MISSING = "recreate_missing"  # re-queue the row: its bytes are missing or corrupt
    ADOPT = "adopt"  # HO lists the key: its row is rebuilt from the listing, the bytes kept if size and MD5 match
    FETCH = "fetch"  # HO lists the key and the store lacks its bytes (or holds others): fetched again


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    orphaned: list[str] = field(default_factory=list)  # in the store, no row holds it, HO does not list it
    unjudged: list[str] = field(default_factory=list)  # no row holds it, HO's listing unknown or it is refused: kept
    adopt: list[str] = field(default_factory=list)  # no row holds it, HO lists it, nothing says its bytes differ
    fetch: list[str] = field(default_factory=list)  # HO lists it, no row holds it, the store lacks its bytes
    missing: list[str] = field(default_factory=list)  # a row holds it, the store has nothing
    corrupt: list[str] = field(default_factory=list)  # the store's bytes do not have the row's MD5
    synced: list[str] = field(default_factory=list)
    actions: list[tuple[ReconcileAction, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"orphaned": len(self.orphaned), "unjudged": len(self.unjudged), "adopt": len(self.adopt),
                "fetch": len(self.fetch), "missing": len(self.missing), "corrupt": len(self.corrupt),
                "synced": len(self.synced), "actions": len(self.actions)}


def decide_reconcile(expected: Mapping[str, str], actual: Mapping[str, str | None], *,
                     listed: Mapping[str, str] | None, remove_orphaned: bool, recreate_missing: bool,
                     held: Collection[str] = ()) -> ReconcilePlan:
    """``expected``: key -> MD5 a row says is stored there; ``actual``: key -> MD5 of the bytes the store
    holds (None: present, MD5 unknown - counted as corrupt only when it was asked for and differs);
    ``listed``: key -> MD5 HO lists there, or None when HO's listing could not be read; ``held``: keys HO
    lists for photos posync refused (unjudged: kept, neither adopted nor removed).

    Only a key HO does not list is an orphan: bytes no row holds under a key HO lists are the photo's
    (its row was lost), adopted or fetched again by the fix's full pass. Without HO's listing no key is
    judged, so nothing is removed. Every key of the three lands in exactly one bucket."""
    plan = ReconcilePlan()
    for key in sorted(set(actual) - set(expected)):
        if listed is None or (key in held and key not in listed):
            plan.unjudged.append(key)
        elif key not in listed:
            plan.orphaned.append(key)
            if remove_orphaned:
                plan.actions.append((ReconcileAction.REMOVE_ORPHANED, key))
        elif actual[key] in (None, listed[key]):
            plan.adopt.append(key)
            if recreate_missing:
                plan.actions.append((ReconcileAction.ADOPT, key))
        else:
            plan.fetch.append(key)
            if recreate_missing:
                plan.actions.append((ReconcileAction.FETCH, key))
    for key in sorted(set(listed or ()) - set(actual) - set(expected)):
        plan.fetch.append(key)
        if recreate_missing:
            plan.actions.append((ReconcileAction.FETCH, key))
    plan.fetch.sort()
    for key in sorted(expected):
        if key not in actual:
            bucket = plan.missing
        elif actual[key] is not None and actual[key] != expected[key]:
            bucket = plan.corrupt
        else:
            plan.synced.append(key)
            continue
        bucket.append(key)
        if recreate_missing:
            plan.actions.append((ReconcileAction.RECREATE_MISSING, key))
    return plan
