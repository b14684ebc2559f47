"""``HOStore``: the reference HO's persistence, on SQLite or PostgreSQL. It writes through serialised
transactions (:mod:`~posync.testing.transactions`), applies pushes exactly once
(:mod:`~posync.testing.exactly_once`), makes HO-side edits with tombstones, purges them past a horizon,
and reads (:mod:`~posync.testing.reads`). The tables are in :mod:`~posync.testing.schema`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from posync.testing.changes import Change, Rejection, State, Validator, canonical_json
from posync.testing.driver_sql import load_states, save_states
from posync.testing.exactly_once import UsageItem, apply_changes, apply_usages
from posync.testing.reads import StoreReads
from posync.testing.schema import HORecord, iso, records, resources
from posync.testing.transactions import SerialWrites, StoreBusyError, Writer

__all__ = ["HORecord", "HOStore", "StoreBusyError", "Writer"]


class HOStore(SerialWrites, StoreReads):
    """Persistence of the reference HO. Takes an engine it does not own (the caller disposes it)."""

    # -- outlets' writes ------------------------------------------------------------------------

    def apply_changes(
        self, outlet_id: str, items: Sequence[Change | Rejection], validators: dict[str, Validator],
        *, want_changed: bool = True,
    ) -> tuple[list[dict[str, Any]], list[HORecord]]:
        """Apply a push batch in one transaction; answers (results in request order, changed records
        in change_seq order, or [] unless ``want_changed``)."""
        return self.write(lambda w: apply_changes(w, outlet_id, items, validators, want_changed))

    def apply_usages(self, outlet_id: str, items: Sequence[UsageItem | Rejection],
                     validators: dict[str, Validator]) -> list[dict[str, Any]]:
        """Append usage records ``(key, request_hash, usage)``; answers results in request order."""
        return self.write(lambda w: apply_usages(w, outlet_id, items, validators))

    # -- HO-side edits --------------------------------------------------------------------------

    def put(self, resource: str, entity_id: str, data: dict[str, Any]) -> HORecord:
        def run(w: Writer) -> HORecord:
            cur = load_states(w.conn, {(resource, entity_id)}).get((resource, entity_id))
            version = (cur.version if cur else 0) + 1
            s = State(version, False, data, w.now, w.next_seq(resource))
            save_states(w.conn, {(resource, entity_id): (s, canonical_json(data))},
                        {(resource, entity_id)} if cur else set())
            return HORecord(resource, entity_id, version, data, False, w.now, s.change_seq)

        return self.write(run)

    def delete(self, resource: str, entity_id: str) -> HORecord | None:
        """Tombstone a live record; ``None`` when HO has no live record of that id."""

        def run(w: Writer) -> HORecord | None:
            cur = load_states(w.conn, {(resource, entity_id)}).get((resource, entity_id))
            if cur is None or cur.deleted:
                return None
            s = State(cur.version + 1, True, cur.data, w.now, w.next_seq(resource))
            save_states(w.conn, {(resource, entity_id): (s, canonical_json(cur.data))}, {(resource, entity_id)})
            return HORecord(resource, entity_id, s.version, s.data, True, w.now, s.change_seq)

        return self.write(run)

    def purge_tombstones(self, horizon: float) -> int:
        """Delete tombstones older than ``horizon`` seconds; cursors before them then answer 410."""

        def run(w: Writer) -> int:
            cutoff = iso(self.clock() - timedelta(seconds=horizon))
            cond = sa.and_(records.c.deleted.is_(True), records.c.updated_at <= cutoff)
            tops = w.conn.execute(
                sa.select(records.c.resource, sa.func.max(records.c.change_seq), sa.func.count())
                .where(cond).group_by(records.c.resource)
            ).all()
            if not tops:
                return 0
            w.conn.execute(records.delete().where(cond))
            w.conn.execute(
                resources.update().where(resources.c.resource == sa.bindparam("k"))
                .values(purged_seq=sa.func.max(resources.c.purged_seq, sa.bindparam("p"))
                        if self._sqlite else sa.func.greatest(resources.c.purged_seq, sa.bindparam("p"))),
                [{"k": r, "p": int(top)} for r, top, _ in tops],
            )
            return sum(int(n) for _, _, n in tops)

        return self.write(run)
