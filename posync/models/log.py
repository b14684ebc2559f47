"""``posync_sync_log``: what happened, for operators (seed 003's sync_logs)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from posync.models.base import PosyncModel
from posync.models.tracked import utcnow

__all__ = ["SyncLogEntry"]


class SyncLogEntry(PosyncModel, table=True):
    __tablename__ = "posync_sync_log"
    __table_args__ = (sa.Index("ix_posync_sync_log_at", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    kind: str = Field(max_length=20)  # a LogKind
    resource: str | None = Field(default=None, max_length=100)
    entity_id: str | None = Field(default=None, max_length=200)
    count: int = 0
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    duration_ms: float | None = None
