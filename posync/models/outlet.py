"""``posync_outlet``: the outlet this database belongs to (seed 003's ``OutletConfig``), one row.

Bound on the first start: a later start whose settings name another outlet, company, store or HO is refused
(``OutletMismatchError``) until the host re-binds it on purpose, so a misconfigured worker never pushes a
sale under another outlet's id. The operators' fields (code, brand, sync switch, credentials encrypted at
rest) sit here too.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from posync.models.base import PosyncModel

__all__ = ["OutletRecord"]


class OutletRecord(PosyncModel, table=True):
    __tablename__ = "posync_outlet"

    id: int = Field(default=1, primary_key=True)  # always 1: one outlet per database
    outlet_id: str = Field(max_length=100)
    company_id: str = Field(max_length=100)
    store_id: str = Field(max_length=100)
    ho_url: str = Field(max_length=500)
    outlet_code: str | None = Field(default=None, max_length=100)
    brand_id: str | None = Field(default=None, max_length=100)
    sync_enabled: bool = Field(default=True)
    last_sync_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                            nullable=True))
    bound_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    credentials: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary(), nullable=True))
    # the syncer's last cycle, as every worker process reports it (status is the outlet's, not a worker's)
    online: bool = Field(default=True)
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    auth_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    # the last failure's kind (CycleReport.error_kind: auth, unavailable, error), None after a success: what
    # a process that asked the syncer for a cycle judges it by (not by asking HO again afterwards)
    last_error_kind: str | None = Field(default=None, max_length=20)
    last_cycle_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True),
                                                                             nullable=True))
