"""The till goes first across processes (issue 18, item 5): posync's write transactions in one worker
process wait for the host's writes open in another (posync/host_writes.py), so a till's commit never
waits behind a stream of posync transactions, only behind the one running when it came. (PostgreSQL
locks rows, not the database: nothing to order there; bench/bench_host_latency_workers.py measures both.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import sqlalchemy as sa

import posync
from posync.db import WriteGate
from tests.processes import stop

ROOT = Path(__file__).resolve().parent.parent
TILL = sa.Table("till_orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
POSYNC_RUNS = sa.Table("posync_runs", sa.MetaData(), sa.Column("n", sa.Integer, primary_key=True),
                       sa.Column("began_ns", sa.BigInteger, nullable=False))

# another worker process of the POS, draining: posync's write transactions back to back, 20 ms each,
# each recording when it began (CLOCK_MONOTONIC is one clock for every process on the machine)
SYNCER = textwrap.dedent("""
    import sys, time
    import sqlalchemy as sa
    import posync
    from posync.db import write_transaction
    engine = posync.create_engine(sys.argv[1])
    until = time.monotonic() + float(sys.argv[2])
    n = 0
    print("ready", flush=True)
    while time.monotonic() < until:
        n += 1
        with write_transaction(engine) as conn:
            began = time.monotonic_ns()
            conn.exec_driver_sql("INSERT INTO posync_runs (n, began_ns) VALUES (?, ?)", (n, began))
            time.sleep(0.02)
    engine.dispose()
""")


def _began_between(engine: sa.Engine, start: int, end: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(POSYNC_RUNS)
                                .where(POSYNC_RUNS.c.began_ns > start, POSYNC_RUNS.c.began_ns < end)).scalar_one())


def test_a_till_write_in_one_process_waits_for_at_most_one_posync_transaction_of_another(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outlet.db'}"
    engine = posync.create_engine(url)
    TILL.metadata.create_all(engine)
    POSYNC_RUNS.metadata.create_all(engine)
    gate = WriteGate()  # what Posync(engine, ...) attaches in every worker process
    gate.attach(engine)
    script = tmp_path / "syncer.py"
    script.write_text(SYNCER)
    syncer = subprocess.Popen([sys.executable, str(script), url, "30"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert syncer.stdout is not None and syncer.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the syncer's transactions follow one another
        overtaken = []
        for i in range(8):
            start = time.monotonic_ns()
            with engine.begin() as conn:
                conn.execute(TILL.insert().values(id=i))
                wrote = time.monotonic_ns()
            # posync transactions that began after the till's write was asked for and before it got the
            # lock: the one that won the race to the lock at most; never a stream of them
            overtaken.append(_began_between(engine, start, wrote))
            time.sleep(0.05)
        assert max(overtaken) <= 1, f"posync transactions overtook the till's write: {overtaken}"
        assert syncer.poll() is None, "the syncer stopped early: the test measured nothing"
    finally:
        stop([syncer])
        engine.dispose()
