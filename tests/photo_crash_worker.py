"""The process tests/test_photo_crash.py kills: photo passes in a loop until SIGKILL (no tests in here).

    python -m tests.photo_crash_worker --db URL --ho URL --store fs:PATH|db --staging DIR

It imports everything once, then for each ``start N`` line on stdin forks a fresh worker (nothing is
opened before the fork: no connection, no thread), writes ``pid <pid>``; the worker writes ``ready`` and
runs passes (incremental and full, alternating) forever. Once the worker is gone the fork server reaps it
and writes ``exited <pid> <code>``. It ends at the end of stdin.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

import posync
from posync.photos import PhotoSettings, build_photo_sync
from posync.stores import DatabaseStore, FileStore


def work(args: argparse.Namespace) -> None:
    engine = posync.create_engine(args.db)
    store = FileStore(args.store[3:]) if args.store.startswith("fs:") else DatabaseStore(engine, staging=args.staging)
    s = PhotoSettings(ho_url=args.ho, username="posync", password="posync-password", photo_workers=4,
                      photo_attempts=2, photo_stall_timeout=2.0, photo_page_size=7)
    sync = build_photo_sync(s, engine=engine, store=store)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    n = 0
    while True:
        n += 1
        try:
            sync.sync(full=n % 2 == 0)
        except Exception:
            traceback.print_exc()


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--db", "--ho", "--store", "--staging"):
        p.add_argument(name, required=True)
    args = p.parse_args()
    for line in sys.stdin:
        if not line.startswith("start"):
            continue
        pid = os.fork()
        if pid == 0:
            try:
                work(args)
            finally:
                os._exit(3)
        sys.stdout.write(f"pid {pid}\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        sys.stdout.write(f"exited {pid} {code}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
