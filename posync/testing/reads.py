"""What the reference HO reads: pull pages (by change_seq cursor, or the seeds' legacy updated_since +
offset), cursor bounds and versions, and the lookups and counts its admin API and tests inspect."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from posync.testing.schema import REC_COLS, SEQ, HORecord, apply_log, counter, idempotency, records, resources, usage

__all__ = ["StoreReads"]


class StoreReads:
    engine: Engine

    def _rows(self, query: sa.Select[Any], resource: str) -> list[HORecord]:
        with self.engine.connect() as conn:
            return [HORecord(resource, r.id, r.version, r.data, bool(r.deleted), r.updated_at, r.change_seq)
                    for r in conn.execute(query)]

    # -- the change log, paged ------------------------------------------------------------------

    def page_after(self, resource: str, after_seq: int, limit: int) -> list[HORecord]:
        """Up to ``limit`` changes of ``resource`` with change_seq > after_seq, in seq order."""
        q = (sa.select(*REC_COLS).where(records.c.resource == resource, records.c.change_seq > after_seq)
             .order_by(records.c.change_seq).limit(limit))
        return self._rows(q, resource)

    def page_since(self, resource: str, since: str | None, offset: int, limit: int) -> list[HORecord]:
        """The seeds' legacy paging: updated_at > since, ordered by (updated_at, id), offset/limit."""
        q = sa.select(*REC_COLS).where(records.c.resource == resource)
        if since is not None:
            q = q.where(records.c.updated_at > since)
        return self._rows(q.order_by(records.c.updated_at, records.c.id).offset(offset).limit(limit), resource)

    def cursor_bounds(self, resource: str) -> tuple[int, int]:
        """(purged_seq of the resource, the global change_seq): a valid cursor lies between them."""
        with self.engine.connect() as conn:
            purged = conn.execute(
                sa.select(resources.c.purged_seq).where(resources.c.resource == resource)
            ).scalar_one_or_none()
            top = conn.execute(sa.select(counter.c.value).where(counter.c.name == SEQ)).scalar_one()
        return int(purged or 0), int(top)

    def versions(self) -> tuple[int, dict[str, int]]:
        with self.engine.connect() as conn:
            top = conn.execute(sa.select(counter.c.value).where(counter.c.name == SEQ)).scalar_one()
            per = {r.resource: int(r.last_seq) for r in conn.execute(sa.select(resources))}
        return int(top), per

    # -- inspection -----------------------------------------------------------------------------

    def get(self, resource: str, entity_id: str) -> HORecord | None:
        rows = self._rows(sa.select(*REC_COLS).where(records.c.resource == resource,
                                                     records.c.id == entity_id), resource)
        return rows[0] if rows else None

    def all_records(self, resource: str) -> dict[str, HORecord]:
        rows = self._rows(sa.select(*REC_COLS).where(records.c.resource == resource)
                          .order_by(records.c.change_seq), resource)
        return {r.id: r for r in rows}

    def applied_counts(self, outlet_id: str | None = None,
                       idempotency_key: str | None = None) -> dict[tuple[str, str], int]:
        q = (sa.select(apply_log.c.outlet_id, apply_log.c.idempotency_key, sa.func.count())
             .group_by(apply_log.c.outlet_id, apply_log.c.idempotency_key))
        if outlet_id is not None:
            q = q.where(apply_log.c.outlet_id == outlet_id)
        if idempotency_key is not None:
            q = q.where(apply_log.c.idempotency_key == idempotency_key)
        with self.engine.connect() as conn:
            return {(o, k): int(n) for o, k, n in conn.execute(q)}

    def usages(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [{"outlet_id": r.outlet_id, "idempotency_key": r.idempotency_key, "data": r.data,
                     "received_at": r.received_at}
                    for r in conn.execute(sa.select(usage).order_by(usage.c.id))]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            def n(t: sa.Table, *where: Any) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one())

            return {
                "records": n(records, records.c.deleted.is_(False)),
                "tombstones": n(records, records.c.deleted.is_(True)),
                "applied": n(apply_log),
                "idempotency_keys": n(idempotency),
                "usages": n(usage),
                "change_seq": int(conn.execute(sa.select(counter.c.value)
                                               .where(counter.c.name == SEQ)).scalar_one()),
            }
