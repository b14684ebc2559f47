"""N processes started at the same instant on a fresh database: every one migrates and installs capture
(issue 15 item 8, issue 18 item 1). Real processes; SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.processes import finish

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 6

# what a POS worker runs at start-up (the README's lines), at a shared instant
WORKER = """
import sys, time
from datetime import UTC, datetime
import sqlmodel
import posync
from posync import ConflictStrategy, Direction, Registry, Tracked, TrackedEntity

class RaceOrder(Tracked, table=True):
    id: str = sqlmodel.Field(primary_key=True)
    total: int = 0

url, start_at = sys.argv[1], float(sys.argv[2])
engine = posync.create_engine(url)
registry = Registry([TrackedEntity(RaceOrder, "orders", Direction.PUSH, ConflictStrategy.LOCAL_WINS)])
while time.time() < start_at:
    time.sleep(0.0005)
if sys.argv[4] == "readme":
    with posync.migrations.locked(engine) as conn:    # the host's own DDL under posync's start-up lock
        posync.migrations.upgrade(conn)
        sqlmodel.SQLModel.metadata.create_all(conn)
else:  # the host's tables exist already: posync's own start-up alone
    posync.migrations.upgrade(engine)
posync.capture.install(engine, registry)
with engine.begin() as conn:
    conn.execute(RaceOrder.__table__.insert().values(id=sys.argv[3], total=1, version=1, sync_status="pending",
                                                       updated_at=datetime.now(UTC)))
print("started")
"""


def _start_together(url: str, tmp_path: Path, mode: str) -> list[subprocess.CompletedProcess[str]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    start_at = time.time() + 4.0  # every interpreter has imported posync by then
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's posync (the script's own directory comes first)
    procs = [subprocess.Popen([sys.executable, str(script), url, str(start_at), f"o{n}", mode], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for n in range(PROCESSES)]
    return finish(procs)


def _check(url: str, tmp_path: Path, mode: str) -> None:
    if mode == "posync":  # the host made its tables before; posync's tables are new
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE raceorder (id VARCHAR PRIMARY KEY, total INTEGER, version INTEGER, "
                                 "cloud_version INTEGER, sync_status VARCHAR, updated_at TIMESTAMP)"))
        engine.dispose()
    results = _start_together(url, tmp_path, mode)
    failed = [next((line for line in reversed(r.stderr.splitlines()) if "Error" in line), r.stderr[-300:])
              for r in results if r.returncode != 0]
    assert not failed, failed
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM posync_alembic_version")).scalars().all() == [
                posync_head()]
            queued = conn.execute(sa.text("SELECT count(*) FROM posync_outbox")).scalar_one()
        assert queued == PROCESSES  # every worker's first write was captured
    finally:
        engine.dispose()


def posync_head() -> str:
    from posync.migrations import HEAD

    return HEAD


MODES = ["posync", "readme"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_workers_started_together_on_a_fresh_sqlite_database(tmp_path: Path, mode: str) -> None:
    _check(f"sqlite:///{tmp_path / 'pos.db'}", tmp_path, mode)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("mode", MODES)
def test_workers_started_together_on_a_fresh_postgresql_database(pg_url: str, tmp_path: Path, mode: str) -> None:
    _check(pg_url, tmp_path, mode)


def test_a_worker_that_connects_while_another_migrates_waits_for_it(tmp_path: Path) -> None:
    """A fresh database is switched to WAL by each process's first connection; the switch fails at once,
    busy timeout or not, while another process writes (another worker's migration): it failed with
    'database is locked' (found by CI, one run in two of the six-process test); now it waits."""
    import sqlite3
    import threading

    import posync

    path = tmp_path / "pos.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another worker, mid-migration
    holder.execute("CREATE TABLE migrating (x INTEGER)")
    release = threading.Timer(6.0, lambda: holder.execute("COMMIT"))
    release.start()
    engine = posync.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        release.join()
        holder.close()
        engine.dispose()
