"""Photo figures beside the transfer benchmark:

* ``rss``: peak RSS while replicating one 256 MB photo from nginx (HO's own HTTP when nginx is absent) into
  each store (``--rss-stores fs,db,s3``: the filesystem, the chunked database store on SQLite, S3 on moto's
  server in the parent process), above the idle process (the same process, everything imported and wired,
  before the pass); target < 32 MB on every store;
* ``noop``: a no-op incremental resync of 10,000 unchanged photos: requests HO saw and seconds
  (target <= 2 requests, < 200 ms); baseline: seed 000's resync (one listing request per 100 photos, since
  it re-lists everything from its MAX(last_sync_at) on the outlet's clock);
* ``stores``: photos/s into the S3 store (moto's ThreadedMotoServer) and the database store (SQLite).

    .venv/bin/python bench/bench_photo_misc.py [--only rss,noop,stores] [--quick] [--rss-stores fs,db,s3]
                                                [--rss-mb 256]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import Timing, bench_args, print_header
from bench_photo_transfer import TMPFS, make_photos, nginx

import posync
from posync.migrations import upgrade
from posync.photos import PhotoSettings, build_photo_sync
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO

HERE = Path(__file__).resolve().parent


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_child(api_url: str, dest: str, kind: str, s3_endpoint: str, size_mb: int) -> None:
    """Run in a fresh process: idle RSS after wiring, then the peak over one pass."""
    db = posync.create_engine(f"sqlite:///{dest}/o.db")
    upgrade(db)
    stores = {"fs": {"photo_store": f"fs:{dest}/s"}, "db": {"photo_store": "db"},
              "s3": {"photo_store": "s3://bench-rss", "photo_s3_endpoint": s3_endpoint,
                     "photo_s3_access_key": "testing", "photo_s3_secret_key": "testing",
                     "photo_s3_region": "us-east-1"}}
    s = PhotoSettings(ho_url=api_url, username="posync", password="posync-password",
                      photo_staging_dir=f"{dest}/staging", **stores[kind])
    with build_photo_sync(s, engine=db) as sync:
        sync.status()
        sync.store.staging_dir()
        if kind == "s3":
            sync.store.stat("products/none.jpg")  # connected, bucket made: the idle figure includes the client
        # ru_maxrss survives exec (it would be our parent's), so: reset the high-water mark, then read it
        Path("/proc/self/clear_refs").write_text("5")
        idle = _status_kb("VmRSS")
        report = sync.sync()
        peak = _status_kb("VmHWM")
    assert report.ok and report.bytes >= size_mb * 1024 * 1024, report.as_dict()
    print(f"{idle} {peak}")


@contextmanager
def _origin(root: Path, ho: PhotoHO, api_url: str) -> Iterator[str]:
    """nginx over ``root`` when it is installed, else HO's own HTTP (the origin is not the measured process)."""
    if shutil.which("nginx") is None:
        yield api_url
        return
    with nginx(root) as origin:
        yield origin


