"""Two tables the SQLite capture triggers work with (``posync.capture.triggers``). PostgreSQL needs
neither (a transaction-local setting, and no INSERT OR REPLACE); they exist there too, unused, so both
schemas are the same.

``posync_capture_off``: a row exists here only inside a transaction of posync's that writes host tables
(applying HO's records, recording versions), deleted before that transaction ends; the triggers skip
their work while it is there. Never committed, so no other connection ever sees one.

``posync_capture_replaced``: the row an ``INSERT OR REPLACE`` is about to replace, noted by a BEFORE
INSERT trigger and read (then removed) by the AFTER INSERT trigger of the same statement.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field

from posync.models.base import PosyncModel

__all__ = ["CaptureOff", "CaptureReplaced"]


class CaptureOff(PosyncModel, table=True):
    __tablename__ = "posync_capture_off"

    id: int = Field(primary_key=True)


class CaptureReplaced(PosyncModel, table=True):
    __tablename__ = "posync_capture_replaced"

    resource: str = Field(primary_key=True, max_length=100)
    entity_id: str = Field(primary_key=True, max_length=200)
    cloud_version: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
