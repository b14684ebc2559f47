"""The outbox, by intent: find due work, lease it, settle it, set it aside, put it back.

Every method takes the caller's ``Connection``: the service decides the transaction boundaries
(claiming is one transaction, settling a batch's results another).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from posync import _json as json
from posync.models.enums import ItemStatus
from posync.models.outbox import OutboxItem
from posync.repositories import driver
from posync.repositories.errors import storage_errors

__all__ = ["Due", "OutboxRepository"]

T = OutboxItem.__table__  # type: ignore[attr-defined]
EntityKey = tuple[str, str]


# the columns claiming and conflict handling read (not the lease owner or the last error)
_ITEM_COLUMNS = ("id", "resource", "entity_id", "op", "status", "available_at", "attempts", "idempotency_key",
                 "payload", "base_version", "entity_version", "changed_at")
# a row of due_sql: an item's columns, then whether its entity has other unsettled items
_DUE_COLUMNS = (*_ITEM_COLUMNS, "not_alone")


class Due(NamedTuple):
    """Due items, oldest first (the columns of ``_ITEM_COLUMNS`` by name), and the ids of those that are
    their entity's only unsettled item."""

    items: list[dict[str, Any]]
    alone: set[int]


_PENDING = ItemStatus.PENDING.value
_INFLIGHT = ItemStatus.INFLIGHT.value