def bench_rss(size_mb: int, kinds: list[str]) -> None:
    from posync.testing.photos.s3 import moto_s3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="posync-bench-rss-", dir=TMPFS))
    os.chmod(root, 0o755)
    ho = PhotoHO()
    try:
        make_photos(ho, root, 1, size_mb * 1024 * 1024)
        with serve_in_thread(ho.app) as api, _origin(root, ho, api.url) as origin, moto_s3() as s3:
            ho.base_url = origin
            print(f"-- rss: one {size_mb} MB photo, {'nginx' if origin != api.url else 'HO'} -> each store")
            for kind in kinds:
                dest = Path(tempfile.mkdtemp(prefix="posync-bench-rss-dest-", dir=TMPFS))
                try:
                    out = subprocess.run([sys.executable, str(Path(__file__)), "--rss-child", api.url, str(dest),
                                          kind, s3, str(size_mb)],
                                         check=True, capture_output=True, text=True, cwd=HERE.parent).stdout.split()
                finally:
                    shutil.rmtree(dest, ignore_errors=True)
                idle, peak = int(out[-2]), int(out[-1])
                print(f"   {kind:>2} store: idle process {idle / 1024:,.1f} MB, peak {peak / 1024:,.1f} MB: "
                      f"{(peak - idle) / 1024:,.1f} MB above idle (target < 32 MB)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_noop(n: int, rounds: int) -> None:
    print(f"-- noop: incremental resync of {n:,} unchanged photos")
    ho = PhotoHO()
    for i in range(n):
        ho.put_photo(f"prod-{i % 1000}", i.to_bytes(4, "big") * 64)
    tmp = Path(tempfile.mkdtemp(prefix="posync-bench-noop-", dir=TMPFS))
    try:
        with serve_in_thread(ho.app) as api:
            ho.base_url = api.url
            time.sleep(2.5)  # past the checkpoint's 2 s overlap: photos are not all edited just before a pass
            db = posync.create_engine(f"sqlite:///{tmp}/o.db")
            upgrade(db)
            s = PhotoSettings(ho_url=api.url, username="posync", password="posync-password",
                              photo_store=f"fs:{tmp}/s", photo_page_size=1000)
            with build_photo_sync(s, engine=db) as sync:
                first = sync.sync()
                assert first.ok and first.synced == n
                samples, requests = [], []
                for _ in range(rounds):
                    before = ho.requests["total"]
                    started = time.perf_counter()
                    report = sync.sync()
                    samples.append(time.perf_counter() - started)
                    requests.append(ho.requests["total"] - before)
                    assert report.ok and report.synced == 0
            db.dispose()
            # seed 000's resync: since MAX(last_sync_at) on the outlet's clock (after HO's updated_at) it lists
            # nothing new only by luck; re-listing from its first sync re-reads every page of 100
            seed_requests = -(-n // 100)
        t = Timing(tuple(samples))
        print(t.line("posync no-op incremental pass"))
        print(f"   requests HO saw per pass: {sorted(set(requests))} (target <= 2); seed 000's full re-list: "
              f"{seed_requests} listing requests")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_stores(n: int, rounds: int) -> None:
    from pydantic import SecretStr

    from posync.stores import DatabaseStore, FileStore, PhotoStore, S3Store
    from posync.testing.photos.s3 import moto_s3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise

    print(f"-- stores: {n:,} photos of 50 KB from nginx")
    root = Path(tempfile.mkdtemp(prefix="posync-bench-stores-", dir=TMPFS))
    os.chmod(root, 0o755)
    ho = PhotoHO()
    try:
        make_photos(ho, root, n, 50_000)
        with nginx(root) as origin, serve_in_thread(ho.app) as api, moto_s3() as s3:
            ho.base_url = origin
            for kind in ("fs", "db", "s3"):
                samples = []
                for r in range(rounds):
                    dest = Path(tempfile.mkdtemp(prefix=f"posync-bench-{kind}-", dir=TMPFS))
                    db = posync.create_engine(f"sqlite:///{dest}/o.db")
                    upgrade(db)
                    store: PhotoStore
                    if kind == "fs":
                        store = FileStore(dest / "s")
                    elif kind == "db":
                        store = DatabaseStore(db, staging=dest / "st")
                    else:
                        store = S3Store(s3, f"bench-{r}", access_key="testing", secret_key=SecretStr("testing"),
                                        region="us-east-1", staging=dest / "st")
                    s = PhotoSettings(ho_url=api.url, username="posync", password="posync-password",
                                      photo_page_size=1000)
                    with build_photo_sync(s, engine=db, store=store) as sync:
                        started = time.perf_counter()
                        report = sync.sync()
                        samples.append(time.perf_counter() - started)
                        assert report.ok and report.synced == n, report.as_dict()
                    db.dispose()
                    shutil.rmtree(dest, ignore_errors=True)
                print(Timing(tuple(samples)).line(f"into the {kind} store", n, "photos"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
        return

    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--only", default=None)
        p.add_argument("--rss-stores", default="fs,db,s3", help="stores the rss figure is taken on")
        p.add_argument("--rss-mb", type=int, default=None, help="the photo's size (default 256; --quick 32)")

    args = bench_args(__doc__.splitlines()[0], rounds=3, extra=extra)
    wanted = set(args.only.split(",")) if args.only else {"rss", "noop", "stores"}
    print_header("photos: memory, no-op resync, stores", args)
    if "rss" in wanted:
        bench_rss(args.rss_mb or (32 if args.quick else 256), args.rss_stores.split(","))
    if "noop" in wanted:
        bench_noop(500 if args.quick else 10_000, args.rounds)
    if "stores" in wanted:
        bench_stores(100 if args.quick else 1000, args.rounds)


if __name__ == "__main__":
    main()
