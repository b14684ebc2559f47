"""The named states posync works with. Stored as their string values."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ConflictStrategy", "Direction", "ItemStatus", "Op", "SyncStatus"]


class SyncStatus(StrEnum):
    """Per-entity status on the host's tracked rows (seed 003)."""

    PENDING = "pending"
    SYNCED = "synced"
    CONFLICT = "conflict"
    FAILED = "failed"


class Direction(StrEnum):
    PUSH = "push"
    PULL = "pull"
    BOTH = "both"

    @property
    def pushes(self) -> bool:
        return self in (Direction.PUSH, Direction.BOTH)

    @property
    def pulls(self) -> bool:
        return self in (Direction.PULL, Direction.BOTH)


class ConflictStrategy(StrEnum):
    CLOUD_WINS = "cloud_wins"
    LOCAL_WINS = "local_wins"
    NEWEST_WINS = "newest_wins"
    MANUAL = "manual"


class Op(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class ItemStatus(StrEnum):
    """Life of an outbox item.

    pending  -> waiting to be claimed (maybe behind an earlier item of the same entity, maybe in backoff)
    inflight -> claimed under a lease; a crashed worker's lease expires and the item is claimed again
    dead     -> set aside for good (rejected by HO, or out of retries); blocks only its own entity
    conflict -> waiting for a manual resolution; blocks only its own entity
    blocked  -> a later change of an entity whose head is dead or in conflict
    Items that HO accepted are deleted; the sync log keeps the record.
    """

    PENDING = "pending"
    INFLIGHT = "inflight"
    DEAD = "dead"
    CONFLICT = "conflict"
    BLOCKED = "blocked"


OUTSTANDING = (ItemStatus.PENDING, ItemStatus.INFLIGHT, ItemStatus.DEAD, ItemStatus.CONFLICT, ItemStatus.BLOCKED)
