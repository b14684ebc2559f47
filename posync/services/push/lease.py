"""Leasing: each claimed entity's change is frozen as HO will receive it, under a new idempotency key,
and leased to this worker until the lease runs out.

A resend (a change sent before) goes out exactly as it was frozen, under its old key. Changes that fold
into nothing (created and deleted before HO saw them), rows gone without a captured delete and
resources no longer registered are settled here and never sent.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection

from posync.models.enums import ItemStatus, LogKind, Op
from posync.registry import Registry
from posync.repositories import EntityRepository, LogRepository, OutboxRepository
from posync.services.push.keys import idempotency_keys

__all__ = ["OP_BY_VALUE", "Group", "Lease", "Leaser"]

log = logging.getLogger("posync.push")

OP_BY_VALUE = {op.value: op for op in Op}  # a dict lookup: Op(value) costs microseconds, per claimed item
# one entity's claimed items (commit order) and the op they fold into (None: into nothing)
Group = tuple[list[dict[str, Any]], Op | None]


class Lease(NamedTuple):
    item_id: int
    resource: str
    entity_id: str
    op: Op
    change: dict[str, Any]  # exactly what is sent (frozen at the first claim)
    pushed_version: int | None  # the row's local version that this change carries
    attempts: int
    append_only: bool


class Leaser:
    def __init__(self, registry: Registry, outbox: OutboxRepository, entities: EntityRepository,
                 logs: LogRepository, *, owner: str, lease_seconds: float) -> None:
        self._registry = registry
        self._outbox = outbox
        self._entities = entities
        self._logs = logs
        self._owner = owner
        self._lease_seconds = lease_seconds

    def lease(self, conn: Connection, groups: list[Group], now: float) -> tuple[list[Lease], int]:
        """Freeze and lease ``groups``; settle those with nothing to send. Returns the leases and how
        many queued items folded into nothing."""
        entities = {res: self._registry[res] for res in {items[0]["resource"] for items, _ in groups}
                    if res in self._registry}
        to_read: dict[str, list[str]] = defaultdict(list)
        for items, op in groups:
            head = items[0]
            if head["idempotency_key"] is None and op in (Op.CREATE, Op.UPDATE) and head["resource"] in entities:
                to_read[head["resource"]].append(head["entity_id"])
        rows = {res: self._entities.push_rows(conn, entities[res], ids) for res, ids in to_read.items()}
        lease_until = now + self._lease_seconds
        leases: list[Lease] = []
        heads: list[tuple[int, dict[str, Any], int | None]] = []
        keys = idempotency_keys(len(groups))
        folded: list[int] = []
        nothing: list[int] = []
        unknown: list[int] = []
        vanished: list[int] = []
        for items, op in groups:
            head = items[0]
            resource, entity_id = head["resource"], head["entity_id"]
            entity = entities.get(resource)
            if entity is None:
                unknown.append(head["id"])
                continue
            if head["idempotency_key"] is not None:  # a resend: the frozen change, as it was
                change, pushed_version, op = head["payload"], head["entity_version"], OP_BY_VALUE[head["op"]]
            elif op is None:
                nothing += [i["id"] for i in items]
                continue
            else:
                # the run's base: HO's version the first unsent change was made on (captured by the
                # database at that change, re-based when an earlier change of the entity settled)
                base = head["base_version"]
                if op is Op.DELETE:
                    data, pushed_version = None, None
                else:
                    row = rows[resource].get(entity_id)
                    if row is None:  # the row is gone but no delete was captured (capture suppressed?)
                        vanished += [i["id"] for i in items]
                        continue
                    data, pushed_version = row.data, row.version
                change = {
                    "idempotency_key": next(keys), "resource": resource, "entity_id": entity_id,
                    # a create's base is None for a new entity, or the tombstone's version when it
                    # re-creates one HO deleted (protocol.md)
                    "op": op.value, "base_version": base,
                    "changed_at": _iso(items[-1]["changed_at"]), "data": data,
                }
                if len(items) > 1:
                    folded += [i["id"] for i in items[1:]]
            heads.append((head["id"], change, pushed_version))
            leases.append(Lease(head["id"], resource, entity_id, op, change, pushed_version, head["attempts"],
                                entity.append_only))
        self._outbox.lease(conn, heads, self._owner, lease_until)
        self._outbox.delete(conn, folded + nothing + vanished)
        self._outbox.set_status(conn, unknown, ItemStatus.DEAD, error="resource is not registered")
        if nothing:
            self._logs.add(conn, LogKind.COALESCED, datetime.fromtimestamp(now, UTC), count=len(nothing),
                           detail="created and deleted before HO saw them: nothing to send")
        if vanished:
            log.warning("%d queued changes refer to rows that are gone without a captured delete; dropped",
                        len(vanished))
            self._logs.add(conn, LogKind.DROPPED, datetime.fromtimestamp(now, UTC), count=len(vanished),
                           detail="rows gone without a captured delete")
        return leases, len(nothing)


def _iso(value: Any) -> str:
    """An outbox timestamp as ISO 8601 with offset; SQLite hands back its stored text (UTC, no offset)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    text = str(value).replace(" ", "T", 1)
    return text if ("+" in text[10:] or text.endswith("Z")) else text + "+00:00"
