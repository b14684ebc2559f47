"""The till's write latency while a multi-worker POS drains a backlog (issue 18, item 5): the host's
multi-process mode of ``bench_host_latency.py``.

    python bench/bench_host_latency_workers.py [--quick] [--changes 20000] [--workers 4] [--db sqlite,postgres]

Four POS worker processes (``uvicorn --workers 4`` as posync sees it: each builds a ``Posync`` and calls
``start()``) share one outlet database holding ``--changes`` queued orders; the reference HO runs in its
own process and holds ``--records`` products for the outlet to pull. The backlog is queued first (the
outlet was offline); then a till commits one ``Order`` every 20 ms through an ORM session on the same
database while the workers start, drain the backlog and pull the catalogue, and each commit's latency is
recorded. The till runs in a POS worker process of its own, as under uvicorn: one that built its ``Posync``
(so posync sees its writes) but is not the syncer. Phases:

* baseline: nothing draining (the workers are not started yet);
* one syncer: the workers drain and pull with the syncer lease (the default: one of them syncs);
* every worker: the same with ``POSYNC_SINGLE_SYNCER=false`` (each worker syncs, as before the lease);
* foreign till (``--foreign``): the one-syncer phase with a till in a process that never built a
  ``Posync`` (a script writing the database on its own): posync cannot see it, only SQLite's locking.

Figures: p50 / p99 / max commit latency (ms) per phase, the time to drain and pull, and the ratio of each
phase's p99 to the baseline's. Targets (issue 18): p99 < 50 ms and max < 200 ms while the workers drain and pull.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlmodel
from _common import API_KEY, bench_args, head_office, print_header, workdir
from bench_host_latency import HostWriter
from bench_pull import seed_ho
from sqlalchemy.orm import sessionmaker

import posync
from posync.demo.models import Order, Product, pos_registry
from posync.demo.outlet import prepare_database

ROOT = Path(__file__).resolve().parent.parent
QUEUE_CHUNK = 200  # orders per transaction of the backlog the workers then drain
WARM_UP = 6.0  # seconds for the worker processes to import, start and settle who syncs
PG_URL = os.environ.get("POSYNC_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

WORKER = """
import signal, sys, threading
import posync
from posync.demo.models import pos_registry
engine = posync.create_engine(sys.argv[1])
sync = posync.Posync(engine, pos_registry(), posync.PosyncSettings(ho_url=sys.argv[2], api_key=sys.argv[3],
                                                                   sync_interval_seconds=1.0))
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
sync.start()
done.wait()
sync.close()
engine.dispose()
"""


def queue_orders(url: str, n: int, prefix: str) -> None:
    engine = posync.create_engine(url)
    table = Order.__table__  # type: ignore[attr-defined]
    rows = [{"id": f"{prefix}{i:07d}", "table_no": "T", "total": i, "status": "open", "version": 1,
             "sync_status": "pending"} for i in range(n)]
    for i in range(0, n, QUEUE_CHUNK):  # short transactions, as a host's import would write them
        with engine.begin() as conn:
            conn.execute(table.insert(), rows[i:i + QUEUE_CHUNK])
    engine.dispose()


def queued(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM posync_outbox")).scalar() or 0)


def pulled(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(Product)).scalar() or 0)  # type: ignore[arg-type]


def line(label: str, latencies: list[float], baseline_p99: float | None, extra: str = "") -> tuple[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) >= 2 else ms[0]
    ok = "ok" if p99 < 50 and ms[-1] < 200 else "ABOVE TARGET"
    ratio = f"   p99 x{p99 / baseline_p99:.2f} of baseline" if baseline_p99 else ""
    return (f"   {label:<34} commits {len(ms):>5}   p50 {statistics.median(ms):6.1f} ms   p99 {p99:6.1f} ms   "
            f"max {ms[-1]:7.1f} ms{ratio}{extra}   [{ok}]", p99)


def run(db: str, url: str, ho_url: str, tmp: Path, changes: int, records: int, workers: int, single: bool,
        baseline: bool, foreign: bool = False) -> list[str]:
    engine = prepare_database(url)
    settings = posync.PosyncSettings(ho_url=ho_url, api_key=API_KEY)
    # the till's worker process: its Posync (never started) is what lets posync see the till's writes
    till_sync = None if foreign else posync.Posync(engine, pos_registry(), settings)
    if foreign:
        posync.capture.install(engine, pos_registry())  # as the workers' Posync(...) will
    out: list[str] = []
    try:
        Session = sessionmaker(engine, class_=sqlmodel.Session)
        base_p99 = None
        if baseline:
            with HostWriter(Session, 0.02, prefix=f"base-{db}-{time.monotonic_ns()}") as till:
                time.sleep(3.0)
            text, base_p99 = line(f"[{db}] baseline (nothing draining)", till.latencies, None)
            out.append(text)
            print(text, flush=True)
        # the outlet was offline: its backlog is queued before any worker starts
        queue_orders(url, changes, prefix=f"{db}-{int(single)}-{time.monotonic_ns()}-")
        script = tmp / "worker.py"
        script.write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "POSYNC_SINGLE_SYNCER": str(single).lower()}
        with HostWriter(Session, 0.02, prefix=f"till-{db}-{int(single)}-{time.monotonic_ns()}") as till:
            started = time.monotonic()
            procs = [subprocess.Popen([sys.executable, str(script), url, ho_url, API_KEY], cwd=ROOT, env=env)
                     for _ in range(workers)]
            try:
                # the backlog is gone (the till's own orders keep coming, a second's worth at most) and the
                # catalogue is in
                while ((queued(engine) > 200 or pulled(engine) < records)
                       and time.monotonic() - started < 600):
                    time.sleep(0.2)
                drained = time.monotonic() - started
            finally:
                for p in procs:
                    p.send_signal(signal.SIGTERM)
                for p in procs:
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
        label = (f"[{db}] {workers} workers, {'one syncer' if single else 'every worker syncs'}"
                 f"{', foreign till' if foreign else ''}")
        text, _ = line(label, till.latencies, base_p99,
                       f"   start+drain {changes:,}+pull {records:,} in {drained:5.1f} s"
                       f"{'' if till.errors == 0 else f'   TILL ERRORS {till.errors}'}")
        out.append(text)
        print(text, flush=True)
    finally:
        if till_sync is not None:
            till_sync.close()
        engine.dispose()
    return out


def fresh_pg_database(name: str = "posync_bench_till") -> str:
    """A new database of its own on the test server (never the tests' ``test`` database itself)."""
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    def extra(p: Any) -> None:
        p.add_argument("--changes", type=int, default=None)
        p.add_argument("--workers", type=int, default=4)
        p.add_argument("--records", type=int, default=None, help="products HO holds for the outlet to pull")
        p.add_argument("--db", default="sqlite", help="sqlite, postgres or both (comma-separated)")
        p.add_argument("--foreign", action="store_true", help="also: a till in a process without posync")

    args = bench_args(__doc__.splitlines()[0], rounds=1, extra=extra)
    changes = args.changes or (2_000 if args.quick else 20_000)
    records = args.records if args.records is not None else (2_000 if args.quick else 20_000)
    print_header("the till's commit latency while a multi-worker POS drains and pulls (one outlet database)", args,
                 changes=changes, records=records, workers=args.workers, db=args.db)
    with workdir("till-workers") as tmp:
        seed_ho(tmp / "ho.db", records)
        with head_office(tmp / "ho.db") as ho:
            for db in args.db.split(","):
                phases = [(True, False), (False, False)] + ([(True, True)] if args.foreign else [])
                for n, (single, foreign) in enumerate(phases):
                    sqlite = f"sqlite:///{tmp / f'outlet-{n}.db'}"
                    url = fresh_pg_database() if db == "postgres" else sqlite
                    run(db, url, ho.url, tmp, changes, records, args.workers, single, baseline=n == 0,
                        foreign=foreign)


if __name__ == "__main__":
    main()