def _chunks(items: Sequence[Any], size: int = driver.CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _by_entity(conn: Connection) -> str:
    """Pin SQLite to the entity index for "this entity's items with status X". Its planner, having no
    statistics, would take the due index for ``status = ?`` and walk every pending item in the queue."""
    return " INDEXED BY ix_posync_outbox_entity" if conn.dialect.name == "sqlite" else ""


def _decoded(item: dict[str, Any]) -> dict[str, Any]:
    """A frozen payload as read through the driver: text on SQLite, already a dict on PostgreSQL."""
    payload = item["payload"]
    if type(payload) is str:
        item["payload"] = json.loads(payload)
    return item


@storage_errors
class OutboxRepository:
    def reclaim_expired_leases(self, conn: Connection, now: float, lease_seconds: float) -> int:
        """Items whose worker died mid-push go back to pending, keeping key and frozen payload. A lease
        that would run out further ahead than any lease lasts was taken under a clock that has since been
        set back: it is treated as run out too (nothing waits on a clock that moved backwards)."""
        # runs before every claim: driver SQL, no statement to build and compile each time
        return driver.execute(conn, f"UPDATE {T.name} SET status = ?, lease_owner = NULL "
                                    "WHERE status = ? AND (available_at <= ? OR available_at > ?)",
                              (_PENDING, _INFLIGHT, now, now + lease_seconds + 1.0))

    def give_back(self, conn: Connection, lease_owner: str, now: float) -> int:
        """Every item ``lease_owner`` holds in flight is due again now, keeping key and frozen payload: its
        process closed, or died and lost the syncer lease (no need to wait out the item leases)."""
        return driver.execute(conn, f"UPDATE {T.name} SET status = ?, lease_owner = NULL, available_at = ? "
                                    "WHERE status = ? AND lease_owner = ?", (_PENDING, now, _INFLIGHT, lease_owner))

    def bring_forward(self, conn: Connection, now: float, horizon: float) -> int:
        """Pending items due later than ``now + horizon`` (more than any backoff lasts) were scheduled
        under a clock that has since been set back: they are due now. One range scan of the due index,
        which finds nothing when the clock never moved back."""
        return driver.execute(conn, f"UPDATE {T.name} SET available_at = ? WHERE status = ? AND available_at > ?",
                              (now, _PENDING, now + horizon))

    def due(self, conn: Connection, now: float, limit: int,
            after: tuple[float, int] | None = None) -> Due:
        """Due pending items, oldest first (after the ``(available_at, id)`` of ``after``, if given), and
        which of them are their entity's only unsettled item. Only such an item is a whole entity; for
        the others, claiming reads the entity with :meth:`outstanding`.

        One range scan on (status, available_at, id); per item, an index-only probe of the entity index.
        PostgreSQL locks the items, skipping ones another claimer holds."""
        sql = self.due_sql(conn.dialect.name, after is not None)
        params = (_PENDING, now, *(after or ()), limit)
        due = Due([], set())
        for row in driver.fetch(conn, sql, params):
            item = dict(zip(_DUE_COLUMNS, row, strict=True))
            if not item.pop("not_alone"):
                due.alone.add(item["id"])
            # only an item sent before has a frozen payload to decode
            due.items.append(item if item["payload"] is None else _decoded(item))
        return due

    @staticmethod
    def due_sql(dialect_name: str, after: bool = False) -> str:
        lock = " FOR UPDATE OF o SKIP LOCKED" if dialect_name == "postgresql" else ""
        columns = ", ".join(f"o.{c}" for c in _ITEM_COLUMNS)
        window = "AND (o.available_at, o.id) > (?, ?) " if after else ""
        return (f"SELECT {columns}, EXISTS (SELECT 1 FROM {T.name} p WHERE p.resource = o.resource "
                f"AND p.entity_id = o.entity_id AND p.id <> o.id) FROM {T.name} o "
                f"WHERE o.status = ? AND o.available_at <= ? {window}ORDER BY o.available_at, o.id LIMIT ?{lock}")

    def outstanding(self, conn: Connection, keys: Sequence[EntityKey]) -> dict[EntityKey, list[dict[str, Any]]]:
        """Every unsettled item of these entities, in commit order (every status is unsettled: items HO
        accepted are deleted). Through the entity index, on the driver's cursor."""
        by_resource: dict[str, list[str]] = defaultdict(list)
        for resource, entity_id in keys:
            by_resource[resource].append(entity_id)
        out: dict[EntityKey, list[dict[str, Any]]] = defaultdict(list)
        sql = f"SELECT {', '.join(_ITEM_COLUMNS)} FROM {T.name} WHERE resource = ? AND entity_id IN ({{}}) ORDER BY id"
        for resource, ids in by_resource.items():
            for values in driver.fetch_in(conn, sql, ids, before=(resource,)):
                item = _decoded(dict(zip(_ITEM_COLUMNS, values, strict=True)))
                out[(resource, item["entity_id"])].append(item)
        return out

    def lock_entities(self, conn: Connection, keys: Sequence[EntityKey]) -> list[EntityKey]:
        """PostgreSQL: take a transaction-scoped advisory lock per entity; return those we got.
        Two processes claiming at once then never take the same entity. SQLite's BEGIN IMMEDIATE
        already serialises claimers, so there every key is ours."""
        if conn.dialect.name != "postgresql" or not keys:
            return list(keys)
        names = [f"{r}\x1f{e}" for r, e in keys]
        got = set(conn.execute(
            sa.text("SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
                    "WHERE pg_try_advisory_xact_lock(hashtextextended(k, 0))"),
            {"keys": names},
        ).scalars())
        return [key for key, name in zip(keys, names, strict=True) if name in got]

    def lease(self, conn: Connection, heads: Sequence[tuple[int, dict[str, Any], int | None]], lease_owner: str,
              until: float) -> None:
        """Mark heads inflight until ``until``, each frozen as it will be sent. A head is (item id, the
        change as sent: op, key and base version included, the local version it carries).

        The hot path of every push: one driver-level executemany, without SQLAlchemy's per-row
        parameter processing (a third of a claim's time otherwise)."""
        if not heads:
            return
        payload = "CAST(? AS JSON)" if conn.dialect.name == "postgresql" else "?"
        sql = (f"UPDATE {T.name} SET status = ?, op = ?, payload = {payload}, idempotency_key = ?, "
               "base_version = ?, entity_version = ?, lease_owner = ?, available_at = ? WHERE id = ?")
        dumps = json.dumps_text
        rows = [(_INFLIGHT, change["op"], dumps(change), change["idempotency_key"], change["base_version"],
                 entity_version, lease_owner, until, item_id) for item_id, change, entity_version in heads]
        driver.executemany(conn, sql, rows)

    def delete(self, conn: Connection, ids: Sequence[int]) -> int:
        """Delete settled items."""
        return driver.execute_in(conn, f"DELETE FROM {T.name} WHERE id IN ({{}})", list(ids))

    def still_leased(self, conn: Connection, ids: Sequence[int], lease_owner: str) -> set[int]:
        rows = driver.fetch_in(conn, f"SELECT id FROM {T.name} WHERE id IN ({{}}) AND lease_owner = ? AND status = ?",
                               list(ids), after=(lease_owner, _INFLIGHT))
        return {item_id for (item_id,) in rows}

    def delete_leased(self, conn: Connection, ids: Sequence[int], lease_owner: str) -> set[int]:
        """Delete the items among ``ids`` whose lease ``lease_owner`` still holds; return their ids.
        One ``DELETE ... RETURNING`` where the database has it (PostgreSQL, SQLite >= 3.35)."""
        if not conn.dialect.delete_returning:
            held = self.still_leased(conn, ids, lease_owner)
            self.delete(conn, list(held))
            return held
        rows = driver.fetch_in(conn, f"DELETE FROM {T.name} WHERE id IN ({{}}) AND lease_owner = ? AND status = ? "
                                     "RETURNING id", list(ids), after=(lease_owner, _INFLIGHT))
        return {item_id for (item_id,) in rows}

    def release(self, conn: Connection, ids: Sequence[int], lease_owner: str, available_at: float) -> None:
        """Give leased items back untouched (HO unreachable): same key, same payload, no attempt counted."""
        for chunk in _chunks(list(ids)):
            conn.execute(
                T.update().where(T.c.id.in_(chunk), T.c.lease_owner == lease_owner,
                                 T.c.status == ItemStatus.INFLIGHT.value)
                .values(status=ItemStatus.PENDING.value, lease_owner=None, available_at=available_at)
            )

    def schedule_retry(self, conn: Connection, item_id: int, *, attempts: int, available_at: float,
                       error: str) -> None:
        conn.execute(T.update().where(T.c.id == item_id).values(
            status=ItemStatus.PENDING.value, lease_owner=None, attempts=attempts, available_at=available_at,
            last_error=error))

    def set_status(self, conn: Connection, ids: Sequence[int], status: ItemStatus, *,
                   error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status.value, "lease_owner": None}
        if error is not None:
            values["last_error"] = error
        for chunk in _chunks(list(ids)):
            conn.execute(T.update().where(T.c.id.in_(chunk)).values(**values))

    def hold_followers(self, conn: Connection, key: EntityKey, available_at: float) -> None:
        """Keep an entity's later items behind its head while the head waits out a backoff.
        Ids first, through the entity index: a bare UPDATE would be planned on the due index and walk
        every pending item of the queue."""
        ids = [item_id for (item_id,) in driver.fetch(
            conn, f"SELECT id FROM {T.name}{_by_entity(conn)} WHERE resource = ? AND entity_id = ? AND status = ?",
            (*key, _PENDING))]
        for chunk in _chunks(ids):
            conn.execute(T.update().where(T.c.id.in_(chunk), T.c.available_at < available_at)
                         .values(available_at=available_at))

    def still_queued(self, conn: Connection, keys: Sequence[EntityKey]) -> dict[EntityKey, set[str]]:
        """The statuses of the items left of these entities (after a settle deleted the accepted ones).
        Most entities have none: one seek of the entity index each finds no entry."""
        by_resource: dict[str, list[str]] = defaultdict(list)
        for resource, entity_id in keys:
            by_resource[resource].append(entity_id)
        out: dict[EntityKey, set[str]] = defaultdict(set)
        for resource, ids in by_resource.items():
            rows = driver.fetch_in(conn, f"SELECT DISTINCT entity_id, status FROM {T.name}{_by_entity(conn)} "
                                         "WHERE resource = ? AND entity_id IN ({})", ids, before=(resource,))
            for entity_id, status in rows:
                out[(resource, entity_id)].add(status)
        return out

    def rebase_followers(self, conn: Connection, rebases: Sequence[tuple[str, str, int]],
                         queued: dict[EntityKey, set[str]]) -> None:
        """After HO accepted a change (``(resource, entity_id, HO's new version)``), later unsent changes
        of that entity build on it (``queued``: :meth:`still_queued` of these entities)."""
        driver.executemany(
            conn, f"UPDATE {T.name}{_by_entity(conn)} SET base_version = ? WHERE resource = ? AND entity_id = ? "
                  "AND status = ? AND attempts = 0",
            [(version, resource, entity_id, _PENDING) for resource, entity_id, version in rebases
             if _PENDING in queued.get((resource, entity_id), ())])

    def rebase(self, conn: Connection, item_id: int, base_version: int, available_at: float) -> None:
        """A sent change goes back in line based on HO's ``base_version``, due at ``available_at``, not
        frozen any more: its next claim sends it under a new key. No attempt is counted."""
        self.reset(conn, item_id, {"status": _PENDING, "available_at": available_at, "base_version": base_version,
                                   "idempotency_key": None, "payload": None})

    def insert(self, conn: Connection, row: dict[str, Any]) -> None:
        conn.execute(T.insert(), [row])

    def get(self, conn: Connection, item_id: int) -> RowMapping | None:
        return conn.execute(sa.select(T).where(T.c.id == item_id)).mappings().first()

    def find(self, conn: Connection, statuses: Sequence[ItemStatus] | None, limit: int,
             offset: int = 0, *, resource: str | None = None, entity_id: str | None = None) -> list[RowMapping]:
        stmt = sa.select(T).order_by(T.c.id).limit(limit).offset(offset)
        if statuses:
            stmt = stmt.where(T.c.status.in_([s.value for s in statuses]))
        if resource is not None:
            stmt = stmt.where(T.c.resource == resource)
        if entity_id is not None:
            stmt = stmt.where(T.c.entity_id == entity_id)
        return list(conn.execute(stmt).mappings())

    def entity_ids(self, conn: Connection, resource: str, statuses: Sequence[str]) -> set[str]:
        """Ids of a resource's entities with an item in one of ``statuses``."""
        return set(conn.execute(sa.select(T.c.entity_id).where(T.c.resource == resource,
                                                               T.c.status.in_(list(statuses)))).scalars())

    def newest_id(self, conn: Connection) -> int | None:
        """The highest item id: it moves when a change is queued (the primary key's last entry: O(1))."""
        newest = conn.execute(sa.select(sa.func.max(T.c.id))).scalar()
        return None if newest is None else int(newest)

    def counts(self, conn: Connection) -> dict[str, int]:
        rows = conn.execute(sa.select(T.c.status, sa.func.count()).group_by(T.c.status))
        return {status: int(n) for status, n in rows}

    def oldest_changed_at(self, conn: Connection, statuses: Sequence[ItemStatus]) -> datetime | None:
        """When the oldest change in ``statuses`` was made (None: there is none)."""
        oldest: datetime | None = conn.execute(sa.select(sa.func.min(T.c.changed_at))
                                               .where(T.c.status.in_([s.value for s in statuses]))).scalar()
        return oldest

    def dead_letters(self, conn: Connection, limit: int) -> list[RowMapping]:
        """The dead changes, oldest first (one per entity as a rule: an entity's later changes wait
        behind its dead one, blocked)."""
        return list(conn.execute(sa.select(T.c.id, T.c.resource, T.c.entity_id, T.c.attempts, T.c.last_error,
                                           T.c.changed_at).where(T.c.status == ItemStatus.DEAD.value)
                                 .order_by(T.c.id).limit(limit)).mappings())

    def dead_ids(self, conn: Connection) -> list[int]:
        return list(conn.execute(sa.select(T.c.id).where(T.c.status == ItemStatus.DEAD.value)
                                 .order_by(T.c.id)).scalars())

    def entity_items(self, conn: Connection, key: EntityKey) -> list[dict[str, Any]]:
        return self.outstanding(conn, [key]).get(key, [])

    def reset(self, conn: Connection, item_id: int, values: dict[str, Any]) -> None:
        conn.execute(T.update().where(T.c.id == item_id).values(lease_owner=None, **values))

    def reset_many(self, conn: Connection, ids: Sequence[int], values: dict[str, Any]) -> None:
        for chunk in _chunks(list(ids)):
            conn.execute(T.update().where(T.c.id.in_(chunk)).values(**values))
