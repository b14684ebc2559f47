"""The sync log: one row per batch, cycle or notable event, not per routine change.

Retention (:meth:`LogRepository.fold_and_delete`) removes old rows a chunk at a time and adds what the
metrics count of them (rows, their ``count``, their ``duration_ms``) to ``total`` rows, in the same
transaction: :meth:`LogRepository.totals` (kept rows plus folded totals, read in one statement) never goes
back, so the Prometheus counters built on it stay monotonic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from posync.models.enums import LogKind
from posync.models.log import SyncLogEntry
from posync.repositories.errors import storage_errors

__all__ = ["COUNTED", "CycleWindow", "LogRepository", "LogTotal"]

T = SyncLogEntry.__table__  # type: ignore[attr-defined]
_INSERT = T.insert()
# the kinds whose rows the metrics count (their totals survive retention)
COUNTED = (LogKind.PUSH, LogKind.PULL, LogKind.CYCLE, LogKind.CYCLE_FAILED, LogKind.DEAD)
# a total row: kind "total", resource the counted row's resource, entity_id "<kind>.rows" (count: rows,
# duration_ms: their durations) or "<kind>.count" (count: their counts summed)
_ROWS, _SUM = ".rows", ".count"
# routine rows a listing leaves out unless asked for by kind (a quiet cycle every 30 s would bury the rest)
_ROUTINE = (LogKind.CYCLE.value, LogKind.TOTAL.value)


class CycleWindow(NamedTuple):
    """The sync cycles recorded since some time: how many completed, how many failed, their durations."""

    ok: int
    failed: int
    duration_ms: float  # summed over both


class LogTotal(NamedTuple):
    """Everything ever logged of one kind (and resource): kept rows plus what retention folded."""

    kind: str
    resource: str | None
    rows: int
    changes: int  # the rows' ``count`` summed
    duration_ms: float


@storage_errors
class LogRepository:
    def add(self, conn: Connection, kind: LogKind, at: datetime, *, resource: str | None = None,
            entity_id: str | None = None, count: int = 0, detail: str | None = None,
            duration_ms: float | None = None) -> None:
        # one statement object, values as parameters: SQLAlchemy compiles it once (values() baked into a
        # new statement cost a cache-key walk on every push batch)
        conn.execute(_INSERT, {"kind": kind.value, "at": at, "resource": resource, "entity_id": entity_id,
                               "count": count, "detail": detail, "duration_ms": duration_ms})

    def recent(self, conn: Connection, *, limit: int = 100, kind: str | None = None) -> list[RowMapping]:
        """Newest first; without ``kind``, completed cycles and totals are left out."""
        stmt = sa.select(T).order_by(T.c.id.desc()).limit(limit)
        stmt = stmt.where(T.c.kind == kind) if kind else stmt.where(T.c.kind.not_in(_ROUTINE))
        return list(conn.execute(stmt).mappings())

    def last_at(self, conn: Connection, kind: LogKind) -> datetime | None:
        return conn.execute(sa.select(sa.func.max(T.c.at)).where(T.c.kind == kind.value)).scalar()

    def cycles_since(self, conn: Connection, since: datetime) -> CycleWindow:
        rows = conn.execute(sa.select(T.c.kind, sa.func.count(), sa.func.coalesce(sa.func.sum(T.c.duration_ms), 0.0))
                            .where(T.c.kind.in_([LogKind.CYCLE.value, LogKind.CYCLE_FAILED.value]), T.c.at > since)
                            .group_by(T.c.kind))
        found = {kind: (int(n), float(ms)) for kind, n, ms in rows}
        ok, failed = found.get(LogKind.CYCLE.value, (0, 0.0)), found.get(LogKind.CYCLE_FAILED.value, (0, 0.0))
        return CycleWindow(ok[0], failed[0], ok[1] + failed[1])

    def last_entity_events(self, conn: Connection, kind: LogKind,
                           keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
        """When ``kind`` was last logged for each (resource, entity_id) of ``keys`` that has a row."""
        out: dict[tuple[str, str], datetime] = {}
        entity_ids = sorted({entity_id for _, entity_id in keys})
        for start in range(0, len(entity_ids), 500):
            rows = conn.execute(sa.select(T.c.resource, T.c.entity_id, sa.func.max(T.c.at))
                                .where(T.c.kind == kind.value, T.c.entity_id.in_(entity_ids[start:start + 500]))
                                .group_by(T.c.resource, T.c.entity_id))
            out.update({(resource, entity_id): at for resource, entity_id, at in rows})
        return {key: out[key] for key in keys if key in out}

    def totals(self, conn: Connection) -> list[LogTotal]:
        """Rows, counts and durations per counted kind and resource, since the outlet's first row: one
        statement, so a retention run committing meanwhile is seen wholly or not at all."""
        kept = (sa.select(T.c.kind.label("kind"), T.c.resource.label("resource"), sa.literal("").label("measure"),
                          sa.func.count().label("rows"), sa.func.coalesce(sa.func.sum(T.c.count), 0).label("n"),
                          sa.func.coalesce(sa.func.sum(T.c.duration_ms), 0.0).label("ms"))
                .where(T.c.kind.in_([k.value for k in COUNTED])).group_by(T.c.kind, T.c.resource))
        folded = sa.select(T.c.kind, T.c.resource, T.c.entity_id, sa.literal(0), T.c.count,
                           sa.func.coalesce(T.c.duration_ms, 0.0)).where(T.c.kind == LogKind.TOTAL.value)
        sums: dict[tuple[str, str | None], list[float]] = {}
        for kind, resource, measure, rows, n, ms in conn.execute(sa.union_all(kept, folded)):
            if kind == LogKind.TOTAL.value:  # a folded total: which kind and measure is in entity_id
                kind, _, what = str(measure).rpartition(".")
                entry = sums.setdefault((kind, resource), [0, 0, 0.0])
                if f".{what}" == _ROWS:
                    entry[0] += int(n)
                    entry[2] += float(ms)
                else:
                    entry[1] += int(n)
            else:
                entry = sums.setdefault((kind, resource), [0, 0, 0.0])
                entry[0] += int(rows)
                entry[1] += int(n)
                entry[2] += float(ms)
        return [LogTotal(kind, resource, int(v[0]), int(v[1]), float(v[2]))
                for (kind, resource), v in sorted(sums.items(), key=lambda item: (item[0][0], item[0][1] or ""))]

    def fold_and_delete(self, conn: Connection, before: datetime, limit: int, at: datetime) -> int:
        """Remove up to ``limit`` rows older than ``before`` (oldest first; totals never), adding the
        counted ones to their totals first. Returns how many were removed."""
        ids = list(conn.execute(sa.select(T.c.id).where(T.c.at < before, T.c.kind != LogKind.TOTAL.value)
                                .order_by(T.c.at, T.c.id).limit(limit)).scalars())
        if not ids:
            return 0
        sums = conn.execute(sa.select(T.c.kind, T.c.resource, sa.func.count(),
                                      sa.func.coalesce(sa.func.sum(T.c.count), 0),
                                      sa.func.coalesce(sa.func.sum(T.c.duration_ms), 0.0))
                            .where(T.c.id.in_(ids), T.c.kind.in_([k.value for k in COUNTED]))
                            .group_by(T.c.kind, T.c.resource)).all()
        for kind, resource, rows, n, ms in sums:
            self._add_total(conn, f"{kind}{_ROWS}", resource, int(rows), float(ms), at)
            self._add_total(conn, f"{kind}{_SUM}", resource, int(n), 0.0, at)
        conn.execute(T.delete().where(T.c.id.in_(ids)))
        return len(ids)

    def _add_total(self, conn: Connection, measure: str, resource: str | None, n: int, ms: float,
                   at: datetime) -> None:
        where = [T.c.kind == LogKind.TOTAL.value, T.c.entity_id == measure,
                 T.c.resource.is_(None) if resource is None else T.c.resource == resource]
        done = conn.execute(T.update().where(*where).values(count=T.c.count + n,
                                                            duration_ms=sa.func.coalesce(T.c.duration_ms, 0.0) + ms,
                                                            at=at)).rowcount
        if not done:
            conn.execute(_INSERT, {"kind": LogKind.TOTAL.value, "at": at, "resource": resource, "entity_id": measure,
                                   "count": n, "detail": "what retention removed of this kind, summed",
                                   "duration_ms": ms})
