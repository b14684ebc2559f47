"""Outage recovery (issue 17, item 6): while HO is away the worker sends only a cheap probe (HO's version
endpoint), at most ``outage_probe_seconds`` apart; the first answered probe ends the outage and the cycle
follows in the same attempt. Refused credentials are no outage (no probing); a cycle that fails again right
after an answered probe backs off on the whole curve; Retry-After is obeyed. The reference HO over
loopback, both databases, and a simulated monotonic clock: no sleeping, no timed assertions."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from posync.demo.models import Order
from posync.testing import ReferenceHO, SyncHarness, serve_in_thread
from posync.workers.sync_worker import SALE_PROBE_GAP, CycleReport
from tests.gated_ho import Gate
from tests.support import API_KEY, Outlet, make_outlet

VERSION = "GET /api/v1/sync/version/"
PUSH = "POST /api/v1/sync/push/"
PROBE_CAP = 15.0


class Env:
    def __init__(self, db_url: str, tmp_path: Path, **settings: Any) -> None:
        self.ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None})
        self.gate = Gate(self.ho.app)
        self.server = serve_in_thread(self.gate)
        self.outlet: Outlet = make_outlet(db_url, self.server.url, outage_probe_seconds=PROBE_CAP, **settings)
        self.harness = SyncHarness(self.outlet.sync)
        self.now = 1000.0  # the worker's monotonic clock, stepped by the test
        self.harness.set_monotonic(lambda: self.now)

    def sell(self, order_id: str) -> None:
        with self.outlet.Session() as session:
            session.add(Order(id=order_id, total=1))
            session.commit()

    def when_due(self, report: CycleReport) -> CycleReport:
        """Step the clock to the worker's next attempt and make it (the scheduler's tick at that time)."""
        self.now += report.next_attempt_in
        return self.harness.run_cycle()

    def close(self) -> None:
        self.outlet.close()
        self.server.stop()
        self.ho.close()


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(db_url, tmp_path)
    yield e
    e.close()


def test_during_an_outage_only_probes_go_out_and_the_first_answer_brings_the_cycle(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    assert env.harness.run_cycle().error is None  # HO up: a normal cycle
    env.gate.refusing = ("/api/",)  # HO goes away
    with caplog.at_level(logging.INFO, logger="posync.worker"):
        env.sell("during-1")
        failed = env.harness.run_cycle()
        assert failed.ran and failed.error and not failed.probed  # the cycle that found HO away
        mark, report = len(env.gate.order), failed
        waits = []
        for n in range(40):  # an hour of simulated outage, or near it; the till goes on selling
            env.sell(f"during-{n + 2}")
            assert not env.harness.worker.push_due().ran  # a sale's push waits for the probe's time
            waits.append(report.next_attempt_in)
            report = env.when_due(report)
            assert report.probed and not report.ran and report.error
        during = env.gate.since(mark)
        assert set(during) == {VERSION} and len(during) == 40, Counter(during)  # probes only, one per attempt
        assert max(waits) <= PROBE_CAP  # capped (plus Retry-After: 1 from the 503s, well below the cap)
        assert len(set(waits)) > 10  # jittered: no two outlets probe in step

        env.gate.refusing = ()  # HO is back: the next probe is answered and the whole cycle follows
        mark = len(env.gate.order)
        back = env.when_due(report)
    assert back.probed and back.ran and back.error is None and back.push.sent == 41
    after = env.gate.since(mark)
    assert after[0] == VERSION and PUSH in after  # the probe first, then the cycle in the same attempt
    assert after.count(VERSION) == 1, after  # the probe's answer serves the pull: HO is asked once
    assert {f"during-{n}" for n in range(1, 42)} <= set(env.ho.records("orders"))
    assert env.harness.worker.online
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "unreachable" in warnings[0]  # one line per state change, both ways
    assert len(infos) == 1 and "reachable again" in infos[0]
    assert env.harness.run_cycle().probed is False  # online: no more probing


def test_a_sale_while_ho_is_away_probes_it_so_the_first_sale_after_its_return_goes_at_once(env: Env) -> None:
    """A sale waited for the next scheduled probe (up to outage_probe_seconds) after HO came back. A sale
    now probes HO itself, at most every SALE_PROBE_GAP seconds: a busy till still makes no storm."""
    env.gate.refusing = ("/api/",)  # HO away
    env.sell("first")
    report = env.harness.run_cycle()
    while report.next_attempt_in <= 2 * SALE_PROBE_GAP:  # the probes' backoff grows to its cap
        report = env.when_due(report)
        assert report.error
    mark = len(env.gate.order)
    env.sell("within-the-gap")
    assert not env.harness.worker.push_due().ran and env.gate.since(mark) == []  # just tried: no request
    env.now += SALE_PROBE_GAP + 0.01  # (float sums: a hair past the gap)
    env.sell("after-the-gap")
    probe = env.harness.worker.push_due()
    assert probe.probed and probe.error and env.gate.since(mark) == [VERSION]  # one probe, HO still away
    env.gate.refusing = ()  # HO is back, before the next scheduled probe
    env.now += SALE_PROBE_GAP + 0.01  # (float sums: a hair past the gap)
    env.sell("after-the-return")
    sent = env.harness.worker.push_due()
    assert sent.probed and sent.ran and sent.error is None and sent.push.sent == 4
    assert {"first", "within-the-gap", "after-the-gap", "after-the-return"} <= set(env.ho.records("orders"))


def test_a_sale_never_probes_before_hos_retry_after_nor_its_spread(env: Env) -> None:
    """Outlets told the same Retry-After come back spread over up to a quarter more; a sale's probe keeps
    to that spread too (a review: sales probed at the bare floor, the whole fleet in the same second)."""
    env.gate.refusing, env.gate.status, env.gate.retry_after = ("/api/",), 429, "120"
    env.sell("first")
    start, report = env.now, env.harness.run_cycle()
    assert report.error and report.next_attempt_in >= 120
    mark = len(env.gate.order)
    while env.now + 10 < start + report.next_attempt_in:  # a sale every 10 s
        env.now += 10
        env.sell(f"sale-{env.now}")
        assert not env.harness.worker.push_due().ran
    env.now = start + report.next_attempt_in - 0.05  # past HO's 120 s, short of this outlet's spread retry
    env.sell("late")
    assert not env.harness.worker.push_due().ran
    assert env.gate.since(mark) == []


def test_after_a_429_without_retry_after_sales_wait_for_the_next_try(env: Env) -> None:
    env.gate.refusing, env.gate.status, env.gate.retry_after = ("/api/",), 429, ""
    env.sell("first")
    report = env.harness.run_cycle()
    while report.next_attempt_in <= 2 * SALE_PROBE_GAP:  # the backoff grows to its cap
        report = env.when_due(report)
        assert report.error
    mark = len(env.gate.order)
    env.now += SALE_PROBE_GAP + 0.5  # past a sale's probe gap, short of the next try
    env.sell("rate-limited")
    assert not env.harness.worker.push_due().ran and env.gate.since(mark) == []  # HO asked to slow down


def test_refused_credentials_are_no_outage_and_are_not_probed(db_url: str, tmp_path: Path) -> None:
    env = Env(db_url, tmp_path, api_key="not-the-key-0123456789")
    try:
        env.sell("queued")  # a cycle starts with its push: refused
        first = env.harness.run_cycle()
        assert first.error and env.harness.worker.auth_error is not None
        mark, report = len(env.gate.order), first
        for _ in range(3):
            report = env.when_due(report)
            assert report.ran and not report.probed  # a full cycle, on the whole backoff: a config to fix
        assert PUSH in env.gate.since(mark) and VERSION not in env.gate.since(mark)
    finally:
        env.close()


def test_ho_that_answers_probes_but_refuses_cycles_gets_the_whole_backoff(env: Env) -> None:
    """HO's version endpoint answers, its push is overloaded (503): a fleet must not push every probe_cap."""
    env.sell("held")
    env.gate.refusing = ("/api/v1/sync/push/",)
    report = env.harness.run_cycle()
    waits = []
    for _ in range(8):
        report = env.when_due(report)
        assert report.probed and report.ran and report.error  # probe answered, cycle refused
        waits.append(report.next_attempt_in)
    assert waits[-1] > 4 * PROBE_CAP  # grew past the probe's cap: 2, 4, 8, ... up to 300 s, jittered
    assert env.gate.seen[PUSH] == 9  # one push per attempt, never more
    env.gate.refusing = ()
    assert env.when_due(report).error is None and "held" in env.ho.records("orders")


