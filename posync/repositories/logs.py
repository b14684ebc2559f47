"""The sync log: one row per batch, cycle or notable event, not per routine change.

The metrics count some kinds of rows (:data:`COUNTED`) since the outlet's first one, and must never go
back, while retention removes old rows. So the housekeeping first *folds* rows into ``total`` rows (rows,
their ``count`` and ``duration_ms`` summed per kind and resource) up to a watermark id, a chunk per
transaction, and retention removes only folded rows. :meth:`LogRepository.totals` reads the totals plus
the rows past the watermark in one statement (a fold committing meanwhile is seen wholly or not at all),
so a scrape costs the totals and the last hour's rows, whatever the log's size. Total rows are dated
1970-01-01: the ``at`` index finds them without reading the log.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
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
# duration_ms: their durations) or "<kind>.count" (count: their counts summed); one more, entity_id
# "folded_through", holds the watermark (count: the highest id folded)
_ROWS, _SUM, _WATERMARK = ".rows", ".count", "folded_through"
TOTALS_AT = datetime(1970, 1, 1, tzinfo=UTC)
_TOTALS = (T.c.at <= TOTALS_AT, T.c.kind == LogKind.TOTAL.value)
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
        # newest first down the ``at`` index, stopping at the first row of the kind (MAX would read them all)
        last: datetime | None = conn.execute(sa.select(T.c.at).where(T.c.kind == kind.value)
                                             .order_by(T.c.at.desc()).limit(1)).scalar()
        return last

    def newest_id(self, conn: Connection) -> int:
        """The newest row's id (0: none yet): a row written later has a greater one."""
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(T.c.id), 0))).scalar() or 0)

    def first_cycle_after(self, conn: Connection, after_id: int) -> RowMapping | None:
        """The first cycle (completed or failed) recorded after the row ``after_id``."""
        return conn.execute(sa.select(T).where(T.c.id > after_id,
                                               T.c.kind.in_([LogKind.CYCLE.value, LogKind.CYCLE_FAILED.value]))
                            .order_by(T.c.id).limit(1)).mappings().first()

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
        """Rows, counts and durations per counted kind and resource since the outlet's first row: the folded
        totals plus the rows past the watermark, in one statement."""
        watermark = (sa.select(sa.func.coalesce(sa.func.max(T.c.count), 0))
                     .where(*_TOTALS, T.c.entity_id == _WATERMARK).scalar_subquery())
        recent = (sa.select(T.c.kind, T.c.resource, sa.literal("").label("measure"), sa.func.count().label("rows"),
                            sa.func.coalesce(sa.func.sum(T.c.count), 0).label("n"),
                            sa.func.coalesce(sa.func.sum(T.c.duration_ms), 0.0).label("ms"))
                  .where(T.c.id > watermark, T.c.kind.in_([k.value for k in COUNTED])).group_by(T.c.kind, T.c.resource))
        folded = sa.select(T.c.kind, T.c.resource, T.c.entity_id, sa.literal(0), T.c.count,
                           sa.func.coalesce(T.c.duration_ms, 0.0)).where(*_TOTALS, T.c.entity_id != _WATERMARK)
        sums: dict[tuple[str, str | None], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        for kind, resource, measure, rows, n, ms in conn.execute(sa.union_all(recent, folded)):
            if kind == LogKind.TOTAL.value:  # which kind, and which measure, is in entity_id
                kind, _, what = str(measure).rpartition(".")
                entry = sums[(kind, resource)]
                if f".{what}" == _ROWS:
                    entry[0] += int(n)
                    entry[2] += float(ms)
                else:
                    entry[1] += int(n)
            else:
                entry = sums[(kind, resource)]
                entry[0] += int(rows)
                entry[1] += int(n)
                entry[2] += float(ms)
        return [LogTotal(kind, resource, int(v[0]), int(v[1]), float(v[2]))
                for (kind, resource), v in sorted(sums.items(), key=lambda item: (item[0][0], item[0][1] or ""))]

    def fold(self, conn: Connection, limit: int, settled_before: datetime) -> int:
        """Add up to ``limit`` rows past the watermark, oldest first, to the totals and move the watermark
        past them. Only rows dated before ``settled_before`` are folded: on PostgreSQL a transaction still
        open may hold a lower id than a committed row, and must not be skipped. Returns how many."""
        watermark_row = conn.execute(sa.select(T.c.id, T.c.count).where(*_TOTALS, T.c.entity_id == _WATERMARK)
                                     .order_by(T.c.id).limit(1).with_for_update()).mappings().first()
        watermark = int(watermark_row["count"]) if watermark_row is not None else 0
        rows = conn.execute(sa.select(T.c.id, T.c.kind, T.c.resource, T.c.count, T.c.duration_ms, T.c.at)
                            .where(T.c.id > watermark).order_by(T.c.id).limit(limit)).mappings().all()
        settled = settled_before.astimezone(UTC).replace(tzinfo=None) if settled_before.tzinfo else settled_before
        counted = {k.value for k in COUNTED}
        sums: dict[tuple[str, str | None], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        last = watermark
        for row in rows:
            at = row["at"].astimezone(UTC).replace(tzinfo=None) if row["at"].tzinfo else row["at"]
            if at >= settled:
                break  # a recent row: it and those after it wait for the next run
            last = row["id"]
            if row["kind"] in counted:
                entry = sums[(row["kind"], row["resource"])]
                entry[0] += 1
                entry[1] += row["count"] or 0
                entry[2] += row["duration_ms"] or 0.0
        if last == watermark:
            return 0
        for (kind, resource), (n_rows, n, ms) in sums.items():
            self._add_total(conn, f"{kind}{_ROWS}", resource, int(n_rows), float(ms))
            self._add_total(conn, f"{kind}{_SUM}", resource, int(n), 0.0)
        if watermark_row is None:
            self._insert_total(conn, _WATERMARK, None, last, 0.0)
        else:
            conn.execute(T.update().where(T.c.id == watermark_row["id"]).values(count=last))
        return sum(1 for row in rows if row["id"] <= last)

    def delete_folded(self, conn: Connection, before: datetime, limit: int) -> int:
        """Remove up to ``limit`` rows older than ``before`` that are folded into the totals (oldest first;
        never the totals). Returns how many."""
        watermark = (sa.select(sa.func.coalesce(sa.func.max(T.c.count), 0))
                     .where(*_TOTALS, T.c.entity_id == _WATERMARK).scalar_subquery())
        ids = list(conn.execute(sa.select(T.c.id).where(T.c.at < before, T.c.at > TOTALS_AT, T.c.id <= watermark,
                                                        T.c.kind != LogKind.TOTAL.value)
                                .order_by(T.c.at, T.c.id).limit(limit)).scalars())
        if ids:
            conn.execute(T.delete().where(T.c.id.in_(ids)))
        return len(ids)

    def _add_total(self, conn: Connection, measure: str, resource: str | None, n: int, ms: float) -> None:
        where = [*_TOTALS, T.c.entity_id == measure,
                 T.c.resource.is_(None) if resource is None else T.c.resource == resource]
        done = conn.execute(T.update().where(*where).values(
            count=T.c.count + n, duration_ms=sa.func.coalesce(T.c.duration_ms, 0.0) + ms)).rowcount
        if not done:
            self._insert_total(conn, measure, resource, n, ms)

    def _insert_total(self, conn: Connection, measure: str, resource: str | None, n: int, ms: float) -> None:
        conn.execute(_INSERT, {"kind": LogKind.TOTAL.value, "at": TOTALS_AT, "resource": resource, "entity_id": measure,
                               "count": n, "detail": "the metrics' running total of folded rows", "duration_ms": ms})
