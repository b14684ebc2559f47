"""The id reconciliation: deletes an HO never reports (the seed HO's ``deleted_ids`` stays empty) are
found by listing every id HO has and removing the local rows HO no longer has
(:meth:`~posync.services.pull.outlet.PullOutlet.remove_gone`, capped). A reconciliation is skipped when
HO's version and (offset paging) its row count have not moved since the last one: one cheap request per
resource.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from posync.ho.base import Paging
from posync.registry import TrackedEntity
from posync.services.pull.context import PullContext, ho_versions
from posync.services.pull.cursor import cursor_listing
from posync.services.pull.offset import offset_listing
from posync.services.pull.outlet import ReconcileRefusedError, gone_ids

__all__ = ["ReconcileRefusedError", "ReconcileReport", "gone_ids", "reconcile"]

log = logging.getLogger("posync.reconcile")


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


def _cap(known: int, fraction: float) -> int:
    return max(10, int(known * fraction))


def _marker(ctx: PullContext, entity: TrackedEntity, report: ReconcileReport) -> str:
    """What HO looks like, cheaply: its version and (offset paging) how many rows it has."""
    versions = ho_versions(ctx.client)
    report.requests += 1
    version = versions.of(entity.resource) if versions is not None else None
    total = None
    if ctx.client.paging is Paging.OFFSET:
        total = ctx.client.pull(entity, 1).total
        report.requests += 1
    return f"{version}|{total}|{ctx.client.scope(entity)}"


def reconcile(ctx: PullContext, entity: TrackedEntity, *, force: bool = False,
              max_delete_fraction: float = 0.5) -> ReconcileReport:
    """List every id HO has (applying what the listing brings), then remove the local rows HO no longer
    has. Raises ReconcileRefusedError above the cap, ProtocolError when HO's set kept changing."""
    report = ReconcileReport(entity.resource)
    marker = _marker(ctx, entity, report)
    checkpoint, known = ctx.outlet.standing(entity)
    if not force and checkpoint is not None and checkpoint["reconcile_marker"] == marker:
        report.skipped = True
        return report
    listing = offset_listing(ctx, entity) if ctx.client.paging is Paging.OFFSET else cursor_listing(ctx, entity)
    report.requests += listing.pages
    report.ho_ids = len(listing.live)
    removed = ctx.outlet.remove_gone(entity, listing.live, cap=None if force else _cap(known, max_delete_fraction),
                                     checkpoint={"reconcile_marker": marker, "last_reconcile_at": ctx.outlet.now()})
    report.removed = removed
    if removed:
        log.info("%s: the reconciliation removed %d local rows HO no longer has", entity.resource, removed)
    if not entity.direction.pushes:
        report.local_only = ctx.outlet.count_unknown_to_ho(entity)
        if report.local_only:
            log.warning("%s: %d local rows HO never had (written at the outlet into a pull-only table); kept",
                        entity.resource, report.local_only)
    return report
