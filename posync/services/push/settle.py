"""Settling: HO's answers recorded in the outbox and the tracked rows, in one transaction, for the
changes whose lease this worker still holds (a lease that ran out belongs to another worker now).

- ``applied`` / ``duplicate``: the item is deleted, the row records HO's version, later unsent changes
  of the entity are re-based on it.
- ``conflict``: the conflict handler decides; a create HO has as a tombstone is resent on it.
- ``rejected``: ``retryable`` -> RetryPolicy decides (backoff or dead); otherwise dead at once. A dead
  change blocks only its own entity.
- HO unreachable or unreadable: the batch is given back untouched (same keys, no attempt counted).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from posync.db import UnitOfWork
from posync.ho import PushResult
from posync.models.enums import ItemStatus, LogKind, Op, PushOutcome, SyncStatus
from posync.registry import Registry
from posync.repositories import EntityRepository, LogRepository, OutboxRepository
from posync.retry import RetryPolicy
from posync.services.conflicts import ConflictHandler, remote_current
from posync.services.push.lease import Lease
from posync.services.push.stats import PushStats

__all__ = ["Settler"]

log = logging.getLogger("posync.push")

_ACCEPTED = frozenset({PushOutcome.APPLIED, PushOutcome.DUPLICATE})


class Settler:
    def __init__(self, uow: UnitOfWork, registry: Registry, outbox: OutboxRepository, entities: EntityRepository,
                 handler: ConflictHandler, logs: LogRepository, *, owner: str, retry: RetryPolicy,
                 rng: random.Random) -> None:
        self._uow = uow
        self._registry = registry
        self._outbox = outbox
        self._entities = entities
        self._handler = handler
        self._logs = logs
        self._owner = owner
        self._retry = retry
        self._rng = rng

    def settle(self, leases: list[Lease], results: list[PushResult], stats: PushStats,
               duration_ms: float) -> None:
        """Record HO's answers in a transaction of their own."""
        with self._uow.begin() as conn:
            self.record(conn, leases, results, stats, duration_ms)

    def give_back(self, leases: list[Lease]) -> None:
        """HO unreachable or unreadable: the batch goes back untouched (same keys, no attempt counted).
        Changes HO may have applied meanwhile answer ``duplicate`` when they are resent."""
        with self._uow.begin() as conn:
            self._outbox.release(conn, [lease.item_id for lease in leases], self._owner, self._uow.clock())

    def record(self, conn: Connection, leases: list[Lease], results: list[PushResult], stats: PushStats,
               duration_ms: float) -> None:
        """Record HO's answers in the caller's transaction. Accepted changes are deleted from the outbox
        in the same statement that checks the lease."""
        now = self._uow.clock()
        accepted_ids = [lease.item_id for lease, result in zip(leases, results, strict=True)
                        if result.status in _ACCEPTED]
        done = self._outbox.delete_leased(conn, accepted_ids, self._owner)
        others = [lease.item_id for lease in leases if lease.item_id not in done]
        held = done | self._outbox.still_leased(conn, others, self._owner) if others else done
        accepted: dict[str, list[tuple[str, int, int | None]]] = defaultdict(list)
        rebases: list[tuple[str, str, int]] = []
        applied = duplicates = 0
        for lease, result in zip(leases, results, strict=True):
            if lease.item_id not in held:
                continue  # our lease ran out and another worker owns this change now
            status = result.status
            if status in _ACCEPTED:
                if status == PushOutcome.APPLIED:
                    applied += 1
                else:
                    duplicates += 1
                version = result.cloud_version
                if lease.append_only:  # HO has it (an HO without versions says so by accepting it)
                    accepted[lease.resource].append((lease.entity_id, version or 1, lease.pushed_version))
                elif version is not None:
                    if lease.op is not Op.DELETE:
                        accepted[lease.resource].append((lease.entity_id, version, lease.pushed_version))
                    rebases.append((lease.resource, lease.entity_id, version))
            elif status == PushOutcome.CONFLICT and result.current is not None and result.current.deleted \
                    and lease.op is Op.CREATE:
                # HO has the key as a tombstone (the outlet deleted it earlier, or someone did): nothing of
                # HO's is lost by a new life of it, whatever the strategy. Resent based on the tombstone,
                # under a new key (the payload changes); not a failed attempt.
                self._outbox.rebase(conn, lease.item_id, result.current.version, available_at=now)
            elif status == PushOutcome.CONFLICT and result.current is not None:
                stats.conflicts += 1
                entity = self._registry[lease.resource]
                self._handler.handle(conn, entity, lease.entity_id, remote_current(result.current),
                                     source="push", own_item_id=lease.item_id)
            elif status == PushOutcome.REJECTED:
                stats.rejected += 1
                reason = f"{result.code or 'REJECTED'}: {result.reason or ''}"
                if result.retryable:
                    self._fail(conn, lease, reason, now)
                else:
                    self._set_aside(conn, lease, reason, now)
            else:  # server_error (HO failed on this change alone, found by bisection) or an unusable answer
                self._fail(conn, lease, result.reason or f"HO gave no usable result ({status})", now)
        stats.applied += applied
        stats.duplicates += duplicates
        # the entities that still have items (later changes, or set aside) once the accepted ones are gone
        queued = self._outbox.still_queued(conn, [(r, e) for r, rows in accepted.items() for e, _, _ in rows]
                                           + [(r, e) for r, e, _ in rebases])
        for resource, rows in accepted.items():
            waiting = {entity_id for (res, entity_id) in queued if res == resource}
            self._entities.mark_pushed(conn, self._registry[resource], rows, waiting)
        self._outbox.rebase_followers(conn, rebases, queued)
        self._logs.add(conn, LogKind.PUSH, datetime.fromtimestamp(now, UTC), count=len(done), duration_ms=duration_ms,
                       detail=f"{stats.applied} applied, {stats.duplicates} duplicate, "
                              f"{stats.conflicts} conflict, {stats.rejected} rejected")

    def _fail(self, conn: Connection, lease: Lease, reason: str, now: float) -> None:
        failures = lease.attempts + 1
        decision = self._retry.decide(failures, self._rng)
        if decision is None:
            self._set_aside(conn, lease, f"out of retries after {failures} attempts: {reason}", now)
            return
        self._outbox.schedule_retry(conn, lease.item_id, attempts=failures, available_at=now + decision.delay,
                                    error=reason)
        self._outbox.hold_followers(conn, (lease.resource, lease.entity_id), now + decision.delay)

    def _set_aside(self, conn: Connection, lease: Lease, reason: str, now: float) -> None:
        """Dead-letter one change; its entity's later changes wait behind it, nothing else does."""
        self._outbox.set_status(conn, [lease.item_id], ItemStatus.DEAD, error=reason)
        followers = [i["id"] for i in self._outbox.entity_items(conn, (lease.resource, lease.entity_id))
                     if i["status"] == ItemStatus.PENDING.value]
        self._outbox.set_status(conn, followers, ItemStatus.BLOCKED)
        if not lease.append_only and lease.op is not Op.DELETE:
            self._entities.set_status(conn, self._registry[lease.resource], lease.entity_id, SyncStatus.FAILED)
        self._logs.add(conn, LogKind.DEAD, datetime.fromtimestamp(now, UTC), resource=lease.resource,
                       entity_id=lease.entity_id, detail=reason)
        log.warning("change set aside: %s %s:%s (%s)", lease.op.value, lease.resource, lease.entity_id, reason,
                    extra={"event": "push.dead_letter", "resource": lease.resource, "entity_id": lease.entity_id,
                           "op": lease.op.value, "reason": reason})
