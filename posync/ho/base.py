"""What posync needs of a head office, whatever dialect it speaks: the interface both dialects implement
(posync's own protocol, ``posync.ho.posync_dialect``; the seeds' HO, ``posync.ho.seed_dialect``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from posync.ho.http import ClockOffset
from posync.ho.wire import PushResult
from posync.registry import TrackedEntity

__all__ = ["HOClient", "Paging", "PullPage", "Upload", "VersionInfo"]


class Paging(StrEnum):
    """How an HO pages a resource's changes: what the pull service reads them with."""

    # a commit-ordered cursor, saved with each page; deletes come as tombstones
    CURSOR = "cursor"
    # ``updated_since`` + ``limit``/``offset`` over a set that moves while it is read, with HO's ``total``
    OFFSET = "offset"


@dataclass(frozen=True)
class PullPage:
    records: list[dict[str, Any]]
    deleted: list[dict[str, Any]]  # tombstones: {"id", "version" (None when HO does not say)}
    next_cursor: str | None
    has_more: bool
    next_offset: int | None = None
    sync_timestamp: str | None = None  # HO's clock when it answered
    total: int | None = None  # how many records the query matched when HO answered (offset paging)
    sent_at: float = 0.0  # the outlet's clock around the request (for the clock offset)
    received_at: float = 0.0


@dataclass(frozen=True)
class VersionInfo:
    """HO's version answer: per resource (posync's protocol) or one scalar (the seed HO)."""

    per_resource: dict[str, str] | None = None
    scalar: str | None = None
    timestamp: str | None = None

    def of(self, resource: str) -> str | None:
        """The version a resource's pull is skipped on when unchanged (``None``: always pull)."""
        if self.per_resource is not None:
            return self.per_resource.get(resource, "0")
        return self.scalar


@dataclass(frozen=True)
class Upload:
    """One append-only record to upload, under the key that identifies it for good."""

    key: str
    data: dict[str, Any] = field(default_factory=dict)


class HOClient(Protocol):
    """One head office, one outlet. Thread-safe."""

    paging: Paging
    clock: ClockOffset
    # Does HO deduplicate pushed changes by key? (posync's protocol: yes; the seed HO: no.) A request that
    # HO cannot deduplicate is never resent at once after a dropped connection.
    idempotent_uploads: bool

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...

    def push(self, changes: list[dict[str, Any]]) -> list[PushResult]: ...

    def upload(self, entity: TrackedEntity, items: list[Upload]) -> list[PushResult]: ...

    def pull(self, entity: TrackedEntity, limit: int, *, cursor: str | None = None,
             updated_since: str | None = None, offset: int | None = None) -> PullPage: ...

    def version(self) -> VersionInfo: ...

    def scope(self, entity: TrackedEntity) -> str:
        """What a pull of ``entity`` asks HO for (path and parameters), as a short text: a pull skipped
        on HO's unchanged version is skipped only if it would ask for the same thing."""
        ...
