"""Status and metrics on a sync log that holds what retention keeps (issue 17, items 1 and 4).

    python bench/bench_status.py [--quick] [--rounds N] [--days 14] [--db URL]

Every cycle leaves a ``posync_sync_log`` row, so a status read and a Prometheus scrape work over 14 days
of them (at the default 30 s interval: 40,320 cycle rows, plus push batches and pulls). Figures: one
``status()``, one scrape (the collector's families rendered, as ``GET /metrics`` does minus HTTP), one
cycle's record (the syncer's write after each cycle), and the housekeeping's retention of a day of rows.
Baseline in the same run: the same reads on an empty log; the ratio says what the log's size costs.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import prometheus_client
from _common import bench_args, make_outlet, measure, print_header, workdir

from posync.http.metrics import families
from posync.models.log import SyncLogEntry
from posync.services.status import CycleOutcome

T = SyncLogEntry.__table__  # type: ignore[attr-defined]
INTERVAL = 30  # seconds between cycles (the default)


def fill(engine: Any, days: float, now: datetime) -> int:
    rows: list[dict[str, Any]] = []
    cycles = int(days * 86400 / INTERVAL)
    rng = random.Random(7)
    for i in range(cycles):
        at = now - timedelta(seconds=(cycles - i) * INTERVAL)
        failed = rng.random() < 0.02
        rows.append({"kind": "cycle_failed" if failed else "cycle", "at": at, "resource": None, "entity_id": None,
                     "count": 0, "duration_ms": rng.uniform(10, 80), "detail": "HO away" if failed else None})
        if i % 2 == 0:  # a push batch every other cycle (a busy till pushes on commit too)
            rows.append({"kind": "push", "at": at, "resource": None, "entity_id": None, "count": rng.randint(1, 20),
                         "duration_ms": rng.uniform(5, 50), "detail": "applied"})
        if i % 10 == 0:  # something new at HO now and then
            rows.append({"kind": "pull", "at": at, "resource": rng.choice(["products", "categories", "promotions"]),
                         "entity_id": None, "count": rng.randint(1, 50), "duration_ms": rng.uniform(5, 60),
                         "detail": "1 pages"})
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(T.insert(), rows[start:start + 5000])
    return len(rows)


def analyze(engine: Any) -> None:
    """PostgreSQL's planner statistics, as autovacuum keeps them after a bulk change (without them the
    first minutes after a bulk load plan the scrape's statements as if the table were empty)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE posync_sync_log")


def scrape(outlet: Any) -> bytes:
    registry = prometheus_client.CollectorRegistry(auto_describe=False)

    class Once:
        def collect(self) -> Any:
            return families(outlet.sync.manager.metrics())

    registry.register(Once())  # type: ignore[arg-type]
    return bytes(prometheus_client.generate_latest(registry))


def main() -> None:
    args = bench_args(__doc__ or "", rounds=15, extra=lambda p: (p.add_argument("--days", type=float, default=14.0),
                                                                 p.add_argument("--db", default=None)))
    days = 1.0 if args.quick else args.days
    with workdir("status") as path:
        url = args.db or f"sqlite:///{path / 'outlet.db'}"
        outlet = make_outlet(url)
        try:
            print_header("status and metrics over the sync log", args, days=days, db=url.split(":")[0])
            now = datetime.now(UTC)
            empty_status = measure(outlet.sync.status, args.rounds)
            empty_scrape = measure(lambda: scrape(outlet), args.rounds)
            rows = fill(outlet.engine, days, now)
            analyze(outlet.engine)
            print(f"   sync log: {rows:,} rows ({days:g} days at one cycle per {INTERVAL} s)")
            full_status = measure(outlet.sync.status, args.rounds)
            full_scrape = measure(lambda: scrape(outlet), args.rounds)
            record = measure(lambda: outlet.sync.manager.record_cycle(online=True, last_error=None, auth_error=None,
                                                                      cycle=CycleOutcome(None, 0.02)), args.rounds)
            print(empty_status.line("status(), empty log (baseline)"))
            print(full_status.line(f"status(), {rows:,} log rows"))
            print(f"   {'ratio status full / empty':<50} {full_status.median / empty_status.median:,.2f}x")
            print(empty_scrape.line("scrape, empty log (baseline)"))
            print(full_scrape.line(f"scrape, {rows:,} log rows, none folded yet"))
            print(f"   {'ratio scrape unfolded / empty':<50} {full_scrape.median / empty_scrape.median:,.2f}x")
            print(record.line("a cycle's record (the syncer's write)"))
            keep = days - 1 if days > 1 else days / 2  # retention removes the oldest day
            retention = measure(lambda: outlet.sync.manager.purge_logs(keep), 1)
            analyze(outlet.engine)
            print(retention.line(f"first housekeeping: fold {rows:,} rows, remove {days - keep:g} day(s)"))
            folded_scrape = measure(lambda: scrape(outlet), args.rounds)
            print(folded_scrape.line("scrape after the housekeeping folded the log"))
            print(f"   {'ratio scrape folded / empty':<50} {folded_scrape.median / empty_scrape.median:,.2f}x")
        finally:
            outlet.close()


if __name__ == "__main__":
    main()