def test_retry_after_is_obeyed_and_then_probed(env: Env) -> None:
    env.gate.refusing, env.gate.status, env.gate.retry_after = ("/api/",), 429, "120"
    report = env.harness.run_cycle()
    assert 120 <= report.next_attempt_in <= 120 + PROBE_CAP  # HO's floor, a little jitter above it
    env.now += 119
    assert not env.harness.run_cycle().ran  # not before HO said
    env.now -= 119
    env.gate.retry_after = "86400"  # a day: capped by max_retry_after_seconds (900)
    report = env.when_due(report)
    assert report.probed and 900 <= report.next_attempt_in <= 900


def test_probes_of_an_ho_still_away_are_not_counted_as_failed_cycles(env: Env) -> None:
    """Status's failure rate counts cycles: an outage is the one cycle that found HO away, not each of its
    probes (40 of them would hold the rate over seed 003's 10 % for an hour after HO is back)."""
    assert env.harness.run_cycle().error is None
    env.gate.refusing = ("/api/",)
    report = env.harness.run_cycle()
    for _ in range(40):
        report = env.when_due(report)
        assert report.probed and not report.ran
    env.gate.refusing = ()
    assert env.when_due(report).ran
    status = env.outlet.sync.status()
    assert status.cycles == 3 and status.failure_rate == pytest.approx(1 / 3)
