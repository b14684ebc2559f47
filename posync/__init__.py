"""posync: offline-first sync between a point-of-sale outlet and head office.

The public surface is what ``__all__`` lists; everything else is internal and may change.
"""

from posync import migrations
from posync.app import Posync, rebind_outlet
from posync.capture import ChangeCapture, enqueue
from posync.config_key import ConfigKey
from posync.db import create_engine, write_transaction
from posync.errors import (
    AuthenticationError,
    ClosedError,
    ConfigKeyError,
    ConfigurationError,
    ConflictStateError,
    HOErrorResponse,
    HOUnavailableError,
    NotFoundError,
    OutletMismatchError,
    PosyncError,
    ProtocolError,
    ResyncRequiredError,
    StaleWriteError,
    StorageError,
    TransportError,
    UnsupportedWriteError,
)
from posync.models import ConflictStrategy, Direction, ItemStatus, Op, SyncStatus, Tracked, posync_tables
from posync.registry import Registry, TrackedEntity
from posync.retry import OutagePolicy, RetryDecision, RetryPolicy
from posync.services.config import settings_from_outlet
from posync.services.resolve import Decision, LocalSide, Merge, RemoteSide, Resolver
from posync.settings import PosyncSettings

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ChangeCapture",
    "ClosedError",
    "ConfigKey",
    "ConfigKeyError",
    "ConfigurationError",
    "ConflictStateError",
    "ConflictStrategy",
    "Decision",
    "Direction",
    "HOErrorResponse",
    "HOUnavailableError",
    "ItemStatus",
    "LocalSide",
    "Merge",
    "NotFoundError",
    "Op",
    "OutagePolicy",
    "OutletMismatchError",
    "Posync",
    "PosyncError",
    "PosyncSettings",
    "ProtocolError",
    "Registry",
    "RemoteSide",
    "Resolver",
    "ResyncRequiredError",
    "RetryDecision",
    "RetryPolicy",
    "StaleWriteError",
    "StorageError",
    "SyncStatus",
    "Tracked",
    "TrackedEntity",
    "TransportError",
    "UnsupportedWriteError",
    "create_engine",
    "enqueue",
    "migrations",
    "posync_tables",
    "rebind_outlet",
    "settings_from_outlet",
    "write_transaction",
]
