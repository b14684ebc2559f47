"""Claim cost vs queue size: ``SyncHarness(sync).claim(500)`` with a small and a huge outbox.

    python bench/bench_claim.py [--quick] [--rounds N]

Setup (untimed): two outlet databases, one with SMALL and one with LARGE pending ``Order`` creates
(``pos_order`` rows and ``posync_outbox`` items, one per entity, inserted with a driver-level executemany).
Each round times one ``claim(500)`` (reclaim expired leases, find due items, read their entities, lease
them, all in one transaction), then puts the leased items back exactly as they were (untimed), so every
round sees the same queue. Rounds alternate between the two databases. No ``ANALYZE`` is run: the
planner sees what a host's fresh database gives it. O(batch) claiming means the ratio stays near 1.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from _common import Outlet, Timing, bench_args, make_outlet, prepare_database, print_header, workdir

from posync.testing import SyncHarness

BATCH = 500
_DT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DATETIME storage format


def build(path: Path, n: int, due_at: float) -> Outlet:
    engine = prepare_database(f"sqlite:///{path}")
    now = datetime.now(UTC)
    stamp = now.strftime(_DT)
    with engine.begin() as conn:
        for start in range(0, n, 100_000):
            ids = [f"o{i:08d}" for i in range(start, min(n, start + 100_000))]
            conn.exec_driver_sql(
                "INSERT INTO pos_order (id, table_no, total, status, version, cloud_version, sync_status, updated_at)"
                " VALUES (?, ?, ?, 'open', 1, NULL, 'pending', ?)",
                [(eid, f"T{i % 40}", 10_000 + i, stamp) for i, eid in enumerate(ids, start)],
            )
            conn.exec_driver_sql(
                "INSERT INTO posync_outbox (resource, entity_id, op, entity_version, base_version, status, attempts,"
                " available_at, changed_at) VALUES ('orders', ?, 'create', 1, NULL, 'pending', 0, ?, ?)",
                [(eid, due_at, stamp) for eid in ids],
            )
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return make_outlet(f"sqlite:///{path}", engine=engine)


def claim_round(outlet: Outlet, due_at: float) -> tuple[float, int]:
    started = time.perf_counter()
    leases, _ = SyncHarness(outlet.sync).claim(BATCH)
    elapsed = time.perf_counter() - started
    ids = [lease.item_id for lease in leases]
    with outlet.engine.begin() as conn:  # put the queue back as it was: pending, no key, no payload, no lease
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            conn.exec_driver_sql(
                "UPDATE posync_outbox SET status = 'pending', lease_owner = NULL, idempotency_key = NULL,"
                f" payload = NULL, available_at = ? WHERE id IN ({','.join('?' * len(chunk))})",
                (due_at, *chunk),
            )
    return elapsed, len(leases)


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], rounds=15, quick_rounds=5)
    small, large = (2_000, 50_000) if args.quick else (10_000, 1_000_000)
    print_header(f"claim({BATCH}) cost vs outbox size (SQLite file)", args, small=small, large=large)
    due_at = time.time() - 3600
    with workdir("claim") as tmp:
        t0 = time.perf_counter()
        outlets = {n: build(tmp / f"claim-{n}.db", n, due_at) for n in (small, large)}
        print(f"   (setup: {small + large:,} queued changes written in {time.perf_counter() - t0:.1f} s, untimed)")
        samples: dict[int, list[float]] = {small: [], large: []}
        leased: set[int] = set()
        try:
            for n in (small, large):  # warm-up: statement caches, the OS page cache
                claim_round(outlets[n], due_at)
            for r in range(args.rounds):
                for n in ((small, large) if r % 2 == 0 else (large, small)):
                    elapsed, got = claim_round(outlets[n], due_at)
                    samples[n].append(elapsed)
                    leased.add(got)
        finally:
            for outlet in outlets.values():
                outlet.close()
    ts, tl = Timing(tuple(samples[small])), Timing(tuple(samples[large]))
    print(ts.line(f"claim({BATCH}) with {small:,} queued", BATCH, "changes"))
    print(tl.line(f"claim({BATCH}) with {large:,} queued", BATCH, "changes"))
    print(f"   leased per claim: {sorted(leased)}")
    print(f"   ratio {large:,} / {small:,}: {tl.median / ts.median:,.2f}x (O(batch): near 1; queue grew "
          f"{large // small}x)")


if __name__ == "__main__":
    main()
