"""The till's write latency while a multi-worker POS drains a backlog (issue 18, item 5): the host's
multi-process mode of ``bench_host_latency.py``.

    python bench/bench_host_latency_workers.py [--quick] [--changes 20000] [--workers 4] [--db sqlite,postgres]

Four POS worker processes (``uvicorn --workers 4`` as posync sees it: each builds a ``Posync`` and calls
``start()``) share one outlet database holding ``--changes`` queued orders; the reference HO runs in its
own process. A till in this process commits one ``Order`` every 20 ms through an ORM session on the same
database and records each commit's latency, in three phases:

* baseline: nothing draining (the workers are not started yet);
* one syncer: the workers, started and idle, get the backlog (200 orders a transaction) and drain it with the
  syncer lease (the default: one of them syncs);
* every worker: the same with ``POSYNC_SINGLE_SYNCER=false`` (each worker drains, as before the lease).

Figures: p50 / p99 / max commit latency (ms) per phase, the drain time, and the ratio of each phase's p99
to the baseline's. Targets (issue 18): p99 < 50 ms and max < 200 ms while the workers drain.
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
from sqlalchemy.orm import sessionmaker

import posync
from posync.demo.models import Order, pos_registry
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


def line(label: str, latencies: list[float], baseline_p99: float | None, extra: str = "") -> tuple[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) >= 2 else ms[0]
    ok = "ok" if p99 < 50 and ms[-1] < 200 else "ABOVE TARGET"
    ratio = f"   p99 x{p99 / baseline_p99:.2f} of baseline" if baseline_p99 else ""
    return (f"   {label:<34} commits {len(ms):>5}   p50 {statistics.median(ms):6.1f} ms   p99 {p99:6.1f} ms   "
            f"max {ms[-1]:7.1f} ms{ratio}{extra}   [{ok}]", p99)


def run(db: str, url: str, ho_url: str, tmp: Path, changes: int, workers: int, single: bool,
        baseline: bool) -> list[str]:
    engine = prepare_database(url)
    posync.capture.install(engine, pos_registry())  # as the workers' Posync(...) will: the backlog is captured
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
        script = tmp / "worker.py"
        script.write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "POSYNC_SINGLE_SYNCER": str(single).lower()}
        procs = [subprocess.Popen([sys.executable, str(script), url, ho_url, API_KEY], cwd=ROOT, env=env)
                 for _ in range(workers)]
        try:
            time.sleep(WARM_UP)  # the workers are up and idle: what is measured is the drain, not start-up
            with HostWriter(Session, 0.02, prefix=f"till-{db}-{int(single)}-{time.monotonic_ns()}") as till:
                started = time.monotonic()
                queue_orders(url, changes, prefix=f"{db}-{int(single)}-{time.monotonic_ns()}-")
                # the backlog is gone (the till's own orders keep coming, a second's worth at most)
                while queued(engine) > 200 and time.monotonic() - started < 600:
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
        label = f"[{db}] {workers} workers, {'one syncer' if single else 'every worker syncs'}"
        text, _ = line(label, till.latencies, base_p99, f"   drained {changes:,} in {drained:5.1f} s")
        out.append(text)
        print(text, flush=True)
    finally:
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
        p.add_argument("--db", default="sqlite", help="sqlite, postgres or both (comma-separated)")

    args = bench_args(__doc__.splitlines()[0], rounds=1, extra=extra)
    changes = args.changes or (2_000 if args.quick else 20_000)
    print_header("the till's commit latency while a multi-worker POS drains (one outlet database)", args,
                 changes=changes, workers=args.workers, db=args.db)
    with workdir("till-workers") as tmp, head_office(tmp / "ho.db") as ho:
        for db in args.db.split(","):
            for single in (True, False):
                sqlite = f"sqlite:///{tmp / f'outlet-{int(single)}.db'}"
                url = fresh_pg_database() if db == "postgres" else sqlite
                run(db, url, ho.url, tmp, changes, args.workers, single, baseline=single)


if __name__ == "__main__":
    main()
