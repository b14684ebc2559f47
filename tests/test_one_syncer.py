"""One syncer per outlet database (issue 18, items 3 and 4): four worker processes on one database poll HO
as one; after the syncer is SIGKILLed another takes over and pushes the batch the dead one had in flight
without waiting out its item leases; a trigger in a worker that is not the syncer reaches the syncer.
Real processes; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlmodel

from posync.demo.models import Order
from posync.demo.outlet import prepare_database
from posync.testing import ReferenceHO, serve_in_thread
from tests.processes import stop
from tests.support import API_KEY

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4

# a POS worker process: the README's start-up, then posync runs in the background until SIGTERM
WORKER = """
import json, os, signal, sys, threading, time
from pathlib import Path
import posync
from posync.demo.models import pos_registry
from posync.testing import SyncHarness

url, ho_url, control = sys.argv[1], sys.argv[2], Path(sys.argv[3])
engine = posync.create_engine(url)
sync = posync.Posync(engine, pos_registry(), posync.PosyncSettings(
    ho_url=ho_url, api_key=sys.argv[4], request_timeout=20.0, sync_interval_seconds=float(sys.argv[5])))
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
sync.start()
lease = SyncHarness(sync).lease
print(lease.holder if lease else "-", flush=True)
ask, tell = control / f"trigger-{os.getpid()}", control / f"status-{os.getpid()}"
while not done.wait(0.1):
    if ask.exists():
        ask.unlink()
        sync.trigger()
    if tell.exists():
        tell.unlink()
        answer = json.dumps(sync.manager.status().as_dict())
        (control / f"status-{os.getpid()}.json.part").write_text(answer)
        (control / f"status-{os.getpid()}.json.part").rename(control / f"status-{os.getpid()}.json")
sync.close()
"""


class Counting:
    """HO behind a counter of requests by path, and a switch that holds pushes until it is released."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: Counter[str] = Counter()
        self.hold_pushes = threading.Event()
        self.down = threading.Event()  # every API call answers 503

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths[scope["path"]] += 1
            if self.down.is_set() and scope["path"].startswith("/api/"):
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"status":"error","code":"DOWN","message":"down"}'})
                return
            while scope["method"] == "POST" and "push" in scope["path"] and self.hold_pushes.is_set():
                await asyncio.sleep(0.05)
        await self.app(scope, receive, send)

    def versions(self) -> int:
        return sum(n for path, n in self.paths.items() if path.endswith("/version/"))


@pytest.fixture
def ho(db_url: str, tmp_path: Path) -> Iterator[tuple[ReferenceHO, Counting, str]]:
    ref = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None})
    counting = Counting(ref.app)
    server = serve_in_thread(counting)
    try:
        yield ref, counting, server.url
    finally:
        counting.hold_pushes.clear()
        server.stop()
        ref.close()


