"""The named states posync works with. Stored as their string values."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ConflictStatus", "ConflictStrategy", "Direction", "ItemStatus", "LogKind", "Op", "PushOutcome",
           "SyncStatus", "log_kind"]


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


class LogKind(StrEnum):
    """What a ``posync_sync_log`` row records."""

    PUSH = "push"  # a push batch
    PULL = "pull"  # a pulled resource
    RECONCILE = "reconcile"  # local rows HO no longer has, removed
    RESET = "reset"  # a resource's checkpoint reset: a full pull next
    CONFLICT = "conflict"  # a conflict opened (manual strategy)
    REBASED = "rebased"  # a local change rebased on HO's newer version
    DROPPED = "dropped"  # queued changes given up (HO's side replaced them, or their rows vanished)
    COALESCED = "coalesced"  # changes that cancelled out before they were sent
    DEAD = "dead"  # a change set aside for good
    RESOLVE = "resolve"  # a conflict resolved by hand
    RETRY = "retry"  # a dead change sent again by hand
    CYCLE = "cycle"  # a sync cycle that completed (a quiet one too): duration_ms, count = changes moved
    CYCLE_FAILED = "cycle_failed"  # a sync cycle that failed, or pulled a resource that failed: detail = why
    TOTAL = "total"  # what the log's retention removed, summed (the metrics' counters never go back)


def log_kind(raw: str) -> LogKind:
    """A sync log kind a caller named (``GET /logs?kind=``, ``posync logs --kind``); a ValueError names the
    valid ones (an unknown kind is a mistake to show, not a filter that silently matches nothing)."""
    try:
        return LogKind(raw)
    except ValueError:
        raise ValueError(f"kind must be one of {', '.join(k.value for k in LogKind)}") from None


class ConflictStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class PushOutcome(StrEnum):
    """One pushed change's answer. ``invalid``: an answer posync cannot act on; ``server_error``: HO failed
    on this change alone (found by bisection)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"
    INVALID = "invalid"
    SERVER_ERROR = "server_error"


OUTSTANDING = (ItemStatus.PENDING, ItemStatus.INFLIGHT, ItemStatus.DEAD, ItemStatus.CONFLICT, ItemStatus.BLOCKED)
