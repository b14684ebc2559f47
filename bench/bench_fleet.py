"""Fleet simulation (issue 17, item 7): N outlets' schedules against one HO, in simulated time.

    python bench/bench_fleet.py [--quick] [--n 2000] [--seed 1]

Every outlet runs posync's own code: its sync cycle's trigger and its photo pass's trigger
(``posync.workers.schedule``: the per-outlet offset and jitter), a real ``SyncWorker`` on a simulated
monotonic clock (its ``OutagePolicy``, probes and Retry-After handling), and the scheduler's rule that
brings the next attempt forward while HO is away. Only the wire is simulated: HO is a counter of
requests per second, which can be down, or answer 429 with Retry-After to half the fleet; the bytes of
an idle cycle (its one version request, request and answer) are measured once against the reference HO
over loopback. No sleeping: a day of a fleet takes seconds.

Timeline (UTC): the fleet starts together (within one second: a restart, a power cut's end), runs an hour
(steady state, measured from 20 minutes after the start, once idle outlets poll at their own pace; the
start-up's peak is printed beside it; the hourly photo pass falls in it), HO goes down for an
hour, comes back, and 10 minutes later answers 429 (Retry-After: 60) to half the fleet for 5 minutes.
Outlets sell (one sale every 5 minutes on average), pushed on commit (HO away: the next attempt takes
it). posync's outlets poll HO less while they move nothing (``IdlePolling``); the idle figure is an
outlet that sells nothing, in its third idle hour. A second run is a closed fleet (no sales, no outage:
the night), measured from its 90th minute, when every outlet polls at its longest wait.

Beside each peak/mean per second: per 10 s and per minute, and what requests falling at random (a Poisson
process of the same mean) give per second: independent outlets and customers cannot do better without
talking to each other.

Baseline, from the same run: today's schedule before issue 17: APScheduler's interval trigger from the
start (every outlet in step), the photo pass at :00 sharp, the outage backoff as it was (2 s doubling to
300 s, attempts only on the 30 s ticks, Retry-After without spread).
"""

from __future__ import annotations

import heapq
import logging
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from _common import bench_args, make_outlet, prepare_database, print_header, workdir
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from posync.errors import HOUnavailableError
from posync.retry import OutagePolicy, backoff
from posync.services.pull import PullStats
from posync.services.push import PushStats
from posync.settings import PosyncSettings
from posync.workers.photo_jobs import INCREMENTAL_JOB_ID
from posync.workers.schedule import OutletSchedule
from posync.workers.scheduler import JOB_ID
from posync.workers.sync_worker import SyncWorker

INTERVAL = 30.0  # the default sync_interval_seconds
START = datetime(2026, 12, 7, 4, 50, tzinfo=UTC).timestamp()  # the hourly photo pass at 05:00 is in the steady hour
STEADY = (START + 1200, START + 3660)  # from 20 min after the start: the fleet has settled into its rhythm
STARTUP = (START, START + 1200)
CLOSED = (START + 5400, START + 9000)  # a closed fleet (no sales, no outage), from its 90th minute: idle for good
DOWN, UP = STEADY[1], STEADY[1] + 3600
LIMIT = (UP + 600, UP + 900)  # 429 to half the fleet
END = LIMIT[1] + 900
RETRY_AFTER = 60.0
SALE_EVERY = 300.0


