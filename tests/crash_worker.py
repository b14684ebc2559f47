"""The process tests/test_crash.py kills: an outlet that keeps selling and syncing until it gets SIGKILL.

    python -m tests.crash_worker --db URL --ho URL --journal PATH --run N [--lease SECONDS]
    python -m tests.crash_worker --db URL --ho URL --journal PATH --fork-server [--profile seed]

Run from the repository root. The outlet database must already exist (the test prepares it). A worker
writes one line ``ready`` to stdout once the outlet is open, then loops forever: one tracked change per
transaction (a new order, an edit or a delete of an existing order, now and then a product's price), journaled
before and after its commit, and every other change a push (a few batches) and a pull, with HO's
errors caught.

``--fork-server`` saves the test the interpreter's start-up (about a second, most of a kill cycle): it
imports everything once, then for each ``start N`` line on stdin forks a fresh worker process for run N
(nothing is opened before the fork: no connection, no thread), writes ``pid <pid>``, and once that
process is gone (the test kills it by pid) reaps it and writes ``exited <pid> <exit code>``. It ends at
the end of stdin.

Against the seed HO (``--profile seed``) a change is a new usage log (an append-only upload) instead.

Journal lines are ``<run> begin|commit create|edit|delete|price|usage <id>``. The outlet database is the truth;
the journal says which changes certainly committed (``commit``) and which may have (``begin`` only).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from collections.abc import Sequence
from typing import IO

import sqlmodel
from sqlalchemy.orm import sessionmaker

import posync
from posync.demo.models import Order, Product, PromotionUsage, pos_registry, seed_registry
from posync.testing import SyncHarness

OUTLET_ID = "outlet-crash"
API_KEY = "crash-test-api-key-0123456789"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.crash_worker")
    p.add_argument("--db", required=True)
    p.add_argument("--ho", required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--run", type=int, default=0, help="this start's number: makes order ids unique")
    p.add_argument("--lease", type=float, default=1.0)
    p.add_argument("--fork-server", action="store_true", help="fork a worker for each 'start N' on stdin")
    p.add_argument("--profile", choices=["posync", "seed"], default="posync", help="the HO's dialect")
    return p.parse_args(argv)


def settings(ho_url: str, lease: float, profile: str = "posync") -> posync.PosyncSettings:
    auth: dict[str, object] = {"api_key": API_KEY}
    if profile == "seed":
        from posync.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME

        auth = {"ho_profile": "seed", "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD,
                "company_id": "company-1", "store_id": OUTLET_ID,
                "brand_id": "brand-1", "since_overlap_seconds": 1.0}
    return posync.PosyncSettings(ho_url=ho_url, outlet_id=OUTLET_ID, lease_seconds=lease,
                                 request_timeout=lease * 0.8, push_batch_size=20,
                                 initial_backoff_seconds=0.05, max_backoff_seconds=0.5, **auth)


def sell_with_a_promotion(Session: sessionmaker, rng: random.Random, run: int, n: int,  # type: ignore[type-arg]
                          journal: IO[str]) -> None:
    """Against the seed HO the outlet uploads usage logs (append-only): one per transaction, journaled."""
    bill = f"b-{run}-{n}"
    with Session() as s:
        s.add(PromotionUsage(promotion_id="promo1", bill_id=bill, discount_amount=rng.randint(1, 90) * 100.0,
                             store_id="outlet-crash"))
        journal.write(f"{run} begin usage {bill}\n")
        s.commit()
        journal.write(f"{run} commit usage {bill}\n")


def change(Session: sessionmaker, rng: random.Random, run: int, n: int, journal: IO[str]) -> None:  # type: ignore[type-arg]
    """Make one tracked change in its own transaction, journaled as ``begin`` before the commit and
    ``commit`` after it (a kill in between leaves a ``begin`` whose change may or may not be there)."""
    roll = rng.random()
    with Session() as s:
        ids = s.exec(sqlmodel.select(Order.id)).all() if roll >= 0.45 else []
        if roll < 0.45 or not ids:
            oid = f"o-{run}-{n}"
            s.add(Order(id=oid, table_no=f"T{rng.randint(1, 30)}", total=rng.randint(1, 900) * 1000))
            entry = f"create {oid}"
        elif roll < 0.8:
            order = s.get(Order, rng.choice(ids))
            assert order is not None
            order.total += rng.randint(1, 9) * 100
            order.status = rng.choice(["open", "paid", "void"])
            entry = f"edit {order.id}"
        elif roll < 0.92:
            order = s.get(Order, rng.choice(ids))
            assert order is not None
            s.delete(order)
            entry = f"delete {order.id}"
        else:
            products = s.exec(sqlmodel.select(Product).order_by(Product.id)).all()
            if not products:
                return
            product = rng.choice(products)
            product.price += 100
            entry = f"price {product.id}"
        journal.write(f"{run} begin {entry}\n")
        s.commit()
        journal.write(f"{run} commit {entry}\n")  # line-buffered: the OS keeps it when we are killed


def work(args: argparse.Namespace, run: int) -> None:
    """Sell and sync until killed."""
    engine = posync.create_engine(args.db)
    Session = sessionmaker(engine, class_=sqlmodel.Session, expire_on_commit=False)
    registry = seed_registry() if args.profile == "seed" else pos_registry()
    sync = posync.Posync(engine, registry, settings(args.ho, args.lease, args.profile), sessionmaker=Session)
    make = sell_with_a_promotion if args.profile == "seed" else change
    rng = random.Random(run)
    with open(args.journal, "a", buffering=1, encoding="utf-8") as journal:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        n = 0
        while True:
            n += 1
            make(Session, rng, run, n, journal)
            if n % 2 == 0:
                try:
                    SyncHarness(sync).drain(max_batches=3)
                    SyncHarness(sync).pull_all()
                except posync.TransportError:
                    time.sleep(0.05)


def fork_server(args: argparse.Namespace) -> None:
    for command in sys.stdin:
        run = int(command.split()[1])
        sys.stdout.flush()  # nothing buffered may be copied into the child
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                work(args, run)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        sys.stdout.write(f"pid {pid}\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exited {pid} {os.waitstatus_to_exitcode(status)}\n")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.fork_server:
        fork_server(args)
    else:
        work(args, args.run)


if __name__ == "__main__":
    main()
