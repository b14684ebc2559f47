"""The id reconciliation: deletes an HO never reports (the seed HO's ``deleted_ids`` stays empty) are
found by listing every id HO has and removing the local rows HO no longer has.

Decide, then act: :func:`gone_ids` is pure; :func:`remove_gone` deletes (never a row with an unpushed
change, never more than a cap unless forced: an HO that answers an empty list for a wrong ``store_id``
must not wipe an outlet, rclone's ``--max-delete`` in spirit). A reconciliation is skipped when HO's
version and its row count have not moved since the last one: one cheap request per resource.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from posync.errors import PosyncError, ProtocolError
from posync.models.enums import OUTSTANDING, LogKind
from posync.registry import TrackedEntity

if TYPE_CHECKING:
    from posync.services.pull import PullService, PullStats

__all__ = ["ReconcileRefusedError", "ReconcileReport", "gone_ids", "reconcile", "remove_gone"]

log = logging.getLogger("posync.reconcile")


class ReconcileRefusedError(PosyncError):
    """A reconciliation would delete more local rows than its cap allows; nothing was deleted."""

    def __init__(self, resource: str, would_delete: int, cap: int) -> None:
        self.resource = resource
        self.would_delete = would_delete
        self.cap = cap
        super().__init__(f"{resource}: the reconciliation would delete {would_delete} local rows, more than its "
                         f"cap of {cap}; nothing deleted (check HO's answer, then reconcile with force=True)")


@dataclass
class ReconcileReport:
    resource: str
    skipped: bool = False  # HO did not change since the last one
    ho_ids: int = 0
    removed: int = 0
    requests: int = 0
    error: str | None = None
    # rows of a pull-only table that HO never had (written locally): kept, and reported
    local_only: int = 0


def gone_ids(known_to_ho: Iterable[str], live_at_ho: Iterable[str], waiting: Iterable[str]) -> list[str]:
    """Local rows to delete: HO had them, HO no longer lists them, and no local change of them waits."""
    return sorted(set(known_to_ho) - set(live_at_ho) - set(waiting))


def _cap(known: int, fraction: float) -> int:
    return max(10, int(known * fraction))


def remove_gone(service: PullService, entity: TrackedEntity, live: set[str], *, cap: int | None,
                checkpoint: dict[str, Any] | None = None) -> int:
    with service.transaction() as conn:
        known = service.entities.ids_known_to_ho(conn, entity)
        waiting = service.outbox.entity_ids(conn, entity.resource, [s.value for s in OUTSTANDING])
        gone = gone_ids(known, live, waiting)
        if cap is not None and len(gone) > cap:
            raise ReconcileRefusedError(entity.resource, len(gone), cap)
        service.entities.delete(conn, entity, gone)
        if checkpoint:
            service.checkpoints.save(conn, entity.resource, **checkpoint)
        service.logs.add(conn, LogKind.RECONCILE, service.now(), resource=entity.resource, count=len(gone),
                         detail=f"{len(live)} records at HO, {len(gone)} local rows removed")
    return len(gone)


def _marker(service: PullService, entity: TrackedEntity, report: ReconcileReport) -> str:
    """What HO looks like, cheaply: its version and (offset paging) how many rows it has."""
    versions = service.versions()
    report.requests += 1
    version = versions.of(entity.resource) if versions is not None else None
    total = None
    if service.client.dialect == "seed":
        total = service.client.pull(entity, 1).total
        report.requests += 1
    return f"{version}|{total}|{service.client.scope(entity)}"


def reconcile(service: PullService, entity: TrackedEntity, stats: PullStats, *, force: bool = False,
              max_delete_fraction: float = 0.5) -> ReconcileReport:
    """List every id HO has (applying what the listing brings), then remove the local rows HO no longer
    has. Raises ReconcileRefusedError above the cap, ProtocolError when HO's set kept changing."""
    from posync.services.passes import MAX_PASSES, cursor_listing, read_offset_pass

    report = ReconcileReport(entity.resource)
    marker = _marker(service, entity, report)
    with service.engine.connect() as conn:
        checkpoint = service.checkpoints.get(conn, entity.resource)
        known = service.entities.count_known_to_ho(conn, entity)
    if not force and checkpoint is not None and checkpoint["reconcile_marker"] == marker:
        report.skipped = True
        return report
    if service.client.dialect == "seed":
        previous = None
        for _ in range(MAX_PASSES):
            listing = read_offset_pass(service, entity, None, stats)
            report.requests += listing.pages
            if listing.whole or listing.repeats(previous):
                break
            previous = listing
        else:
            raise ProtocolError(f"{entity.resource}: HO's records kept changing while they were listed; "
                                "the reconciliation waits for the next run")
        live = listing.ids - listing.deleted
    else:
        live, _, pages = cursor_listing(service, entity, stats)
        report.requests += pages
    report.ho_ids = len(live)
    removed = remove_gone(service, entity, live, cap=None if force else _cap(known, max_delete_fraction),
                          checkpoint={"reconcile_marker": marker, "last_reconcile_at": service.now()})
    report.removed = removed
    if removed:
        log.info("%s: the reconciliation removed %d local rows HO no longer has", entity.resource, removed)
    if not entity.direction.pushes:
        with service.engine.connect() as conn:
            report.local_only = service.entities.count_unknown_to_ho(conn, entity)
        if report.local_only:
            log.warning("%s: %d local rows HO never had (written at the outlet into a pull-only table); kept",
                        entity.resource, report.local_only)
    return report


