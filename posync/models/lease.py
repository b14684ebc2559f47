"""``posync_lease``: which process of the outlet runs the sync jobs (one row per lease, ``syncer`` today).

A POS runs as several worker processes on one outlet database; each starts posync. The holder of the
``syncer`` lease runs the sync cycle, the photo passes and housekeeping; the others only capture. The holder
renews it well inside ``expires_at``; a process that finds it expired takes it (``token`` counts the
takeovers) and gives the dead holder's in-flight outbox items back at once. ``trigger_at`` is how a worker
that does not hold the lease asks the holder for a cycle now.
"""

from __future__ import annotations

from sqlmodel import Field

from posync.models.base import PosyncModel

__all__ = ["LeaseRecord"]


class LeaseRecord(PosyncModel, table=True):
    __tablename__ = "posync_lease"

    name: str = Field(primary_key=True, max_length=50)
    holder: str | None = Field(default=None, max_length=100)
    expires_at: float = 0.0  # epoch seconds, the outlet database's writers' clock
    token: int = 0
    trigger_at: float | None = None
