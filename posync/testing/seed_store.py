"""Storage of the seed HO, over the posync HO's tables (:mod:`posync.testing.schema`, :mod:`posync.testing.store`).

What differs from the posync profile:

* **hard deletes**: a delete removes the ``ho_records`` row (Django's ``.delete()``), no tombstone;
* **live offset paging**: a page is ``ORDER BY updated_at, id OFFSET o LIMIT n`` over the rows as they
  are now, with a ``COUNT(*)`` of the same query, two statements as Django's ``count()`` and slicing;
* **no idempotency for usages**: every processed usage is appended to ``ho_usage``;
* ``ho_deletions (resource, id) -> deleted_at``: the delete tracking of an HO with ``report_deletes``
  (seed 004's "Next steps"); written only then. Re-creating an id removes its entry, so a live record is
  never also reported deleted.

Writes go through :meth:`HOStore.write`, so they serialise with every other HO write and their
``updated_at`` is HO's clock at the transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from posync.testing.driver_sql import load_json
from posync.testing.schema import HORecord, records, usage
from posync.testing.store import HOStore
from posync.testing.transactions import Writer

__all__ = ["SeedStore", "deletions"]

_meta = sa.MetaData()  # its own metadata: a posync-profile HO never gets this table
deletions = sa.Table(
    "ho_deletions",
    _meta,
    sa.Column("resource", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("deleted_at", sa.String(40), nullable=False),
)
# ``data`` read as text and decoded with orjson: SQLAlchemy's JSON type would use the standard library's
# json.loads, a third of a 1,000-record page's time here
_COLS = (records.c.id, records.c.version, sa.type_coerce(records.c.data, sa.Text).label("data"),
         records.c.updated_at, records.c.change_seq)


def _record(resource: str, row: Any, *, deleted: bool = False, at: str | None = None,
            seq: int | None = None) -> HORecord:
    return HORecord(resource, row.id, row.version, load_json(row.data), deleted, at or row.updated_at,
                    row.change_seq if seq is None else seq)


SCOPE_FIELDS = ("company_id", "brand_id", "store_id")


def _scope(scope: Mapping[str, str]) -> Iterator[sa.ColumnElement[bool]]:
    """A record carrying a scope field must match it; one without the field matches every value."""
    for field, value in scope.items():
        carried = records.c.data[field].as_string()
        yield sa.or_(carried.is_(None), carried == value)


class SeedStore:
    def __init__(self, store: HOStore, *, track_deletes: bool) -> None:
        self.store = store
        self.track_deletes = track_deletes
        # Do any records carry scope fields (company_id, ...)? Filtering on them means reading JSON out of
        # every row, which a real HO's indexed foreign keys never do: the filter is skipped while none does.
        self._scoped: bool | None = None

    def _where_scope(self, scope: Mapping[str, str]) -> list[sa.ColumnElement[bool]]:
        if self._scoped is None:
            with self.store.engine.connect() as conn:
                self._scoped = bool(conn.execute(sa.select(records.c.id).where(sa.or_(
                    *(records.c.data[f].as_string().is_not(None) for f in SCOPE_FIELDS))).limit(1)).first())
        return list(_scope(scope)) if self._scoped else []

    def create_schema(self) -> None:
        _meta.create_all(self.store.engine)

    # -- HO-side edits --------------------------------------------------------------------------

    def put(self, resource: str, entity_id: str, data: dict[str, Any]) -> HORecord:
        def run(w: Writer) -> HORecord:
            key = (records.c.resource == resource, records.c.id == entity_id)
            cur = w.conn.execute(sa.select(records.c.version).where(*key)).first()
            version = (cur.version if cur else 0) + 1  # kept for the admin API; never served
            seq = w.next_seq(resource)
            values = {"version": version, "data": data, "deleted": False, "updated_at": w.now, "change_seq": seq}
            if any(f in data for f in SCOPE_FIELDS):
                self._scoped = True
            if cur is None:
                w.conn.execute(records.insert().values(resource=resource, id=entity_id, **values))
            else:
                w.conn.execute(records.update().where(*key).values(**values))
            if self.track_deletes:
                w.conn.execute(deletions.delete().where(deletions.c.resource == resource,
                                                        deletions.c.id == entity_id))
            return HORecord(resource, entity_id, version, data, False, w.now, seq)

        return self.store.write(run)

    def delete(self, resource: str, entity_id: str) -> HORecord | None:
        """Hard-delete a record; answers it as it was (``deleted``, ``updated_at`` = the deletion time),
        or ``None`` when HO has no such record."""

        def run(w: Writer) -> HORecord | None:
            key = (records.c.resource == resource, records.c.id == entity_id, records.c.deleted.is_(False))
            row = w.conn.execute(sa.select(*_COLS).where(*key)).first()
            if row is None:
                return None
            w.conn.execute(records.delete().where(*key))
            seq = w.next_seq(resource)  # the global counter keeps numbering every change (stats, events)
            if self.track_deletes:
                w.conn.execute(deletions.delete().where(deletions.c.resource == resource,
                                                        deletions.c.id == entity_id))
                w.conn.execute(deletions.insert().values(resource=resource, id=entity_id, deleted_at=w.now))
            return _record(resource, row, deleted=True, at=w.now, seq=seq)

        return self.store.write(run)

    def append_usages(self, outlet_id: str, usages: list[dict[str, Any]]) -> None:
        if not usages:
            return

        def run(w: Writer) -> None:
            w.conn.execute(usage.insert(), [
                {"outlet_id": outlet_id, "data": u, "received_at": w.now,
                 "idempotency_key": u["usage_id"] if isinstance(u.get("usage_id"), str) else ""}
                for u in usages])

        self.store.write(run)

    # -- reads ----------------------------------------------------------------------------------

    def page(self, resource: str, scope: Mapping[str, str], since: str | None, offset: int,
             limit: int | None) -> tuple[list[HORecord], int]:
        """(the rows at ``offset``, ``limit`` of them or all, and the query's live count)."""
        where = [records.c.resource == resource, records.c.deleted.is_(False), *self._where_scope(scope)]
        if since is not None:
            where.append(records.c.updated_at >= since)  # seed 000: updated_at__gte
        q = sa.select(*_COLS).where(*where).order_by(records.c.updated_at, records.c.id).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.store.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(records).where(*where)).scalar_one()
            rows = [_record(resource, r) for r in conn.execute(q)]
        return rows, int(total)

    def deleted_since(self, resource: str, since: str | None) -> list[str]:
        q = sa.select(deletions.c.id).where(deletions.c.resource == resource)
        if since is not None:
            q = q.where(deletions.c.deleted_at >= since)
        with self.store.engine.connect() as conn:
            return [r.id for r in conn.execute(q.order_by(deletions.c.deleted_at, deletions.c.id))]

    def deletions(self, resource: str) -> dict[str, str]:
        """id -> deletion time of the tracked deletes of ``resource``."""
        q = sa.select(deletions.c.id, deletions.c.deleted_at).where(deletions.c.resource == resource)
        with self.store.engine.connect() as conn:
            return {r.id: r.deleted_at for r in conn.execute(q.order_by(deletions.c.deleted_at))}

    def latest_save(self, scope: Mapping[str, str]) -> str | None:
        """``MAX(updated_at)`` over every live record in scope (a hard-deleted row no longer counts)."""
        q = sa.select(sa.func.max(records.c.updated_at)).where(records.c.deleted.is_(False), *self._where_scope(scope))
        with self.store.engine.connect() as conn:
            latest = conn.execute(q).scalar_one_or_none()
        return None if latest is None else str(latest)
