"""Pull and apply: N HO product records into an empty outlet, end to end and split into HTTP vs apply.

    python bench/bench_pull.py [--quick] [--rounds N] [--page-sizes 500,1000] [--naive-records 5000]

Setup (untimed): the reference HO's database is seeded with N ``products`` through its store (one write
transaction, one change_seq per record), then served by ``python -m posync.testing`` in its own process.

Figures (every round into a fresh, empty outlet database with ``pos_registry()``):
* ``SyncHarness(sync).pull_all()`` end to end (version check, pages of ``pull_page_size``, apply + checkpoint
  per page), for each page size;
* HTTP only: the same pages fetched with ``SyncHarness(sync).client.pull`` and kept in memory;
* apply only: ``RemoteApplier.apply`` + checkpoint save on those pre-fetched pages, one transaction per page,
  as the pull does;
* baseline, same pages: the seeds' naive apply (seed 001's ``update_or_create``): per record an ORM
  ``SELECT`` then ``INSERT`` or ``UPDATE``, a commit per page, in a session without capture. It is ~50x
  slower, so it applies only the first ``--naive-records`` records' pages; its time is scaled to N.
Targets: >= 20,000 records/s end to end.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlmodel
from _common import API_KEY, Timing, bench_args, fmt_rate, head_office, make_outlet, print_header, workdir
from sqlalchemy.orm import sessionmaker

from posync.db import write_transaction
from posync.demo.models import Product
from posync.ho import PullPage
from posync.repositories import CheckpointRepository
from posync.testing import ReferenceHO, SyncHarness
from posync.testing.schema import records as ho_records

RESOURCE = "products"


def seed_ho(path: Path, n: int) -> None:
    ho = ReferenceHO(f"sqlite:///{path}", api_keys={API_KEY: None})
    try:
        def write(w: Any) -> None:
            rows = []
            for i in range(n):
                pid = f"p{i:07d}"
                rows.append({"resource": RESOURCE, "id": pid, "version": 1, "deleted": False, "updated_at": w.now,
                             "data": {"id": pid, "sku": f"SKU{i:07d}", "name": f"PRODUCT {i}", "price": 1_000 + i},
                             "change_seq": w.next_seq(RESOURCE)})
            w.conn.execute(ho_records.insert(), rows)

        ho.store.write(write)
        with ho.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        ho.close()


def pull_all_round(tmp: Path, url: str, n: int, page_size: int, tag: str) -> float:
    outlet = make_outlet(f"sqlite:///{tmp / f'outlet-{tag}.db'}", url, pull_page_size=page_size)
    try:
        started = time.perf_counter()
        stats = SyncHarness(outlet.sync).pull_all()
        elapsed = time.perf_counter() - started
    finally:
        outlet.close()
    if stats.applied.written != n:
        raise RuntimeError(f"pull wrote {stats.applied.written} records, expected {n}")
    return elapsed


def fetch_pages(tmp: Path, url: str, page_size: int) -> tuple[float, list[PullPage]]:
    outlet = make_outlet(f"sqlite:///{tmp / 'outlet-fetch.db'}", url, pull_page_size=page_size)
    pages: list[PullPage] = []
    try:
        cursor = None
        started = time.perf_counter()
        while True:
            page = SyncHarness(outlet.sync).client.pull(outlet.sync.registry[RESOURCE], page_size, cursor=cursor)
            pages.append(page)
            cursor = page.next_cursor or cursor
            if not page.has_more:
                break
        elapsed = time.perf_counter() - started
    finally:
        outlet.close()
    return elapsed, pages


def apply_round(tmp: Path, pages: list[PullPage], tag: str) -> float:
    outlet = make_outlet(f"sqlite:///{tmp / f'outlet-apply-{tag}.db'}")
    entity = outlet.sync.registry[RESOURCE]
    checkpoints = CheckpointRepository()
    try:
        started = time.perf_counter()
        for page in pages:
            with write_transaction(outlet.engine) as conn:
                SyncHarness(outlet.sync).applier.apply(conn, entity, page.records, page.deleted, source="pull")
                checkpoints.save(conn, RESOURCE, cursor=page.next_cursor, last_pull_at=datetime.now(UTC))
        return time.perf_counter() - started
    finally:
        outlet.close()


def naive_round(tmp: Path, pages: list[PullPage], tag: str) -> float:
    """Seed 001's update_or_create: SELECT, then INSERT or UPDATE, per record; commit per page."""
    outlet = make_outlet(f"sqlite:///{tmp / f'outlet-naive-{tag}.db'}")
    Session = sessionmaker(outlet.engine, class_=sqlmodel.Session, expire_on_commit=False)  # no capture
    try:
        started = time.perf_counter()
        for page in pages:
            with Session() as s:
                for rec in page.records:
                    row = s.exec(sqlmodel.select(Product).where(Product.id == str(rec["id"]))).first()
                    if row is None:
                        s.add(Product(id=str(rec["id"]), sku=rec.get("sku", ""), name=rec.get("name", ""),
                                      price=rec.get("price", 0), cloud_version=rec["version"], sync_status="synced"))
                    elif row.cloud_version is None or rec["version"] > row.cloud_version:
                        row.sku, row.name, row.price = rec.get("sku", ""), rec.get("name", ""), rec.get("price", 0)
                        row.cloud_version, row.sync_status = rec["version"], "synced"
                s.commit()
        return time.perf_counter() - started
    finally:
        outlet.close()


