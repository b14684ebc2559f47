"""Push throughput: drain N queued ``Order`` creates to the reference HO (its own process) over loopback.

    python bench/bench_push.py [--quick] [--rounds N] [--batch-sizes 250,500,1000,2000] [--changes N]

Setup (untimed): one outlet database with N ``pos_order`` rows written with Core, and their N outbox
items (written by posync's capture triggers, as for any write), copied afresh for every round. Each
round starts a fresh ``python -m posync.testing`` process on an empty HO database, then times
``SyncHarness(sync).drain()`` (claim, send, settle, batch after batch).
Each round runs both baselines, then posync at every batch size (``push_batch_size``), and prints its
own ratios: the machine drifts, and interleaving puts the drift on both sides of every ratio.

Two baselines, same run, same kind of HO process, on a sample:
- requests only: a plain httpx client sending one ``POST /api/v1/sync/push/`` per change (same JSON
  shape, a keep-alive connection) and doing no local database work at all: the strictest comparison.
- seed 003 ``PushPendingData`` as the seed writes it: read the queue, then per item ``PushOrder`` (one
  request), ``MarkSyncSuccess`` and ``UpdateEntityVersion`` (one autocommitted statement each), on a
  copy of the same outlet database.
Targets: >= 10,000 changes/s; >= 50x a one-request-per-change client (seed 003's PushOrder style).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _common import (
    API_KEY,
    Timing,
    bench_args,
    fmt_rate,
    fmt_ratio,
    head_office,
    make_outlet,
    prepare_database,
    print_header,
    workdir,
)

import posync
from posync.demo.models import Order, pos_registry
from posync.testing import SyncHarness

OUTLET = "outlet-1"


def build_template(path: Path, n: int) -> None:
    engine = prepare_database(f"sqlite:///{path}")
    now = datetime.now(UTC)
    rows = [{"id": f"o{i:07d}", "table_no": f"T{i % 40}", "total": 10_000 + i, "status": "open", "version": 1,
             "cloud_version": None, "sync_status": "pending", "updated_at": now} for i in range(n)]
    posync.capture.install(engine, pos_registry())  # what Posync(...) does: the inserts below queue themselves
    with engine.begin() as conn:
        conn.execute(Order.__table__.insert(), rows)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()


PAUSE_GC = False  # --pause-gc: posync's opt-in GC pause (PosyncSettings.pause_gc; off by default)


def posync_round(tmp: Path, template: Path, n: int, batch_size: int, tag: str) -> tuple[float, dict[str, float]]:
    db = tmp / f"outlet-{tag}.db"
    shutil.copyfile(template, db)
    parts: dict[str, float] = defaultdict(float)
    with head_office(tmp / f"ho-{tag}.db") as ho:
        outlet = make_outlet(f"sqlite:///{db}", ho.url, engine=posync.create_engine(f"sqlite:///{db}"),
                             outlet_id=OUTLET, push_batch_size=batch_size, pause_gc=PAUSE_GC)
        try:
            SyncHarness(outlet.sync).time_push(parts)  # claiming, the wire, settling
            started = time.perf_counter()
            stats = SyncHarness(outlet.sync).drain()
            elapsed = time.perf_counter() - started
            pending = outlet.sync.manager.status().pending
        finally:
            outlet.close()
    if stats.applied != n or pending or stats.errors:
        raise RuntimeError(f"drain did not push everything: {stats} (pending {pending})")
    db.unlink()
    return elapsed, dict(parts, batches=stats.batches)


HEADERS = {"X-API-Key": API_KEY, "X-Outlet-ID": OUTLET, "Content-Type": "application/json"}


def push_one(client: httpx.Client, change: dict[str, Any]) -> dict[str, Any]:
    """``PushOrder``: one change, one request; returns HO's result, which must be ``applied``."""
    body = json.dumps({"outlet_id": OUTLET, "changes": [change]}, separators=(",", ":")).encode()
    response = client.post("/api/v1/sync/push/", content=body)
    response.raise_for_status()
    result: dict[str, Any] = response.json()["results"][0]
    if result["status"] != "applied":
        raise RuntimeError(f"baseline change not applied: {response.text}")
    return result


def baseline_round(url: str, n: int, start: int) -> float:
    """Seed 003 style: one request per change."""
    now = datetime.now(UTC).isoformat()
    changes = [{"idempotency_key": uuid.uuid4().hex, "resource": "orders", "entity_id": f"b{i:07d}", "op": "create",
                "base_version": None, "changed_at": now,
                "data": {"id": f"b{i:07d}", "table_no": f"T{i % 40}", "total": 10_000 + i, "status": "open"}}
               for i in range(start, start + n)]
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30.0) as client:
        started = time.perf_counter()
        for change in changes:
            push_one(client, change)
        return time.perf_counter() - started


def seed003_round(url: str, template: Path, tmp: Path, n: int, tag: str) -> float:
    """Seed 003's ``PushPendingData`` as written: ``GetPendingSync`` reads the queue, then per item one
    ``PushOrder`` request, ``MarkSyncSuccess`` and ``UpdateEntityVersion``, each its own autocommitted
    statement (Go's ``db.Exec``), on the same outlet database file posync drains."""
    db = tmp / f"seed003-{tag}.db"
    shutil.copyfile(template, db)
    conn = sqlite3.connect(db, isolation_level=None)  # autocommit, as database/sql's Exec
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        conn.execute(f"PRAGMA {pragma}")
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=30.0) as client:
            started = time.perf_counter()
            pending = conn.execute(
                "SELECT q.id, q.entity_id, q.changed_at, o.table_no, o.total, o.status FROM posync_outbox q "
                "JOIN pos_order o ON o.id = q.entity_id WHERE q.status = 'pending' ORDER BY q.id LIMIT ?",
                (n,)).fetchall()
            for item_id, order_id, changed_at, table_no, total, status in pending:
                change = {"idempotency_key": uuid.uuid4().hex, "resource": "orders", "entity_id": order_id,
                          "op": "create", "base_version": None, "changed_at": changed_at,
                          "data": {"id": order_id, "table_no": table_no, "total": total, "status": status}}
                result = push_one(client, change)
                conn.execute("DELETE FROM posync_outbox WHERE id = ?", (item_id,))  # MarkSyncSuccess
                conn.execute("UPDATE pos_order SET cloud_version = ?, sync_status = 'synced' WHERE id = ?",
                             (result["cloud_version"], order_id))  # UpdateEntityVersion
            return time.perf_counter() - started
    finally:
        conn.close()
        db.unlink()