class Fleet:
    """WORKERS processes of one POS on one outlet database."""

    def __init__(self, url: str, ho_url: str, tmp_path: Path, interval: float, env: dict[str, str]) -> None:
        self.url = url
        self.control = tmp_path
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.procs = [subprocess.Popen([sys.executable, str(script), url, ho_url, str(tmp_path), API_KEY,
                                        str(interval)], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=full_env)
                      for _ in range(WORKERS)]
        self.owners = {p.pid: (p.stdout.readline().strip() if p.stdout else "") for p in self.procs}
        self.engine = sa.create_engine(url)

    def holder(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT holder FROM posync_lease WHERE name = 'syncer'")).scalar()

    def holder_pid(self, deadline: float = 30.0) -> int:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            holder = self.holder()
            for pid, owner in self.owners.items():
                if holder == owner and self._alive(pid):
                    return pid
            time.sleep(0.1)
        raise AssertionError(f"no live worker holds the syncer lease: {self.holder()!r}")

    def _alive(self, pid: int) -> bool:
        return any(p.pid == pid and p.poll() is None for p in self.procs)

    def sell(self, *ids: str) -> None:
        with sqlmodel.Session(self.engine) as session:  # the till's own write, in the test process
            session.add_all(Order(id=order_id, total=1) for order_id in ids)
            session.commit()

    def statuses(self) -> list[dict[str, Any]]:
        """Every live worker's ``status()``, asked in that worker's own process."""
        live = [p.pid for p in self.procs if p.poll() is None]
        for pid in live:
            (self.control / f"status-{pid}").touch()
        answers = []
        for pid in live:
            path = self.control / f"status-{pid}.json"
            _until(path.exists, 30)
            answers.append(json.loads(path.read_text()))
            path.unlink()
        return answers

    def online(self) -> bool | None:
        with self.engine.connect() as conn:
            online = conn.execute(sa.text("SELECT online FROM posync_outlet WHERE last_cycle_at IS NOT NULL")).scalar()
        return None if online is None else bool(online)

    def close(self) -> None:
        stop(self.procs)
        self.engine.dispose()


def _until(what: Any, deadline: float) -> float:
    """Seconds until ``what()`` is true (an AssertionError after ``deadline``: liveness, not speed)."""
    start = time.monotonic()
    while not what():
        assert time.monotonic() - start < deadline, "not within the deadline"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.parametrize("single_syncer", [True, False], ids=["one-syncer", "every-worker"])
def test_four_workers_poll_ho_as_one(db_url: str, ho: tuple[ReferenceHO, Counting, str], tmp_path: Path,
                                     single_syncer: bool) -> None:
    _, counting, ho_url = ho
    prepare_database(db_url).dispose()
    fleet = Fleet(db_url, ho_url, tmp_path, interval=1.0, env={"POSYNC_SINGLE_SYNCER": str(single_syncer).lower()})
    try:
        if single_syncer:
            fleet.holder_pid()
        time.sleep(2.0)  # every worker started and ticking
        before = counting.versions()
        time.sleep(6.0)
        polls = counting.versions() - before
        print(f"\n{WORKERS} workers, 1 s interval, 6 s: {polls} version polls of HO "
              f"({'one syncer' if single_syncer else 'every worker syncs'})")
        if single_syncer:
            assert polls <= 6 * 2 + 2  # one worker's cycles (a cycle may poll twice), never four workers'
            assert fleet.holder() in fleet.owners.values()
        else:
            assert polls >= 3 * 6  # the baseline the lease removes: every worker polls
    finally:
        fleet.close()


def test_a_killed_syncers_batch_reaches_ho_without_waiting_out_its_item_leases(
        db_url: str, ho: tuple[ReferenceHO, Counting, str], tmp_path: Path) -> None:
    ref, counting, ho_url = ho
    prepare_database(db_url).dispose()
    fleet = Fleet(db_url, ho_url, tmp_path, interval=1.0, env={})
    try:
        victim = fleet.holder_pid()
        counting.hold_pushes.set()  # the syncer's next push hangs on the wire
        sales = [f"k{n}" for n in range(50)]
        fleet.sell(*sales)
        with fleet.engine.connect() as conn:
            _until(lambda: conn.execute(sa.text("SELECT count(*) FROM posync_outbox WHERE status = 'inflight'"))
                   .scalar() == len(sales), 30)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        counting.hold_pushes.clear()
        took_over = _until(lambda: fleet.holder() not in (None, fleet.owners[victim]), 30)
        at_ho = _until(lambda: set(sales) <= set(ref.records("orders")), 45 - took_over)
        print(f"\nSIGKILL of the syncer: another took over after {took_over:.1f} s; its 50 in-flight sales "
              f"were at HO {time.monotonic() - killed:.1f} s after the kill (the item lease is 60 s)")
        assert at_ho + took_over < 50  # well before the dead holder's 60 s item leases ran out
    finally:
        fleet.close()


def test_a_trigger_in_any_worker_reaches_the_syncer(db_url: str, ho: tuple[ReferenceHO, Counting, str],
                                                     tmp_path: Path) -> None:
    ref, _, ho_url = ho
    prepare_database(db_url).dispose()
    # no cycle but the first, unless asked; no push on commit either: the trigger alone brings the sale
    fleet = Fleet(db_url, ho_url, tmp_path, interval=3600.0, env={"POSYNC_PUSH_ON_COMMIT": "false"})
    try:
        holder = fleet.holder_pid()
        time.sleep(1.0)  # the holder's first cycle is over
        fleet.sell("t1")
        other = next(pid for pid in fleet.owners if pid != holder)
        (tmp_path / f"trigger-{other}").touch()
        waited = _until(lambda: "t1" in ref.records("orders"), 30)
        print(f"\ntrigger in a worker that is not the syncer: the sale was at HO {waited:.1f} s later")
    finally:
        fleet.close()


def test_status_is_the_outlets_whichever_worker_answers(db_url: str, ho: tuple[ReferenceHO, Counting, str],
                                                         tmp_path: Path) -> None:
    _, counting, ho_url = ho
    prepare_database(db_url).dispose()
    counting.down.set()
    fleet = Fleet(db_url, ho_url, tmp_path, interval=3600.0, env={})  # cycles only when asked
    try:
        holder = fleet.holder_pid()
        _until(lambda: fleet.online() is False, 30)
        down = fleet.statuses()
        assert [s["online"] for s in down] == [False] * WORKERS
        assert len({s["last_error"] for s in down}) == 1 and "503" in down[0]["last_error"]
        counting.down.clear()
        other = next(pid for pid in fleet.owners if pid != holder)
        (tmp_path / f"trigger-{other}").touch()  # one worker's trigger; the syncer's cycle succeeds
        _until(lambda: fleet.online() is True, 30)
        up = fleet.statuses()
        assert [(s["online"], s["last_error"]) for s in up] == [(True, None)] * WORKERS
        assert len({s["last_cycle_at"] for s in up}) == 1
        # seed 003's metrics and the verdict too: from the cycles the syncer recorded in the database
        shared = {(s["cycles"], s["success_rate"], s["failure_rate"], s["avg_duration_seconds"], s["last_success_at"],
                   s["last_pull_at"], s["healthy"], tuple(s["reasons"])) for s in up}
        assert len(shared) == 1
        assert up[0]["cycles"] >= 2 and 0 < up[0]["failure_rate"] < 1
        assert up[0]["last_success_at"] == up[0]["last_cycle_at"]
    finally:
        fleet.close()
