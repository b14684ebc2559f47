"""Claiming: which queued changes go out next, in one transaction.

Expired leases are reclaimed, then the due items are read oldest first; per entity only the head (its
earliest outstanding item) is claimable, and only if nothing of that entity is in flight or set aside.
The head's never-sent followers fold into one change (``coalesce``), which :class:`Leaser` freezes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from posync.db import UnitOfWork
from posync.models.enums import ItemStatus
from posync.repositories import OutboxRepository
from posync.services.coalesce import coalesce
from posync.services.push.lease import OP_BY_VALUE, Group, Lease, Leaser
from posync.services.push.options import PushOptions

__all__ = ["MAX_SCAN", "Claimer"]

# A claim reads at most this many due items per change it may claim (items it cannot claim: entities in
# flight or waiting out a backoff), so that its cost stays O(batch) whatever the queue holds
MAX_SCAN = 4
_PENDING, _INFLIGHT = ItemStatus.PENDING.value, ItemStatus.INFLIGHT.value
_SET_ASIDE = frozenset({ItemStatus.DEAD.value, ItemStatus.CONFLICT.value, ItemStatus.BLOCKED.value})


class Claimer:
    def __init__(self, uow: UnitOfWork, outbox: OutboxRepository, leaser: Leaser, options: PushOptions) -> None:
        self._uow = uow
        self._outbox = outbox
        self._leaser = leaser
        self._lease_seconds = options.lease_seconds
        self._horizon = options.horizon

    def claim(self, conn: Connection, limit: int) -> tuple[list[Lease], int]:
        """Lease up to ``limit`` changes (one per entity) in the caller's transaction. Returns the leases
        and how many queued items folded into nothing."""
        now = self._uow.clock()
        self._outbox.reclaim_expired_leases(conn, now, self._lease_seconds)
        self._outbox.bring_forward(conn, now, self._horizon)
        groups: list[Group] = []
        to_block: list[int] = []
        seen: set[tuple[str, str]] = set()
        after: tuple[float, int] | None = None
        scanned = 0
        # The oldest due items, a window at a time: most are claimable, so the first window of ``limit``
        # usually fills the batch. Later windows make up for entities that were not (in flight, waiting).
        while len(groups) < limit and scanned < MAX_SCAN * limit:
            want = limit - len(groups)
            due = self._outbox.due(conn, now, want, after)
            if not due.items:
                break
            scanned += len(due.items)
            last = due.items[-1]
            after = (last["available_at"], last["id"])
            alone: dict[tuple[str, str], dict[str, Any]] = {}  # an entity's only unsettled item
            keys: list[tuple[str, str]] = []
            for item in due.items:
                key = (item["resource"], item["entity_id"])
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
                    if item["id"] in due.alone:
                        alone[key] = item
            keys = self._outbox.lock_entities(conn, keys)
            outstanding = self._outbox.outstanding(conn, [key for key in keys if key not in alone])
            for key in keys:
                only = alone.get(key)
                if only is not None:  # pending and due (the scan's filter), nothing before or after it
                    groups.append(([only], OP_BY_VALUE[only["op"]]))
                else:
                    _take(outstanding.get(key, []), now, groups, to_block)
            if len(due.items) < want:
                break
        self._outbox.set_status(conn, to_block, ItemStatus.BLOCKED)
        return self._leaser.lease(conn, groups, now)


def _take(items: list[dict[str, Any]], now: float, groups: list[Group], to_block: list[int]) -> None:
    """Claim decision for one entity's outstanding ``items`` (commit order): add its group to ``groups``,
    its waiting items to ``to_block``, or nothing (in flight, in backoff)."""
    statuses = {i["status"] for i in items}
    if not items or _INFLIGHT in statuses:
        return
    if statuses & _SET_ASIDE:  # the entity waits on a dead change or a conflict
        to_block += [i["id"] for i in items if i["status"] == _PENDING]
        return
    head = items[0]
    if head["available_at"] > now:
        return
    if head["idempotency_key"] is not None:  # sent before: resend exactly that, alone
        groups.append(([head], OP_BY_VALUE[head["op"]]))
    else:
        groups.append((items, coalesce([OP_BY_VALUE[i["op"]] for i in items])))
