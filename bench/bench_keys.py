"""Idempotency keys and HO's unique index: posync's UUIDv7 keys against random (uuid4) keys.

    python bench/bench_keys.py [--quick] [--rounds N]

HO stores every applied key under a unique index on (outlet_id, idempotency_key), in the push's
transaction. This inserts N batches of 1,000 keys into the reference HO's own ``ho_idempotency`` table
(SQLite, through ``posync.create_engine``), one transaction per batch as HO does, and times each batch.
Random keys land on scattered index pages, so a batch costs more as the table grows; time-ordered keys
append at one end. Baseline (same run, rounds alternate): ``uuid.uuid4().hex``, the keys posync sent
before. Figure: the median batch over the last fifth of the run (the table at its largest).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from _common import bench_args, print_header, workdir

import posync
from posync.services.push.keys import idempotency_keys
from posync.testing.schema import idempotency

KeyMaker = Callable[[int], Iterable[str]]


def random_keys(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def insert_round(path: Path, make_keys: KeyMaker, batches: int) -> list[float]:
    engine = posync.create_engine(f"sqlite:///{path}")
    idempotency.create(engine)
    sql = ("INSERT INTO ho_idempotency (outlet_id, idempotency_key, request_hash, result, created_at) "
           "VALUES (?, ?, ?, ?, ?)")
    times: list[float] = []
    try:
        for _ in range(batches):
            rows = [("outlet-1", key, "0" * 64, '{"status":"applied","cloud_version":1}', "2026-11-23T00:00:00Z")
                    for key in make_keys(1_000)]
            with engine.begin() as conn:
                started = time.perf_counter()
                conn.connection.driver_connection.executemany(sql, rows)  # type: ignore[union-attr]
            times.append(time.perf_counter() - started)
    finally:
        engine.dispose()
    return times


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], rounds=3, quick_rounds=1)
    batches = 10 if args.quick else 100
    print_header("idempotency keys: 1,000-key batches into HO's unique index (SQLite)", args,
                 batches=batches, keys=batches * 1_000)
    tail = max(1, batches // 5)
    figures: dict[str, list[float]] = {"uuid4 (random)": [], "posync UUIDv7": []}
    makers: dict[str, KeyMaker] = {"uuid4 (random)": random_keys, "posync UUIDv7": idempotency_keys}
    with workdir("keys") as tmp:
        for r in range(args.rounds):
            for name, make in makers.items():
                times = insert_round(tmp / f"{name[:6]}-{r}.db", make, batches)
                figures[name].append(statistics.median(times[-tail:]))
    for name, values in figures.items():
        print(f"   {name:<16} median batch at the end: {statistics.median(values) * 1000:7.2f} ms "
              f"(rounds: {', '.join(f'{v * 1000:.2f}' for v in values)})")
    ratio = statistics.median(figures["uuid4 (random)"]) / statistics.median(figures["posync UUIDv7"])
    print(f"   random / UUIDv7: {ratio:,.1f}x (above 1: the time-ordered keys are cheaper)")


if __name__ == "__main__":
    main()
