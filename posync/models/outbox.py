"""``posync_outbox``: one row per captured local change, written in the transaction that made it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from posync.models.base import PosyncModel
from posync.models.enums import ItemStatus, Op
from posync.models.tracked import utcnow

__all__ = ["OutboxItem", "queued_change"]


class OutboxItem(PosyncModel, table=True):
    __tablename__ = "posync_outbox"
    __table_args__ = (
        # claim: "pending items that are due", oldest first -> a range scan, O(batch) whatever the queue size
        sa.Index("ix_posync_outbox_due", "status", "available_at", "id"),
        # per-entity order, coalescing, head-of-line checks and follower updates. No status in the key:
        # leasing and settling change an item's status, and would move its entry here too (migration 0002)
        sa.Index("ix_posync_outbox_entity", "resource", "entity_id", "id"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                                             primary_key=True, autoincrement=True))
    resource: str = Field(max_length=100)
    entity_id: str = Field(max_length=200)
    op: str = Field(max_length=10)
    # the entity's local version after this change (None for changes enqueued without one)
    entity_version: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    # HO version this change is based on; fixed when the item is claimed for the first time
    base_version: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    status: str = Field(default="pending", max_length=10)
    attempts: int = 0
    # epoch seconds: when the item may be claimed next (backoff), or when its lease runs out (inflight)
    available_at: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=100)
    # set at the first claim, together with the frozen payload: a retry resends the same bytes under the same key
    idempotency_key: str | None = Field(default=None, max_length=200)
    payload: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    changed_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                             nullable=False))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


def queued_change(resource: str, entity_id: str, op: Op, *, base_version: int | None, entity_version: int | None,
                  changed_at: datetime) -> dict[str, Any]:
    """The outbox row of a change that posync queues in Python (``posync.capture.enqueue``, a conflict's
    re-queue): pending, due at once, never tried. The capture triggers write the same columns in SQL
    (``posync.capture.triggers``); claiming freezes the rest (key, payload) and may re-base it."""
    return {"resource": resource, "entity_id": entity_id, "op": op.value, "entity_version": entity_version,
            "base_version": base_version, "status": ItemStatus.PENDING.value, "attempts": 0, "available_at": 0.0,
            "changed_at": changed_at}
