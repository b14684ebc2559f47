"""The till's write latency while posync works: a host writer commits one ``Order`` every 5 ms (an ORM
session, in the same process as posync, on the same SQLite file) while posync drains a queue and while it
pulls a large catalogue.

    python bench/bench_host_latency.py [--quick] [--changes 30000] [--records 50000] [--batch-sizes 500,5000]

Figures, for each phase: the host's write latency p50 / p99 / max (ms) and how many writes it completed.
Baseline in the same run: the same writer while posync is idle. Each phase runs with posync's write gate
(``yield_to_host``, the default) and without it. Targets (issue #10 item 15): p99 < 50 ms, max < 200 ms.
The reference HO runs in its own process.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import bench_args, head_office, make_outlet, print_header, workdir
from bench_pull import seed_ho

from posync.demo.models import Order
from posync.testing import SyncHarness


class HostWriter:
    """Commits an Order every ``interval`` seconds and records how long each write took."""

    def __init__(self, Session: Any, interval: float, prefix: str) -> None:
        self.Session, self.interval, self.prefix = Session, interval, prefix
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        tick = time.perf_counter()
        while not self._stop.is_set():
            n += 1
            started = time.perf_counter()
            try:
                with self.Session() as s:
                    s.add(Order(id=f"{self.prefix}-{n:07d}", table_no="T1", total=n))
                    s.commit()
            except Exception:
                self.errors += 1
            self.latencies.append(time.perf_counter() - started)
            tick += self.interval
            time.sleep(max(0.0, tick - time.perf_counter()))

    def __enter__(self) -> HostWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def summary(label: str, w: HostWriter, seconds: float) -> str:
    ms = sorted(x * 1000 for x in w.latencies)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) >= 2 else ms[0]
    ok = "ok" if p99 < 50 and ms[-1] < 200 else "ABOVE TARGET"
    return (f"   {label:<46} writes {len(ms):>5} in {seconds:5.1f} s   p50 {statistics.median(ms):6.1f} ms   "
            f"p99 {p99:6.1f} ms   max {ms[-1]:7.1f} ms   errors {w.errors}   [{ok}]")


def phase(label: str, Session: Any, work: Callable[[], Any], interval: float) -> str:
    with HostWriter(Session, interval, prefix=f"host-{label.split()[0]}-{time.monotonic_ns()}") as writer:
        time.sleep(0.2)
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
    return summary(label, writer, seconds)


def queue_orders(outlet: Any, n: int, prefix: str = "q") -> None:
    """``n`` orders in one transaction, written with Core: posync's triggers queue each of them. Each
    outlet of a run has its own ``prefix``: HO is shared, and the same ids again would be conflicts."""
    table = Order.__table__  # type: ignore[attr-defined]
    rows = [{"id": f"{prefix}{i:07d}", "table_no": "T", "total": i, "status": "open", "version": 1,
             "sync_status": "pending"} for i in range(n)]
    with outlet.engine.begin() as conn:
        for i in range(0, n, 5000):
            conn.execute(table.insert(), rows[i : i + 5000])


def main() -> None:
    def extra(p: Any) -> None:
        p.add_argument("--changes", type=int, default=None)
        p.add_argument("--records", type=int, default=None)
        p.add_argument("--batch-sizes", default=None)
        p.add_argument("--interval", type=float, default=0.005)

    args = bench_args(__doc__.splitlines()[0], rounds=1, extra=extra)
    changes = args.changes or (3_000 if args.quick else 30_000)
    records = args.records or (5_000 if args.quick else 50_000)
    sizes = [int(x) for x in (args.batch_sizes or "500,5000").split(",")]
    print_header("host write latency while posync drains and pulls (SQLite, one process)", args,
                 changes=changes, records=records, batch_sizes=",".join(map(str, sizes)), interval=args.interval)
    with workdir("latency") as tmp:
        seed_ho(tmp / "ho.db", records)
        with head_office(tmp / "ho.db") as ho:
            for gate in (True, False):
                for size in sizes:
                    db = tmp / f"outlet-{gate}-{size}.db"
                    outlet = make_outlet(f"sqlite:///{db}", ho.url, push_batch_size=size, yield_to_host=gate,
                                         pull_page_size=1000)
                    try:
                        tag = f"gate {'on' if gate else 'off'}, batch {size}"
                        print(phase(f"idle (baseline) [{tag}]", outlet.Session, lambda: time.sleep(2.0),
                                    args.interval), flush=True)
                        queue_orders(outlet, changes, prefix=f"q-{int(gate)}-{size}-")
                        print(phase(f"drain {changes:,} [{tag}]", outlet.Session, SyncHarness(outlet.sync).drain,
                                    args.interval), flush=True)
                        print(phase(f"pull {records:,} [{tag}]", outlet.Session,
                                    lambda o=outlet: SyncHarness(o.sync).pull_all(force=True), args.interval),
                              flush=True)
                    finally:
                        outlet.close()
                        for f in Path(tmp).glob(db.name + "*"):
                            f.unlink()


if __name__ == "__main__":
    main()
