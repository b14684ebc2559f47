"""``posync_conflict``: the manual-strategy inbox. Both sides are kept until someone chooses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from posync.models.base import PosyncModel
from posync.models.enums import ConflictStatus
from posync.models.tracked import utcnow

__all__ = ["ConflictRecord"]


class ConflictRecord(PosyncModel, table=True):
    __tablename__ = "posync_conflict"
    __table_args__ = (sa.Index("ix_posync_conflict_open", "status", "resource", "entity_id"),)

    id: int | None = Field(default=None, primary_key=True)
    resource: str = Field(max_length=100)
    entity_id: str = Field(max_length=200)
    status: str = Field(default=ConflictStatus.OPEN.value, max_length=10)  # a ConflictStatus
    # the local side: the entity's data (None if deleted locally) and its local op
    local_op: str = Field(max_length=10)
    local_data: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    # HO's side: its record (None if deleted at HO) and version
    remote_version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    remote_deleted: bool = False
    remote_data: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    source: str = Field(default="pull", max_length=10)  # pull | push | webhook
    resolution: str | None = Field(default=None, max_length=10)  # local | remote | merged
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                             nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                           nullable=True))