def _options(p: Any) -> None:
    p.add_argument("--page-sizes", default=None, help="comma-separated pull_page_size values")
    p.add_argument("--naive-records", type=int, default=5_000,
                   help="records the naive baseline applies (the first pages; it is ~50x slower)")


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], rounds=3, quick_rounds=1,
                      extra=_options)
    n = 5_000 if args.quick else 50_000
    sizes = [int(s) for s in (args.page_sizes or "500,1000").split(",")]
    print_header("pull: HO products into an empty outlet (HO in a separate process, loopback)", args,
                 records=n, page_sizes=",".join(map(str, sizes)))
    with workdir("pull") as tmp:
        ho_db = tmp / "ho.db"
        t0 = time.perf_counter()
        seed_ho(ho_db, n)
        print(f"   (setup: HO seeded with {n:,} products in {time.perf_counter() - t0:.1f} s, untimed)")
        end_to_end: dict[int, list[float]] = {s: [] for s in sizes}
        http: dict[int, list[float]] = {s: [] for s in sizes}
        applied: dict[int, list[float]] = {s: [] for s in sizes}
        naive: dict[int, list[float]] = {s: [] for s in sizes}
        with head_office(ho_db) as ho:
            pull_all_round(tmp, ho.url, n, sizes[0], "warm")  # warm-up: HO's page cache, statement caches
            for r in range(args.rounds):
                for size in sizes:
                    end_to_end[size].append(pull_all_round(tmp, ho.url, n, size, f"{size}-{r}"))
                    elapsed, pages = fetch_pages(tmp, ho.url, size)
                    http[size].append(elapsed)
                    applied[size].append(apply_round(tmp, pages, f"{size}-{r}"))
                    sample = pages[:max(1, args.naive_records // size)]
                    naive_n = sum(len(p.records) for p in sample)
                    naive[size].append(naive_round(tmp, sample, f"{size}-{r}") * n / naive_n)
                    for f in tmp.glob("outlet-*"):
                        f.unlink()

    for size in sizes:
        e2e, h, a, nv = (Timing(tuple(x[size])) for x in (end_to_end, http, applied, naive))
        print(f"   -- pull_page_size={size} ({-(-n // size)} pages)")
        print(e2e.line("pull_all() end to end", n, "records"))
        print(h.line("  HTTP only (fetch the pages)", n, "records"))
        print(a.line("  apply only (RemoteApplier, txn per page)", n, "records"))
        print(nv.line("  baseline: naive per-record apply (scaled to N)", n, "records"))
        print(f"      apply: posync vs naive {nv.median / a.median:,.1f}x faster; end to end vs "
              f"(HTTP + naive apply) {(h.median + nv.median) / e2e.median:,.1f}x; "
              f"HTTP share of end to end ~{h.median / e2e.median:.0%}")
    best = max(n / Timing(tuple(end_to_end[s])).median for s in sizes)
    print(f"   best end-to-end rate: {fmt_rate(best, 'records')} (target >= 20,000/s)")


if __name__ == "__main__":
    main()
