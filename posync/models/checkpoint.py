"""``posync_checkpoint``: where each resource's pull stands. Written in the same transaction as each page."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

__all__ = ["Checkpoint"]


class Checkpoint(SQLModel, table=True):
    __tablename__ = "posync_checkpoint"

    resource: str = Field(primary_key=True, max_length=100)
    cursor: str | None = Field(default=None, max_length=200)
    # HO's version for this resource when the last complete pull finished (skip the pull if unchanged)
    ho_version: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    last_pull_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                            nullable=True))
    last_full_resync_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                                   nullable=True))