class TodaysOutagePolicy(OutagePolicy):
    """The outage backoff before issue 17 (posync.retry at 91f234b): every attempt on the whole curve,
    HO's Retry-After a floor without spread; no probe cadence of its own."""

    def delay(self, consecutive_failures: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        jittered = backoff(consecutive_failures, self.initial, self.maximum, self.multiplier, rng)
        return max(jittered, min(retry_after or 0.0, self.max_retry_after))

    probe_delay = delay


class SimHO:
    """HO as a counter of requests per simulated second; down, or rate-limiting some outlets."""

    def __init__(self) -> None:
        self.per_second: Counter[int] = Counter()
        self.down = False
        self.limited: set[int] = set()
        self.now = 0.0

    def request(self, outlet: int) -> None:
        self.per_second[int(self.now)] += 1
        if self.down:
            raise HOUnavailableError("GET /api/v1/sync/version/: connection refused")
        if outlet in self.limited:
            raise HOUnavailableError("HO answered 429", status=429, retry_after=RETRY_AFTER)


@dataclass
class SimOutlet:
    """The push and pull services a SyncWorker drives, on the simulated wire: an idle cycle is HO's
    version request; queued sales add one push."""

    index: int
    ho: SimHO
    pending: list[float] = field(default_factory=list)  # when each queued sale was made
    delivered: list[tuple[float, float]] = field(default_factory=list)  # (made, reached HO)
    recovered_at: float | None = None
    worker: SyncWorker | None = None

    def drain(self, max_batches: int | None = None) -> PushStats:
        if not self.pending:
            return PushStats()
        self.ho.request(self.index)
        self.delivered.extend((made, self.ho.now) for made in self.pending)
        stats = PushStats(batches=1, sent=len(self.pending))
        self.pending.clear()
        return stats

    def pull_all(self, *, force: bool = False, versions: object = "ask") -> PullStats:
        if versions == "ask":  # the version check (else the probe's answer); nothing changed: no page is read
            self.ho.request(self.index)
        return PullStats()

    def versions(self) -> None:
        self.ho.request(self.index)  # the probe


def simulate(n: int, posync: bool, seed: int, *, closed: bool = False) -> dict[str, Any]:
    """The fleet's 2.5 hours; ``closed``: no sales and no outage (the night, a holiday)."""
    rng = random.Random(seed)
    random.seed(seed)  # the workers' backoff jitter draws from the module's generator
    ho = SimHO()
    settings = PosyncSettings(api_key="k")
    policy = settings.outage_policy() if posync else TodaysOutagePolicy(
        settings.outage_initial_backoff_seconds, settings.outage_max_backoff_seconds,
        max_retry_after=settings.max_retry_after_seconds)
    outlets: list[SimOutlet] = []
    cycle_triggers: list[Any] = []
    photo_triggers: list[Any] = []
    events: list[tuple[float, int, int, str]] = []  # (time, sequence, outlet, what)
    sequence = 0
    next_tick: list[float] = []

    def push(at: float, index: int, what: str) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (at, sequence, index, what))

    def as_dt(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    for i in range(n):
        outlet = SimOutlet(i, ho)
        outlet_settings = settings.model_copy(update={"outlet_id": f"outlet-{i}"})
        outlet.worker = SyncWorker(outlet, outlet, outage=policy,  # type: ignore[arg-type]
                                   monotonic=lambda: ho.now, wall=lambda: ho.now,
                                   idle=outlet_settings.idle_polling() if posync else None)
        outlets.append(outlet)
        started = START + rng.uniform(0, 1.0)  # the fleet starts together
        if posync:
            schedule = OutletSchedule(outlet_settings.outlet_id, rng=random.Random(rng.random()))
            cycle: Any = schedule.interval(JOB_ID, INTERVAL, first_soon=True)
            photo: Any = schedule.cron(INCREMENTAL_JOB_ID, schedule.incremental_spread, minute=0)
        else:  # Posync.start() before issue 17: the interval job from now, the cron at :00
            cycle = IntervalTrigger(seconds=INTERVAL, start_date=as_dt(started), timezone=UTC)
            photo = CronTrigger(minute=0, timezone=UTC)
        cycle_triggers.append(cycle)
        photo_triggers.append(photo)
        first = started if not posync else cycle.get_next_fire_time(None, as_dt(started)).timestamp()
        next_tick.append(first)
        push(first, i, "tick")
        push(photo.get_next_fire_time(None, as_dt(started)).timestamp(), i, "photo")
        if not closed:
            push(started + rng.expovariate(1 / SALE_EVERY), i, "sale")
    if not closed:
        push(DOWN, -1, "down")
        push(UP, -1, "up")
        push(LIMIT[0], -1, "limit")
        push(LIMIT[1], -1, "unlimit")

    while events:
        at, _, index, what = heapq.heappop(events)
        if at > END:
            break
        ho.now = at
        if what == "down":
            ho.down = True
        elif what == "up":
            ho.down = False
        elif what == "limit":
            ho.limited = set(range(0, n, 2))
        elif what == "unlimit":
            ho.limited = set()
        elif what == "sale":
            outlets[index].pending.append(at)
            worker = outlets[index].worker
            assert worker is not None
            worker.push_due()  # push on commit (both ways: it came before issue 17); HO away: it waits
            push(at + rng.expovariate(1 / SALE_EVERY), index, "sale")
        elif what == "photo":
            ho.per_second[int(at)] += 1  # an incremental photo pass with nothing new: one listing request
            push(photo_triggers[index].get_next_fire_time(as_dt(at), as_dt(at)).timestamp(), index, "photo")
        elif what == "tick":
            if at != next_tick[index]:
                continue  # a run since moved (brought forward)
            outlet = outlets[index]
            assert outlet.worker is not None
            report = outlet.worker.run_cycle()
            if report.ran and report.error is None and at >= UP and outlet.recovered_at is None:
                outlet.recovered_at = at
            following = cycle_triggers[index].get_next_fire_time(as_dt(at), as_dt(at)).timestamp()
            if posync and report.next_attempt_in > 0:  # EmbeddedScheduler._bring_forward
                following = min(following, at + report.next_attempt_in)
            next_tick[index] = following
            push(following, index, "tick")
    recoveries = sorted(o.recovered_at - UP for o in outlets if o.recovered_at is not None)
    lost = sum(len(o.pending) for o in outlets if o.pending and min(o.pending) < END - 600)

    def slowest(group: list[SimOutlet]) -> float:  # of the sales made while HO limited the half
        return max((at - made for o in group for made, at in o.delivered if LIMIT[0] <= made < LIMIT[1]),
                   default=0.0)

    back = sorted(at - made for o in outlets for made, at in o.delivered if UP <= made < UP + 60)
    return {"per_second": ho.per_second, "recoveries": recoveries, "lost": lost, "back": back,
            "delivered": sum(len(o.delivered) for o in outlets), "queued": sum(len(o.pending) for o in outlets),
            "slowest_limited": slowest(outlets[::2]), "slowest_other": slowest(outlets[1::2]), "n": n}


def window(per_second: Counter[int], start: float, end: float) -> list[int]:
    return [per_second.get(s, 0) for s in range(int(start), int(end))]


def random_fleet(mean: float, seconds: int, seed: int, draws: int = 21) -> float:
    """Peak/mean per second of a fleet whose requests fall at random (a Poisson process of the same mean
    over as many seconds; the median of ``draws``): what independent outlets and customers give without
    talking to each other. A peak/mean near this one is randomness, not outlets in step."""
    rng = random.Random(seed)
    peaks = [max(Counter(int(rng.uniform(0, seconds)) for _ in range(round(mean * seconds))).values())
             for _ in range(draws)]
    return statistics.median(peaks) / mean


def per_bucket(per_second: list[int], seconds: int) -> list[int]:
    return [sum(per_second[i:i + seconds]) for i in range(0, len(per_second) - seconds + 1, seconds)]


def peak_over_mean(values: list[int]) -> float:
    return max(values) / statistics.fmean(values)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def version_bytes(tmp: Any) -> tuple[int, int]:
    """Bytes on the wire of one version request and its answer (HTTP/1.1 framing), measured against the
    reference HO over loopback: what an idle cycle sends and receives."""
    from posync.testing import ReferenceHO, SyncHarness, serve_in_thread

    ho = ReferenceHO(f"sqlite:///{tmp / 'ho.db'}", api_keys={"bench-api-key-0123456789": None})
    server = serve_in_thread(ho.app)
    outlet = make_outlet(f"sqlite:///{tmp / 'outlet.db'}", server.url, engine=prepare_database(
        f"sqlite:///{tmp / 'outlet.db'}"))
    sizes: dict[str, int] = {}

    def head(headers: Any) -> int:
        return sum(len(k) + len(v) + 4 for k, v in headers.raw) + 2

    def on_request(request: Any) -> None:
        sizes["request"] = len(f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n") + \
            head(request.headers) + len(request.content)

    def on_response(response: Any) -> None:
        response.read()
        sizes["response"] = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n") + \
            head(response.headers) + len(response.content)

    try:
        harness = SyncHarness(outlet.sync)
        harness.http.event_hooks = {"request": [on_request], "response": [on_response]}
        harness.client.version()
        return sizes["request"], sizes["response"]
    finally:
        outlet.close()
        server.stop()
        ho.close()


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def idle_hour(posync: bool, seed: int) -> int:
    """HO requests in the third hour of an outlet that sells nothing, driven by its own schedule and
    SyncWorker (posync: idle polling; today: every tick)."""
    ho = SimHO()
    outlet = SimOutlet(0, ho)
    settings = PosyncSettings(api_key="k")
    worker = SyncWorker(outlet, outlet, monotonic=lambda: ho.now, wall=lambda: ho.now,  # type: ignore[arg-type]
                        idle=settings.idle_polling() if posync else None)
    trigger: Any = (OutletSchedule("outlet-idle", rng=random.Random(seed)).interval(JOB_ID, INTERVAL)
                    if posync else IntervalTrigger(seconds=INTERVAL, start_date=datetime.fromtimestamp(START, UTC)))
    at = START
    while at < START + 3 * 3600:
        ho.now = at
        worker.run_cycle()
        moment = datetime.fromtimestamp(at, UTC)
        at = trigger.get_next_fire_time(moment, moment).timestamp()
    return sum(count for second, count in ho.per_second.items() if second >= START + 2 * 3600)


def report(label: str, result: dict[str, Any], wire: int, seed: int) -> dict[str, float]:
    per_second = result["per_second"]
    n = result["n"]
    steady = window(per_second, *STEADY)
    startup = window(per_second, *STARTUP)
    steady_mean = statistics.fmean(steady)
    outage = window(per_second, DOWN + 600, UP)
    recovered = max(result["recoveries"], default=120.0)
    recovery = window(per_second, UP, UP + max(recovered, 1.0) + 1)  # HO's return until the last outlet synced
    limited = window(per_second, LIMIT[0], LIMIT[1] + 120)
    idle_requests = result["idle_requests"]
    figures = {
        "steady peak/mean": max(steady) / steady_mean,
        "idle bytes/h": idle_requests * wire,
        "recovery p50": pct(result["recoveries"], 0.5),
        "recovery p90": pct(result["recoveries"], 0.9),
        "recovery peak/mean": max(recovery) / statistics.fmean(recovery),
        "429 peak/mean": max(limited) / statistics.fmean(limited),
    }
    print(f"   {label}")
    print(f"      steady state (40 min): HO mean {steady_mean:,.1f} req/s, peak {max(steady):,} req/s in one second "
          f"-> peak/mean {figures['steady peak/mean']:.2f}  (target <= 1.5: {met(figures['steady peak/mean'] <= 1.5)})")
    print(f"         peak/mean per 10 s {peak_over_mean(per_bucket(steady, 10)):.2f}, per minute "
          f"{peak_over_mean(per_bucket(steady, 60)):.2f}; per second, requests at random (Poisson, the same mean): "
          f"{random_fleet(steady_mean, len(steady), seed):.2f}")
    closed = result["closed"]
    closed_mean = statistics.fmean(closed)
    print(f"      a closed fleet (no sales, no outage: the night, a holiday; from its 90th minute): HO mean "
          f"{closed_mean:,.1f} req/s, peak {max(closed):,} in one second -> peak/mean {max(closed) / closed_mean:.2f} "
          f"(at random: {random_fleet(closed_mean, len(closed), seed):.2f}); per minute: "
          f"{peak_over_mean(per_bucket(closed, 60)):.2f}")
    print(f"      start-up (the fleet starts together; first 20 min): peak {max(startup):,} req/s "
          f"= {max(startup) / steady_mean:.2f}x the steady mean")
    print(f"      idle outlet (3rd idle hour): {idle_requests} requests/h x {wire:,} B (version request + answer) = "
          f"{figures['idle bytes/h'] / 1024:,.1f} KB/h  (target <= 2 KB/h: {met(figures['idle bytes/h'] <= 2048)})")
    print(f"      outage (1 h, down): HO sees mean {statistics.fmean(outage):,.1f} req/s, peak {max(outage):,}")
    print(f"      recovery after 1 h down: first successful cycle p50 {figures['recovery p50']:.1f} s, "
          f"p90 {figures['recovery p90']:.1f} s, max {max(result['recoveries'], default=float('nan')):.1f} s "
          f"({len(result['recoveries'])}/{n} outlets)  (target p90 <= 30 s: {met(figures['recovery p90'] <= 30)})")
    if result.get("back"):
        print(f"      sales made in HO's first minute back ({len(result['back'])}): to HO p50 "
              f"{pct(result['back'], 0.5):.1f} s, p90 {pct(result['back'], 0.9):.1f} s, p99 "
              f"{pct(result['back'], 0.99):.1f} s, max {max(result['back']):.1f} s")
    print(f"      load from HO's return until the last outlet synced ({recovered:.0f} s): peak {max(recovery):,} "
          f"req/s, mean {statistics.fmean(recovery):,.1f} -> peak/mean {figures['recovery peak/mean']:.2f}  "
          f"(target <= 3: {met(figures['recovery peak/mean'] <= 3)}); "
          f"peak / steady mean {max(recovery) / steady_mean:.2f}")
    print(f"      429 + Retry-After {RETRY_AFTER:.0f} s to half the fleet for 5 min (and 2 min after): peak "
          f"{max(limited):,} req/s, mean {statistics.fmean(limited):,.1f} -> peak/mean "
          f"{figures['429 peak/mean']:.2f}; sales queued over 10 min at the end: {result['lost']} "
          f"(target 0: {met(result['lost'] == 0)}); "
          f"delivered {result['delivered']:,}, queued at the end {result['queued']:,}; slowest sale made "
          f"meanwhile: {result['slowest_limited']:.0f} s (limited half), {result['slowest_other']:.0f} s (others)")
    return figures


def main() -> None:
    def extra(p: Any) -> None:
        p.add_argument("--n", type=int, default=None, help="outlets (default 2000)")
        p.add_argument("--seed", type=int, default=1)

    args = bench_args(__doc__.splitlines()[0], rounds=1, quick_rounds=1, extra=extra)
    n = args.n or (200 if args.quick else 2000)
    logging.getLogger("posync").setLevel(logging.ERROR)  # 2,000 outlets' "HO unreachable" lines
    print_header("fleet simulation: N outlets against one HO, simulated time", args, n=n,
                 sync_interval=f"{INTERVAL:.0f} s", simulated=f"{(END - START) / 3600:.1f} h")
    with workdir("fleet") as tmp:
        request, response = version_bytes(tmp)
    print(f"   measured against the reference HO: version request {request} B, answer {response} B")
    results: dict[bool, dict[str, float]] = {}
    for posync in (True, False):
        started = time.perf_counter()
        result = simulate(n, posync, args.seed)
        result["idle_requests"] = idle_hour(posync, args.seed)
        result["closed"] = window(simulate(n, posync, args.seed, closed=True)["per_second"], *CLOSED)
        label = "posync (offset + jitter, probes)" if posync else "baseline: today (in step, :00, backoff only)"
        results[posync] = report(f"{label}  [simulated in {time.perf_counter() - started:.1f} s]", result,
                                 request + response, args.seed)
    print("   ratios (baseline / posync):")
    for key in ("steady peak/mean", "recovery p90", "recovery peak/mean", "429 peak/mean"):
        print(f"      {key:<22} {results[False][key]:>8.2f} / {results[True][key]:<8.2f} = "
              f"{results[False][key] / results[True][key]:.1f}x")


if __name__ == "__main__":
    main()
