"""Idle polling (issue 17, item 7's idle outlet): an outlet that moves nothing polls HO less the longer it
stays idle, down to one small request every ``idle_poll_max_seconds``; a sale, a trigger or a change from
HO brings it back to every interval. The reference HO over loopback behind a request counter, both
databases, a simulated monotonic clock stepped like the scheduler's 30 s ticks: no sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posync.demo.models import Order
from posync.retry import IdlePolling
from posync.testing import ReferenceHO, SyncHarness, serve_in_thread
from tests.gated_ho import Gate
from tests.support import API_KEY, Outlet, make_outlet

VERSION = "GET /api/v1/sync/version/"
TICK = 30.0


class Env:
    def __init__(self, db_url: str, tmp_path: Path, **settings: Any) -> None:
        self.ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None})
        self.counted = Gate(self.ho.app)
        self.server = serve_in_thread(self.counted)
        self.outlet: Outlet = make_outlet(db_url, self.server.url, **settings)
        self.harness = SyncHarness(self.outlet.sync)
        self.now = 1000.0
        self.harness.set_monotonic(lambda: self.now)

    def ticks(self, seconds: float) -> tuple[int, int]:
        """The scheduler's ticks for ``seconds``: (cycles that ran, version requests HO saw)."""
        before, ran = self.counted.seen[VERSION], 0
        for _ in range(int(seconds / TICK)):
            self.now += TICK
            ran += self.harness.run_cycle().ran
        return ran, self.counted.seen[VERSION] - before

    def close(self) -> None:
        self.outlet.close()
        self.server.stop()
        self.ho.close()


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(db_url, tmp_path)
    yield e
    e.close()


def test_an_idle_outlet_polls_ho_a_few_times_an_hour_and_a_sale_brings_it_back(env: Env) -> None:
    assert env.harness.run_cycle().ran
    first_minutes, _ = env.ticks(120)
    assert first_minutes == 4  # idle for under 2 minutes: every tick
    env.ticks(3600)  # the outlet stays idle: its polls spread out
    ran, versions = env.ticks(3600)
    assert ran <= 4 and versions <= 4  # an idle hour: at most one poll every idle_poll_max_seconds (20 min)
    with env.outlet.Session() as session:  # a sale: pushed on commit, and HO is asked every interval again
        session.add(Order(id="after-idle", total=1))
        session.commit()
    assert env.harness.worker.push_due().push.sent == 1
    ran, _ = env.ticks(90)
    assert ran == 3


def test_a_change_at_ho_found_by_an_idle_poll_brings_polling_back(env: Env) -> None:
    assert env.harness.run_cycle().ran
    env.ticks(7200)
    env.ho.put("products", "p-new", {"id": "p-new", "sku": "N1", "name": "NEW", "price": 5})
    for _ in range(int(1200 / TICK) + 1):  # the next idle poll (at most 20 min away) finds it
        env.now += TICK
        if env.harness.run_cycle().pull.applied.written:
            break
    else:
        pytest.fail("no idle poll within idle_poll_max_seconds found HO's change")
    ran, _ = env.ticks(90)
    assert ran == 3  # polled every interval again
    assert env.outlet.sync.status().healthy  # polls spread out, never more than 20 min apart: no alarm


def test_idle_polling_off_polls_every_interval(db_url: str, tmp_path: Path) -> None:
    env = Env(db_url, tmp_path, idle_poll_max_seconds=0)
    try:
        env.harness.run_cycle()
        env.ticks(3600)
        ran, _ = env.ticks(600)
        assert ran == 20
    finally:
        env.close()


@given(idle_for=st.floats(min_value=0, max_value=1e7), more=st.floats(min_value=0, max_value=1e7),
       maximum=st.floats(min_value=0, max_value=1e5))
def test_idle_waits_are_bounded_and_grow_with_idleness(idle_for: float, more: float, maximum: float) -> None:
    polling = IdlePolling(maximum)
    wait = polling.wait(idle_for)
    assert 0 <= wait <= maximum
    assert polling.wait(idle_for + more) >= wait  # idler outlets never poll more often
    if idle_for < polling.after or maximum == 0:
        assert wait == 0


@given(idle_for=st.floats(min_value=0, max_value=1e7), now=st.floats(min_value=0, max_value=4e9),
       maximum=st.floats(min_value=0, max_value=1e5), phase=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_an_idle_poll_lands_on_the_outlets_own_grid_within_the_maximum(idle_for: float, now: float, maximum: float,
                                                                       phase: float) -> None:
    polling = IdlePolling(maximum, phase=phase)
    wait = polling.wait(idle_for, now)
    bare = polling.wait(idle_for)
    assert 0 <= wait <= maximum
    if bare < 1:  # no period to spread over: the bare wait (0 before the outlet counts as idle)
        assert wait == bare
        return
    assert wait > 0
    # one of the levels maximum / 2**k, near the bare wait; the poll at the outlet's phase of it
    ratios = [maximum / 2**k for k in range(64) if 0.5 * bare <= maximum / 2**k <= 2 * bare]
    assert ratios
    if wait < maximum:
        assert any(abs(((now + wait - phase * p) / p) - round((now + wait - phase * p) / p)) < 1e-6 * max(1, now / p)
                   for p in ratios)


def polls_of_a_fleet_idle_together(phased: bool, outlets: int = 400, hours: float = 3.0) -> list[float]:
    """When each of ``outlets`` idle outlets polls, all idle from the same instant (a closed fleet after a
    restart), each on its own 30 s tick: what SyncWorker does with IdlePolling.wait."""
    from posync.retry import phase

    polls: list[float] = []
    start = 1_800_000_000.0
    for i in range(outlets):
        polling = IdlePolling(phase=phase(f"outlet-{i}", "idle") if phased else 0.0)
        tick = start + phase(f"outlet-{i}", "cycle") * TICK
        idle_until = 0.0
        while tick < start + hours * 3600:
            if tick >= idle_until:
                polls.append(tick)
                idle_until = tick + polling.wait(tick - start, tick)
            tick += TICK
    return polls


def test_a_fleet_idle_together_spreads_its_polls_over_the_period() -> None:
    """The night, a restart, HO's return: every outlet idle from one instant. Their polls, per 5 minutes
    in the third hour (every outlet polls every 20 minutes by then), are spread evenly: phased, no
    5 minutes see more than 1.5x the mean; on one phase for all (as before: the same wait everywhere)
    the whole fleet polls within the same 5 minutes, then nothing."""
    def spread(phased: bool) -> float:
        start = 1_800_000_000.0 + 2 * 3600
        buckets = [0] * 12
        for at in polls_of_a_fleet_idle_together(phased):
            if at >= start:
                buckets[int((at - start) // 300)] += 1
        return max(buckets) / (sum(buckets) / len(buckets))

    assert spread(phased=True) <= 1.5
    assert spread(phased=False) >= 3  # the burst the phases remove: the test can fail


def test_an_unbounded_idle_wait_is_the_bare_one() -> None:
    """A review: ``idle_poll_max_seconds=inf`` (the settings accept it) raised OverflowError on the grid."""
    polling = IdlePolling(float("inf"), phase=0.3)
    assert polling.wait(10_000.0, now=1.8e9) == polling.wait(10_000.0) == 2_500.0
