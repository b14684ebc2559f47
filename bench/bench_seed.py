"""Pull and apply from the seed HO (docs/seed-profile.md) beside posync's own protocol, in the same run;
and what a no-op sync costs against each.

    python bench/bench_seed.py [--quick] [--rounds N] [--records 50000] [--page-size 1000]

Setup (untimed): one HO database with N ``products``, served by ``python -m posync.testing`` in its own
process, once as the posync profile and once as the seed profile (``--profile seed``: ``updated_since`` +
offset pages over the live query, no record versions, one scalar version). Each round pulls everything
into a fresh, empty outlet (``SyncHarness(sync).pull_all()``), for each profile in turn.

Figures: records/s end to end per profile (target >= 20,000/s for both), the ratio seed / posync; then,
after a full sync, a no-op sync against each: HTTP requests and response bytes (the seed profile's
first cycles also run the id reconciliation, which a no-op cycle then skips).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from _common import Timing, bench_args, fmt_rate, head_office, make_outlet, print_header, workdir
from bench_pull import seed_ho

from posync.demo.models import pos_registry, seed_registry
from posync.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, SyncHarness

SEED = {"ho_profile": "seed", "api_key": None, "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD,
        "company_id": "company-1", "store_id": "store-1",
        "brand_id": "b1"}


def outlet_for(tmp: Path, url: str, profile: str, page_size: int, tag: str) -> Any:
    extra = SEED if profile == "seed" else {}
    registry = seed_registry() if profile == "seed" else pos_registry()
    return make_outlet(f"sqlite:///{tmp / f'outlet-{tag}.db'}", url, registry=registry, pull_page_size=page_size,
                       **extra)


class Wire:
    """Counts requests and response bytes of one outlet's HTTP client."""

    def __init__(self, outlet: Any) -> None:
        self.requests = 0
        self.bytes = 0
        SyncHarness(outlet.sync).http.event_hooks["response"].append(self._seen)

    def _seen(self, response: Any) -> None:
        self.requests += 1
        self.bytes += int(response.headers.get("content-length") or 0)


def pull_round(tmp: Path, url: str, profile: str, n: int, page_size: int, tag: str) -> float:
    outlet = outlet_for(tmp, url, profile, page_size, tag)
    try:
        started = time.perf_counter()
        stats = SyncHarness(outlet.sync).pull_all()
        elapsed = time.perf_counter() - started
        if stats.applied.written != n:
            raise RuntimeError(f"{profile}: pulled {stats.applied.written} records, expected {n} ({stats.failed})")
        return elapsed
    finally:
        outlet.close()


def noop(tmp: Path, url: str, profile: str, page_size: int) -> tuple[int, int]:
    outlet = outlet_for(tmp, url, profile, page_size, f"noop-{profile}")
    try:
        outlet.sync.sync_now()  # the full pull (and, seed profile, the first reconciliation)
        time.sleep(1.1)  # the seed HO's version is whole seconds
        outlet.sync.sync_now()
        wire = Wire(outlet)
        outlet.sync.sync_now()
        return wire.requests, wire.bytes
    finally:
        outlet.close()


def main() -> None:
    def extra(p: Any) -> None:
        p.add_argument("--records", type=int, default=None)
        p.add_argument("--page-size", type=int, default=1000)

    args = bench_args(__doc__.splitlines()[0], rounds=3, quick_rounds=1, extra=extra)
    n = args.records or (5_000 if args.quick else 50_000)
    print_header("pull from the seed HO beside posync's protocol (HO in a separate process, loopback)", args,
                 records=n, page_size=args.page_size)
    with workdir("seed") as tmp:
        seed_ho(tmp / "ho.db", n)
        times: dict[str, list[float]] = {"posync": [], "seed": []}
        costs: dict[str, tuple[int, int]] = {}
        with head_office(tmp / "ho.db") as posync_ho, \
                head_office(tmp / "ho.db", extra=("--profile", "seed")) as seed:
            urls = {"posync": posync_ho.url, "seed": seed.url}
            for profile in times:
                pull_round(tmp, urls[profile], profile, n, args.page_size, f"warm-{profile}")
            for r in range(args.rounds):
                for profile in times:  # interleaved: both meet the same machine noise
                    times[profile].append(pull_round(tmp, urls[profile], profile, n, args.page_size, f"{profile}-{r}"))
                    for f in tmp.glob("outlet-*"):
                        f.unlink()
            for profile in times:
                costs[profile] = noop(tmp, urls[profile], profile, args.page_size)
    rates = {}
    for profile, samples in times.items():
        timing = Timing(tuple(samples))
        rates[profile] = timing.rate(n)
        print(timing.line(f"pull_all() from the {profile} profile", n, "records"))
    print(f"   seed / posync: {rates['seed'] / rates['posync']:.2f}x; "
          f"both >= 20,000/s: {all(r >= 20_000 for r in rates.values())}")
    for profile, (requests, size) in costs.items():
        print(f"   no-op sync against the {profile} profile: {requests} requests, {size:,} response bytes")
    print(f"   best rate: {fmt_rate(min(rates.values()), 'records')} (the slower profile; target >= 20,000/s)")


if __name__ == "__main__":
    main()