def _options(p: Any) -> None:
    p.add_argument("--batch-sizes", default=None, help="comma-separated push_batch_size values")
    p.add_argument("--changes", type=int, default=None, help="queued changes to drain (default 100,000)")
    p.add_argument("--pause-gc", action="store_true", help="posync with its opt-in GC pause (default: off)")


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], rounds=3, quick_rounds=1,
                      extra=_options)
    global PAUSE_GC
    PAUSE_GC = args.pause_gc
    n = args.changes or (5_000 if args.quick else 100_000)
    sample = 300 if args.quick else 2_000
    sizes = [int(s) for s in (args.batch_sizes or ("250,1000" if args.quick else "250,500,1000,2000")).split(",")]
    print_header("push: drain the outbox to the reference HO (separate process, loopback)", args,
                 changes=n, baseline_sample=sample, batch_sizes=",".join(map(str, sizes)), pause_gc=PAUSE_GC)
    if args.changes and not args.quick:
        print(f"   NOTE: --changes {n:,} overrides the full size (100,000)")
    with workdir("push") as tmp:
        template = tmp / "template.db"
        t0 = time.perf_counter()
        build_template(template, n)
        print(f"   (setup: {n:,} orders + outbox items written in {time.perf_counter() - t0:.1f} s, untimed)")

        def ratio(baseline_seconds: float, posync_seconds: float) -> float:
            """posync's rate over a baseline's (``sample`` changes against ``n``)."""
            return (n / posync_seconds) / (sample / baseline_seconds)

        # Rounds interleave the baselines and posync, so that the machine's drift (it is shared and
        # noisy) falls on both sides of every ratio; each round's ratios are also printed.
        base: list[float] = []
        seed: list[float] = []
        results: dict[int, list[float]] = defaultdict(list)
        parts: dict[int, list[dict[str, float]]] = defaultdict(list)
        for r in range(args.rounds):
            with head_office(tmp / f"ho-baseline-{r}.db") as ho:
                baseline_round(ho.url, 50, 10_000_000)  # warm-up: connection, HO's first requests
                base.append(baseline_round(ho.url, sample, 0))
            with head_office(tmp / f"ho-seed003-{r}.db") as ho:  # the template's order ids, created anew
                seed.append(seed003_round(ho.url, template, tmp, sample, str(r)))
            for bs in sizes:
                elapsed, split = posync_round(tmp, template, n, bs, f"{bs}-{r}")
                results[bs].append(elapsed)
                parts[bs].append(split)
            print(f"   round {r + 1}: requests only {sample / base[-1]:,.0f}/s, seed 003 {sample / seed[-1]:,.0f}/s, "
                  + ", ".join(f"batch {bs} {n / results[bs][-1]:,.0f}/s ({ratio(base[-1], results[bs][-1]):,.1f}x, "
                              f"{ratio(seed[-1], results[bs][-1]):,.1f}x)" for bs in sizes), flush=True)
        baseline = Timing(tuple(base))
        seed003 = Timing(tuple(seed))

    base_rate = baseline.rate(sample)
    seed_rate = seed003.rate(sample)
    print(baseline.line(f"baseline: 1 request per change ({sample:,})", sample, "changes"))
    print(seed003.line(f"seed 003 PushPendingData ({sample:,})", sample, "changes"))
    best = 0.0
    best_ratios = (0.0, 0.0)
    for bs in sizes:
        t = Timing(tuple(results[bs]))
        rate = t.rate(n)
        # the median of each round's own ratio: drift between rounds cancels out
        per_round = (statistics.median(map(ratio, base, results[bs])),
                     statistics.median(map(ratio, seed, results[bs])))
        if rate > best:
            best, best_ratios = rate, per_round
        print(t.line(f"posync drain, push_batch_size={bs}", n, "changes")
              + f"   {rate / base_rate:,.1f}x baseline, {rate / seed_rate:,.1f}x seed 003"
              + f" (per-round median {per_round[0]:,.1f}x, {per_round[1]:,.1f}x)")
        mid = sorted(parts[bs], key=lambda p: p["claim"] + p["send"] + p["settle"])[len(parts[bs]) // 2]
        print(f"      split of the median round: claim {mid['claim']:.2f} s, send (HTTP + HO) {mid['send']:.2f} s, "
              f"settle {mid['settle']:.2f} s, {int(mid['batches'])} batches")
    print(f"   best posync rate: {fmt_rate(best, 'changes')} (target >= 10,000/s)")
    print(f"   best / baseline (requests only): {fmt_ratio(best / base_rate, '>= 50x')}; "
          f"per-round median {best_ratios[0]:,.1f}x")
    print(f"   best / seed 003 PushPendingData: {fmt_ratio(best / seed_rate, '>= 50x')}; "
          f"per-round median {best_ratios[1]:,.1f}x")


if __name__ == "__main__":
    main()
