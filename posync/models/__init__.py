"""posync's tables (all prefixed ``posync_``) and the ``Tracked`` mixin for the host's tables."""

from sqlalchemy import Table

from posync.models.base import PosyncModel, metadata
from posync.models.capture import CaptureOff, CaptureReplaced
from posync.models.checkpoint import Checkpoint
from posync.models.conflict import ConflictRecord
from posync.models.enums import (
    ConflictStatus,
    ConflictStrategy,
    Direction,
    ItemStatus,
    LogKind,
    Op,
    PushOutcome,
    SyncStatus,
)
from posync.models.lease import LeaseRecord  # noqa: F401  (posync.workers.leader)
from posync.models.log import SyncLogEntry
from posync.models.outbox import OutboxItem
from posync.models.outlet import OutletRecord  # noqa: F401  (posync.services.outlet)
from posync.models.photo import PhotoBlob, PhotoCheckpoint, PhotoChunk, PhotoRecord  # noqa: F401  (posync.photos)
from posync.models.tracked import Tracked, utcnow
from posync.models.webhook import WebhookReceipt

__all__ = [
    "CaptureOff",
    "CaptureReplaced",
    "Checkpoint",
    "ConflictRecord",
    "ConflictStatus",
    "ConflictStrategy",
    "Direction",
    "ItemStatus",
    "LogKind",
    "Op",
    "OutboxItem",
    "PosyncModel",
    "PushOutcome",
    "SyncLogEntry",
    "SyncStatus",
    "Tracked",
    "WebhookReceipt",
    "metadata",
    "posync_tables",
    "utcnow",
]


def posync_tables() -> list[Table]:
    """posync's own tables, in dependency order (they live in :data:`metadata`, never in the host's)."""
    return list(metadata.sorted_tables)
