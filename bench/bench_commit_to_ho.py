"""Commit to HO: how long a committed sale takes to reach head office, with push on commit and without
(issue 18, item 6), at the default sync interval (30 s), and what an idle outlet asks HO meanwhile.

    python bench/bench_commit_to_ho.py [--quick] [--rounds N] [--sales 40] [--idle 60]

Figures, each way: p50 / p99 / max of commit-to-HO latency over ``--sales`` single-order commits spaced
100-300 ms apart (an ORM session in the POS process, SQLite), and HO requests per idle minute (no
commits, ``--idle`` seconds), also per hour. Baseline in the same run: ``push_on_commit=False`` (a change
waits for the next 30 s tick; its sales start at a random point of the interval). Target: p99 <= 1 s
with push on commit, and no more idle requests than the baseline. The reference HO runs in its own
process; a poller asks it for its orders every 20 ms, so a latency is accurate to about that.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from _common import bench_args, head_office, make_outlet, print_header, workdir

from posync.demo.models import Order

POLL = 0.02
INTERVAL = 30.0  # the default sync_interval_seconds


def _cycled(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT last_cycle_at FROM posync_outlet")).scalar() is not None


def _wait(what: Any, deadline: float) -> None:
    end = time.monotonic() + deadline
    while not what():
        if time.monotonic() > end:
            raise RuntimeError("not within the deadline")
        time.sleep(0.05)


def _api_requests(admin: httpx.Client) -> int:
    requests = admin.get("/_admin/stats").json()["requests"]  # by "METHOD /path"
    return sum(n for route, n in requests.items() if route.split(" ", 1)[-1].startswith("/api/"))


def latencies(tmp: Path, ho_url: str, admin: httpx.Client, on: bool, sales: int, tag: str) -> list[float]:
    """Seconds from each sale's commit to the poller first seeing it at HO."""
    outlet = make_outlet(f"sqlite:///{tmp / f'outlet-{tag}.db'}", ho_url, push_on_commit=on)
    try:
        outlet.sync.start()
        _wait(lambda: _cycled(outlet.engine), 60)
        committed: dict[str, float] = {}
        arrived: dict[str, float] = {}
        rng = random.Random()
        if not on:  # the till sells at any point of the interval, not just after a tick
            time.sleep(rng.uniform(0, INTERVAL))
        next_sale = time.monotonic()
        deadline = time.monotonic() + sales * 0.3 + 90
        while len(arrived) < sales and time.monotonic() < deadline:
            now = time.monotonic()
            if len(committed) < sales and now >= next_sale:
                order_id = f"{tag}-{len(committed)}"
                with outlet.Session() as session:
                    session.add(Order(id=order_id, total=1))
                    session.commit()
                committed[order_id] = time.monotonic()
                next_sale = committed[order_id] + rng.uniform(0.1, 0.3)
            at_ho = admin.get("/_admin/records/orders").json()
            seen = time.monotonic()
            for order_id in committed.keys() - arrived.keys():
                if order_id in at_ho:
                    arrived[order_id] = seen
            time.sleep(POLL)
        if len(arrived) < sales:
            raise RuntimeError(f"{sales - len(arrived)} sales never reached HO")
        return [arrived[k] - committed[k] for k in committed]
    finally:
        outlet.close()


def idle_requests(tmp: Path, ho_url: str, admin: httpx.Client, on: bool, seconds: float, tag: str) -> int:
    """HO requests an outlet makes in ``seconds`` with nothing committed, after its first cycle."""
    outlet = make_outlet(f"sqlite:///{tmp / f'idle-{tag}.db'}", ho_url, push_on_commit=on)
    try:
        outlet.sync.start()
        _wait(lambda: _cycled(outlet.engine), 60)
        time.sleep(1.0)
        before = _api_requests(admin)
        time.sleep(seconds)
        return _api_requests(admin) - before
    finally:
        outlet.close()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    def extra(p: Any) -> None:
        p.add_argument("--sales", type=int, default=None, help="single-order commits per round (default 40)")
        p.add_argument("--idle", type=float, default=None, help="idle window, seconds (default 60)")

    args = bench_args(__doc__.splitlines()[0], rounds=1, quick_rounds=1, extra=extra)
    sales = args.sales or (10 if args.quick else 40)
    idle = args.idle or (10.0 if args.quick else 60.0)
    print_header("commit to HO, push on commit vs the 30 s interval (SQLite, one process)", args,
                 sales=sales, idle_seconds=idle, sync_interval="30 s")
    with workdir("commit") as tmp, head_office(tmp / "ho.db") as ho, httpx.Client(base_url=ho.url) as admin:
        figures: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):
            for on in (True, False):
                figures[on] += latencies(tmp, ho.url, admin, on, sales, f"r{r}-{'on' if on else 'off'}")
        asked = {on: idle_requests(tmp, ho.url, admin, on, idle, "on" if on else "off") for on in (True, False)}
        for on in (True, False):
            got = figures[on]
            label = "push on commit" if on else "baseline: push_on_commit=False"
            print(f"   {label:<32} commit to HO: p50 {_ms(statistics.median(got)):>9}  p99 "
                  f"{_ms(_pct(got, 0.99)):>9}  max {_ms(max(got)):>9}  (n={len(got)})")
        for on in (True, False):
            label = "push on commit" if on else "baseline: push_on_commit=False"
            per_minute = asked[on] * 60.0 / idle
            print(f"   {label:<32} idle: {asked[on]} HO requests in {idle:.0f} s = {per_minute:,.1f}/min, "
                  f"{per_minute * 60:,.0f}/h")
        ratio = _pct(figures[False], 0.99) / max(_pct(figures[True], 0.99), 1e-9)
        print(f"   p99 {ratio:,.1f}x lower with push on commit (target: p99 <= 1 s); idle requests "
              f"{asked[True]} vs {asked[False]} (target: no more)")


if __name__ == "__main__":
    main()
