"""Crash test: a photo-syncing outlet process is killed with SIGKILL at random points, again and again.

The reference HO's photo side runs in this process (its byte answers drip, so kills land mid-transfer);
``tests/photo_crash_worker.py`` forks a worker per start that runs passes in a loop. Between kills HO
edits, adds and deletes photos. After every kill, before the next start, nothing corrupt or partial may be
visible in the store (every object is a complete version HO had under that key; every ``synced`` row
points at bytes with its checksum). After the last kill an in-process pass runs until clean, and the store
must equal HO byte for byte. Kills, resumes (Range requests) and passes are printed for the CI log.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import posync
from posync.migrations import upgrade
from posync.models.photo import PhotoRecord
from posync.photos import PhotoSettings, build_photo_sync
from posync.stores import DatabaseStore, FileStore, PhotoStore
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO
from tests.test_crash import Lines, stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]


def sound(store: PhotoStore, engine: Any, ever: dict[str, set[str]]) -> None:
    for obj in store.list():
        got = store.hash(obj.key)
        assert got in ever.get(obj.key, set()), f"{obj.key}: visible bytes HO never had (partial or corrupt)"
    with engine.connect() as conn:
        for r in conn.execute(sa.select(PHOTOS).where(PHOTOS.c.sync_status == "synced")):
            assert store.hash(r.stored_key) == r.checksum, f"{r.id}: synced row without its bytes"


def ho_edits(ho: PhotoHO, rng: random.Random, ever: dict[str, set[str]], n: int) -> None:
    def remember(pid: str) -> None:
        p = ho.photos[pid]
        ever.setdefault(p.object_key, set()).add(hashlib.md5(p.data, usedforsecurity=False).hexdigest())

    live = sorted(ho.photos)
    if live and rng.random() < 0.7:
        pid = rng.choice(live)
        ho.update_photo(pid, rng.randbytes(rng.randint(20_000, 1_200_000)))
        remember(pid)
    if rng.random() < 0.4:
        remember(ho.put_photo(f"prod-{n % 6}", rng.randbytes(rng.randint(20_000, 1_200_000))))
    if len(live) > 8 and rng.random() < 0.15:
        ho.delete_photo(rng.choice(live))


@pytest.mark.parametrize(("db", "store_kind", "kills"), [
    ("sqlite", "fs", 55), pytest.param("postgres", "db", 20, marks=pytest.mark.postgres)])
def test_sigkill_during_photo_sync_resumes_and_ends_equal_to_ho(db: str, store_kind: str, kills: int,
                                                                request: pytest.FixtureRequest, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}" if db == "sqlite" else request.getfixturevalue("pg_url")
    engine = posync.create_engine(url)
    upgrade(engine)
    store: PhotoStore = FileStore(tmp_path / "s") if store_kind == "fs" else DatabaseStore(
        engine, staging=tmp_path / "staging")
    spec = f"fs:{tmp_path / 's'}" if store_kind == "fs" else "db"
    rng = random.Random(20261201 if db == "sqlite" else 1201)
    ho = PhotoHO()
    ever: dict[str, set[str]] = {}
    with serve_in_thread(ho.app) as server:
        ho.base_url = server.url
        for n in range(24):
            ho_edits(ho, rng, ever, n)
            pid = ho.put_photo(f"prod-{n % 6}", rng.randbytes(rng.randint(20_000, 1_200_000)))
            ever.setdefault(ho.photos[pid].object_key, set()).add(ho.photos[pid].checksum)
        ho.byte_faults.update(drip_interval=0.004, seed=5)  # ~4 MB/s per transfer: kills land mid-body
        log_path = tmp_path / "worker.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.photo_crash_worker", "--db", url, "--ho", server.url,
                 "--store", spec, "--staging", str(tmp_path / "staging")],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
            assert proc.stdin is not None and proc.stdout is not None
            out = Lines(proc.stdout)
            alive: list[int] = []
            done = 0
            try:
                for run in range(kills):
                    proc.stdin.write(f"start {run}\n")
                    proc.stdin.flush()
                    pid = int(out.next(60, "fork").split()[1])
                    alive.append(pid)
                    assert out.next(60, "ready") == "ready"
                    time.sleep(rng.uniform(0.05, 0.7))
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    assert out.next(30, "reap") == f"exited {pid} -9", log_path.read_text()[-3000:]
                    alive.remove(pid)
                    done += 1
                    sound(store, engine, ever)  # after every kill: nothing partial or corrupt is visible
                    ho_edits(ho, rng, ever, run)
            finally:
                for pid in alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.stdin.close()
                stop(proc)
        ho.byte_faults.reset()
        resumed = len(ho.ranges)
        s = PhotoSettings(ho_url=server.url, username="posync", password="posync-password",
                          photo_max_deletes=1000)
        with build_photo_sync(s, engine=engine, store=store) as sync:
            deadline = time.monotonic() + 60
            while not (report := sync.sync(full=True)).ok:
                assert time.monotonic() < deadline, report.as_dict()
            contents = {o.key: b"".join(store.read(o.key)) for o in store.list()}
            assert contents == {k: d for k, (_, d) in ho.expected().items()}
            counts = sync.status()["photos"]
    engine.dispose()
    assert done == kills and counts["synced"] == len(ho.photos)
    with capsys.disabled():
        sys.stdout.write(f"\nphoto crash test ({db}, {store_kind} store): kills={done} resumed_ranges={resumed} "
                         f"photos={len(ho.photos)} requests={ho.requests['total']}\n")
