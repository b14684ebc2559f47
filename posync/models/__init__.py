"""posync's tables (all prefixed ``posync_``) and the ``Tracked`` mixin for the host's tables."""

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
from posync.models.log import SyncLogEntry
from posync.models.outbox import OutboxItem
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
    "PushOutcome",
    "SyncLogEntry",
    "SyncStatus",
    "Tracked",
    "WebhookReceipt",
    "posync_tables",
    "utcnow",
]


def posync_tables() -> list:  # type: ignore[type-arg]
    """posync's own tables (not the host's), e.g. for ``metadata.create_all(engine, tables=...)``."""
    from sqlmodel import SQLModel

    return [t for name, t in SQLModel.metadata.tables.items() if name.startswith("posync_")]
