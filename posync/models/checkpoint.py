"""``posync_checkpoint``: where each resource's pull stands. Written in the same transaction as each page."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from posync.models.base import PosyncModel

__all__ = ["Checkpoint"]


class Checkpoint(PosyncModel, table=True):
    __tablename__ = "posync_checkpoint"

    resource: str = Field(primary_key=True, max_length=100)
    cursor: str | None = Field(default=None, max_length=200)
    # HO's version for this resource when the last complete pull finished (skip the pull if unchanged):
    # posync's per-resource change sequence, or the seed HO's one scalar, as text
    ho_version: str | None = Field(default=None, max_length=100)
    last_pull_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                            nullable=True))
    last_full_resync_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                                   nullable=True))
    # the id reconciliation (a full listing of HO's ids): when it last ran, and what HO looked like then
    # (its version and row count: unchanged, the next one is skipped)
    last_reconcile_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                                 nullable=True))
    reconcile_marker: str | None = Field(default=None, max_length=200)
