"""Conflict decisions: a pure function from the two sides to what should happen.

A conflict is a change from HO meeting an unpushed local change of the same entity (on pull, on a
webhook, or when HO answers a push with ``conflict``). The entity's strategy, or its custom resolver,
decides; ``posync.services.conflicts`` applies the decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from posync.models.enums import ConflictStrategy, Op

__all__ = ["Decision", "LocalSide", "Merge", "RemoteSide", "Resolver", "decide"]


class Decision(StrEnum):
    TAKE_REMOTE = "take_remote"  # apply HO's record, drop the local unpushed change(s)
    KEEP_LOCAL = "keep_local"  # keep local data, re-base the change on HO's version and push it
    MANUAL = "manual"  # keep both sides in the conflict inbox; the entity's pushes wait


@dataclass(frozen=True)
class Merge:
    """A resolver's merged record: written locally, then pushed on top of HO's version."""

    data: dict[str, Any]


@dataclass(frozen=True)
class LocalSide:
    op: Op  # the effect of the unpushed change(s): create/update (row exists) or delete
    data: dict[str, Any] | None  # current local data; None if deleted locally
    changed_at: datetime


@dataclass(frozen=True)
class RemoteSide:
    version: int
    deleted: bool
    data: dict[str, Any] | None
    updated_at: datetime | None


Resolver = Callable[[LocalSide, RemoteSide], Decision | Merge]


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def decide(strategy: ConflictStrategy, local: LocalSide, remote: RemoteSide) -> Decision:
    if strategy is ConflictStrategy.CLOUD_WINS:
        return Decision.TAKE_REMOTE
    if strategy is ConflictStrategy.LOCAL_WINS:
        return Decision.KEEP_LOCAL
    if strategy is ConflictStrategy.MANUAL:
        return Decision.MANUAL
    # newest_wins: by change time; a tie, or HO not saying when, goes to HO so both sides pick the same.
    if remote.updated_at is None:
        return Decision.TAKE_REMOTE
    return Decision.KEEP_LOCAL if _aware(local.changed_at) > _aware(remote.updated_at) else Decision.TAKE_REMOTE
