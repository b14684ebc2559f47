"""Fault injection: the outlet against the reference HO over real loopback sockets, with HO misbehaving.

Every test follows one story: local changes (orders and products) and HO-side edits (products) are made
while a fault is active and sync cycles run (errors are expected and reported, never raised); then the
fault is switched off and the outlet syncs until its outbox is empty. What must hold afterwards
(``assert_converged``):

* outlet and HO agree: every order and product at HO equals the outlet's row; deletes are honoured both
  ways (a local delete is a tombstone or nothing at HO, an HO delete removed the local row);
* nothing was applied twice: HO's audit counts each idempotency key at most once, and no order has more
  HO versions than the outlet made local writes to it.

The outlets use short timeouts and backoffs so a test takes seconds. The last two tests pin two bugs
found here (a truncated answer, or a total 500 outage, dead-lettered a lone change).
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlmodel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posync import ItemStatus
from posync.demo.models import Order, Product
from posync.testing import Burst, ReferenceHO, ServerHandle, SyncHarness, serve_in_thread
from posync.workers.sync_worker import CycleReport
from tests.support import API_KEY, Outlet, make_outlet

pytestmark = pytest.mark.slow

# Short enough that a stalled request costs a second, a backoff a fraction of one. ``max_retries`` is
# raised where a fault makes posync count failed attempts (500s, truncated answers: see the xfails below),
# so that a random run cannot dead-letter a change by bad luck and hide the other checks.
FAST: dict[str, Any] = {"request_timeout": 1.0, "lease_seconds": 5.0, "initial_backoff_seconds": 0.05,
                        "max_backoff_seconds": 0.2}
PATIENT: dict[str, Any] = {**FAST, "max_retries": 1000}
HOURS = 3600.0


@dataclass
class Env:
    ho: ReferenceHO
    server: ServerHandle
    outlet: Outlet
    rng: random.Random
    deleted_orders: set[str] = field(default_factory=set)
    reports: list[CycleReport] = field(default_factory=list)
    next_order: int = 0
    next_product: int = 100

    # -- the workload --------------------------------------------------------------------------------

    def local_changes(self) -> None:
        """New orders, an edit and maybe a delete of an existing one, maybe a product price change."""
        rng, Session = self.rng, self.outlet.Session
        with Session() as s:
            for _ in range(3):
                self.next_order += 1
                s.add(Order(id=f"o{self.next_order}", table_no=f"T{rng.randint(1, 20)}",
                            total=rng.randint(1, 500) * 1000))
            s.commit()
        with Session() as s:
            orders = s.exec(sqlmodel.select(Order).order_by(Order.id)).all()
            order = rng.choice(orders)
            order.total += 500
            order.status = rng.choice(["open", "paid", "void"])
            s.commit()
        if rng.random() < 0.5:
            with Session() as s:
                orders = s.exec(sqlmodel.select(Order).order_by(Order.id)).all()
                victim = rng.choice(orders)
                self.deleted_orders.add(victim.id)
                s.delete(victim)
                s.commit()
        if rng.random() < 0.6:
            with Session() as s:
                products = s.exec(sqlmodel.select(Product).order_by(Product.id)).all()
                if products:
                    rng.choice(products).price += 100
                    s.commit()

    def ho_changes(self) -> None:
        """HO edits a product, sometimes adds one, sometimes deletes one."""
        rng, ho = self.rng, self.ho
        live = sorted(ho.records("products", include_deleted=False))
        if live:
            pid = rng.choice(live)
            data = dict(ho.get("products", pid).data or {})  # type: ignore[union-attr]
            ho.put("products", pid, {**data, "price": rng.randint(1, 900) * 100, "name": f"HO edit {rng.random():.4f}"})
        if rng.random() < 0.4:
            self.next_product += 1
            pid = f"p{self.next_product}"
            ho.put("products", pid, {"id": pid, "sku": pid.upper(), "name": "new at HO", "price": 1000})
        if len(live) > 3 and rng.random() < 0.3:
            ho.delete("products", rng.choice(live))

    def cycle(self) -> CycleReport:
        report = self.outlet.sync.sync_now()  # reports a TransportError; anything else raises
        self.reports.append(report)
        return report

    def round(self, cycles: int = 1) -> list[str]:
        """One round of changes on both sides, then ``cycles`` sync cycles; answers the errors seen."""
        self.local_changes()
        self.ho_changes()
        return [r.error for r in (self.cycle() for _ in range(cycles)) if r.error]

    @property
    def duplicates(self) -> int:
        return sum(r.push.duplicates for r in self.reports)


@contextmanager
def open_env(db_url: str, ho_path: Path, *, seed: int = 0, **outlet_settings: Any) -> Iterator[Env]:
    ho = ReferenceHO(f"sqlite:///{ho_path}", api_keys={API_KEY: None})
    ho.faults.update(seed=seed)
    for n in range(1, 7):
        ho.put("products", f"p{n}", {"id": f"p{n}", "sku": f"P{n}", "name": f"product {n}", "price": n * 1000})
    server = serve_in_thread(ho.app)
    outlet = None
    try:
        outlet = make_outlet(db_url, server.url, **{**FAST, **outlet_settings})
        yield Env(ho, server, outlet, random.Random(seed))
    finally:
        if outlet is not None:
            outlet.close()
        server.stop()
        ho.close()


def sync_until_clean(env: Env, max_cycles: int = 30) -> None:
    """Faults are off: sync until a cycle succeeds with nothing left in the outbox."""
    outlet, report = env.outlet, None
    for _ in range(max_cycles):
        report = env.cycle()
        if report.error is None and not outlet.sync.manager.status().queue:
            return
        time.sleep(0.1)  # retry backoffs (FAST: at most 0.2 s)
    pytest.fail(f"outbox not empty after {max_cycles} clean cycles: {outlet.sync.manager.queue()} "
                f"(last error: {report.error if report else None})")


def assert_no_dead(outlet: Outlet) -> None:
    dead = outlet.sync.manager.queue(ItemStatus.DEAD)
    assert dead == [], f"dead-lettered: {[(d['resource'], d['entity_id'], d['last_error']) for d in dead]}"


def assert_converged(env: Env) -> None:
    outlet, ho = env.outlet, env.ho
    status = outlet.sync.manager.status()
    assert status.queue == {} and status.open_conflicts == 0
    with outlet.Session() as s:
        orders = {o.id: o for o in s.exec(sqlmodel.select(Order)).all()}
        products = {p.id: p for p in s.exec(sqlmodel.select(Product)).all()}
    assert orders, "the workload made no orders"

    ho_orders = ho.records("orders")
    live_orders = {k: v for k, v in ho_orders.items() if not v.deleted}
    assert sorted(live_orders) == sorted(orders)
    for oid, order in orders.items():
        rec = live_orders[oid]
        assert rec.data is not None
        assert (rec.data["total"], rec.data["table_no"], rec.data["status"]) == (order.total, order.table_no,
                                                                                 order.status), oid
        # each HO version is one applied change; the outlet wrote the row ``order.version`` times
        assert 1 <= rec.version <= order.version, f"{oid}: HO v{rec.version} from {order.version} local writes"
        assert (order.cloud_version, order.sync_status) == (rec.version, "synced"), oid
    for oid in env.deleted_orders:
        assert oid not in live_orders, f"{oid} was deleted at the outlet but is live at HO"
        assert oid not in orders

    live_products = ho.records("products", include_deleted=False)
    assert sorted(live_products) == sorted(products)
    for pid, product in products.items():
        rec = live_products[pid]
        assert rec.data is not None
        assert (rec.data["name"], rec.data["price"], rec.data["sku"]) == (product.name, product.price,
                                                                           product.sku), pid
        assert product.cloud_version == rec.version, pid

    counts = ho.applied_counts()
    assert counts, "HO applied nothing"
    twice = {k: n for k, n in counts.items() if n != 1}
    assert twice == {}, f"applied more than once: {twice}"


def run_story(env: Env, faults: dict[str, Any], rounds: int = 4, cycles: int = 2) -> list[str]:
    """Fault on: a few rounds of changes and cycles. Fault off: sync until clean. Then check."""
    env.cycle()  # a first clean pull: the outlet knows HO's products
    env.ho.faults.update(**faults)
    errors: list[str] = []
    for _ in range(rounds):
        errors += env.round(cycles)
    assert_no_dead(env.outlet)
    env.ho.faults.reset()
    env.ho.faults.burst = None
    sync_until_clean(env)
    assert_converged(env)
    return errors


# -- one fault at a time ------------------------------------------------------------------------------


def test_answers_lost_after_commit_are_resent_under_the_same_key(db_url: str, tmp_path: Path) -> None:
    with open_env(db_url, tmp_path / "ho.db", seed=1) as env:
        errors = run_story(env, {"drop_after_commit_rate": 0.5}, rounds=5)
        assert env.ho.faults.injected["drop"] > 0 and errors
        # HO had committed the dropped batches: the resends were answered "duplicate", not applied again
        assert env.duplicates > 0


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(db_url: str, tmp_path: Path, status: int) -> None:
    with open_env(db_url, tmp_path / "ho.db", seed=2, **PATIENT) as env:
        errors = run_story(env, {"error_rate": 0.4, "error_status": status}, rounds=4)
        assert env.ho.faults.injected["error"] > 0 and any(str(status) in e for e in errors)


@pytest.mark.parametrize("status", [429, 503])
def test_bursts_with_retry_after(db_url: str, tmp_path: Path, status: int) -> None:
    with open_env(db_url, tmp_path / "ho.db", seed=3) as env:
        # a burst of 2 answers per round; sync_now ignores the backoff: two cycles fail, the third works
        errors = []
        env.cycle()
        for _ in range(3):
            env.ho.faults.burst = Burst(status, count=2, retry_after=0)
            errors += env.round(cycles=3)
            assert env.reports[-1].error is None
        assert env.ho.faults.injected["burst"] == 6 and len(errors) == 6
        assert all(str(status) in e for e in errors)
        assert_no_dead(env.outlet)
        sync_until_clean(env)
        assert_converged(env)


def test_stalls_beyond_the_client_timeout(db_url: str, tmp_path: Path) -> None:
    with open_env(db_url, tmp_path / "ho.db", seed=4) as env:
        errors = run_story(env, {"latency": FAST["request_timeout"] * 1.5}, rounds=3, cycles=1)
        assert len(errors) == 3 and all("timed out" in e for e in errors)


def test_truncated_bodies(db_url: str, tmp_path: Path) -> None:
    with open_env(db_url, tmp_path / "ho.db", seed=5, **PATIENT) as env:
        errors = run_story(env, {"truncate_rate": 0.4}, rounds=4)
        assert env.ho.faults.injected["truncate"] > 0 and any("not JSON" in e for e in errors)


@pytest.mark.parametrize("skew", [-3 * HOURS, 3 * HOURS, 26 * HOURS])
def test_clock_skew_between_outlet_and_ho(db_url: str, tmp_path: Path, skew: float) -> None:
    with open_env(db_url, tmp_path / "ho.db", seed=6) as env:
        # with answers lost too, so that retries and duplicates happen across the skew
        env.cycle()
        env.ho.faults.update(clock_skew=skew, drop_after_commit_rate=0.3)
        for _ in range(4):
            env.round(cycles=2)
        stamps = [datetime.fromisoformat(r.updated_at) for r in env.ho.records("orders").values()]
        offsets = [(t - datetime.now(UTC)).total_seconds() for t in stamps]
        assert offsets and all(abs(o - skew) < 600 for o in offsets)  # HO really ran on the skewed clock
        env.ho.faults.reset()
        sync_until_clean(env)
        assert_converged(env)


# -- Retry-After and outages ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_the_next_attempt_waits_for_retry_after(sqlite_url: str, tmp_path: Path, status: int) -> None:
    retry_after = 2
    with open_env(sqlite_url, tmp_path / "ho.db", seed=7) as env:
        worker, ho = SyncHarness(env.outlet.sync), env.ho
        env.local_changes()
        ho.faults.burst = Burst(status, count=1, retry_after=retry_after)
        failed_at = time.monotonic()
        report = worker.run_cycle()
        assert report.ran and report.error and str(status) in report.error
        assert report.next_attempt_in >= retry_after

        seen = sum(ho.requests.values())
        early = worker.run_cycle()  # the scheduler asking again at once: nothing is sent
        assert not early.ran and 0 < early.next_attempt_in <= report.next_attempt_in
        assert sum(ho.requests.values()) == seen

        while True:  # poll like a scheduler would; the first real attempt must not come early
            cycle = worker.run_cycle()
            if cycle.ran:
                break
            assert time.monotonic() - failed_at < report.next_attempt_in + 5, "the worker never tried again"
            time.sleep(0.05)
        assert time.monotonic() - failed_at >= retry_after
        assert cycle.error is None and cycle.push.applied > 0
        assert env.outlet.sync.manager.status().queue == {}


@pytest.mark.parametrize("outage", ["503", "refused", "stall"])
def test_an_outage_dead_letters_nothing_and_warns_once(db_url: str, tmp_path: Path, outage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="posync")
    with open_env(db_url, tmp_path / "ho.db", seed=8, max_retries=3) as env:
        env.cycle()
        port = env.server.port
        if outage == "503":
            env.ho.faults.burst = Burst(503, count=10_000, retry_after=1)
        elif outage == "stall":
            env.ho.faults.latency = FAST["request_timeout"] * 1.5
        else:
            env.server.stop()
        caplog.clear()
        cycles = 3 if outage == "stall" else 8
        for _ in range(cycles):  # forced cycles: more attempts than max_retries allows per change
            env.local_changes()
            report = env.cycle()
            assert report.error is not None
        for _ in range(3):  # and the scheduler's own cycles, which back off
            SyncHarness(env.outlet.sync).run_cycle()
        assert_no_dead(env.outlet)
        assert env.outlet.sync.manager.status().pending > 0
        posync_records = [r for r in caplog.records if r.name.startswith("posync")]
        warnings = [r for r in posync_records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]

        if outage == "refused":
            env.server = serve_in_thread(env.ho.app, port=port)
        env.ho.faults.reset()
        env.ho.faults.burst = None
        sync_until_clean(env)
        assert_converged(env)
        after = [r for r in caplog.records if r.name.startswith("posync")]
        assert any("reachable again" in r.getMessage() for r in after), "no line when HO came back"
        assert [r for r in after if r.levelno >= logging.WARNING] == warnings


# -- random faults per cycle ------------------------------------------------------------------------------

fault_settings = st.fixed_dictionaries({
    "error_rate": st.sampled_from([0.0, 0.0, 0.3]),
    "error_status": st.sampled_from([500, 503]),
    "drop_after_commit_rate": st.sampled_from([0.0, 0.3, 0.6]),
    "truncate_rate": st.sampled_from([0.0, 0.0, 0.3]),
    "clock_skew": st.sampled_from([0.0, -2 * HOURS, 5 * HOURS]),
    "burst": st.one_of(st.none(), st.builds(Burst, status=st.sampled_from([429, 503]),
                                            count=st.integers(1, 3), retry_after=st.just(0.0))),
})


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(fault_settings, min_size=2, max_size=5), seed=st.integers(0, 2**16))
def test_random_faults_per_cycle_converge(plan: list[dict[str, Any]], seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="posync-faults-") as tmp, \
            open_env(f"sqlite:///{tmp}/outlet.db", Path(tmp) / "ho.db", seed=seed, **PATIENT) as env:
        env.cycle()
        for faults in plan:
            env.ho.faults.update(**faults)
            env.round(cycles=2)
        assert_no_dead(env.outlet)
        env.ho.faults.reset()
        env.ho.faults.burst = None
        sync_until_clean(env)
        assert_converged(env)


# -- regressions: a lone change under a lasting fault, with the default max_retries ----------------------------


def test_truncated_answers_never_dead_letter_a_change_ho_applied(sqlite_url: str, tmp_path: Path) -> None:
    """Once a bug: a truncated answer to a one-change batch counted a failed attempt, and after max_retries
    the change was dead-lettered although HO had applied it."""
    with open_env(sqlite_url, tmp_path / "ho.db", max_retries=3) as env:
        with env.outlet.Session() as s:
            s.add(Order(id="o1", total=5000))
            s.commit()
        env.ho.faults.truncate_rate = 1.0  # e.g. a proxy that cuts answers: HO commits every push
        for _ in range(6):
            assert env.outlet.sync.sync_now().error is not None
            time.sleep(0.25)  # FAST's retry backoff
        assert env.ho.get("orders", "o1") is not None  # HO has the order
        assert_no_dead(env.outlet)
        env.ho.faults.reset()
        sync_until_clean(env)
        assert list(env.ho.applied_counts().values()) == [1]  # applied once, then only "duplicate"
        with env.outlet.Session() as s:
            assert s.get(Order, "o1").sync_status == "synced"  # type: ignore[union-attr]


def test_a_total_500_outage_dead_letters_nothing(sqlite_url: str, tmp_path: Path) -> None:
    """Once a bug: HO answering 500 to everything (its version endpoint too: an outage, not a poison
    change) made a lone change count failed attempts until it was dead-lettered."""
    with open_env(sqlite_url, tmp_path / "ho.db", max_retries=3) as env:
        with env.outlet.Session() as s:
            s.add(Order(id="o1", total=5000))
            s.commit()
        env.ho.faults.update(error_rate=1.0, error_status=500)
        for _ in range(6):
            assert env.outlet.sync.sync_now().error is not None
            time.sleep(0.25)
        assert_no_dead(env.outlet)
        assert env.ho.get("orders", "o1") is None
        env.ho.faults.reset()
        sync_until_clean(env)
        assert env.ho.get("orders", "o1").data["total"] == 5000  # type: ignore[union-attr]


# -- the same faults against the seed HO (docs/seed-profile.md) ------------------------------------------------

SEED_FAULTS = {
    "5xx": {"error_rate": 0.4, "error_status": 500},
    "503": {"error_rate": 0.4, "error_status": 503},
    "stall": {"latency": FAST["request_timeout"] * 1.5},
    "truncated": {"truncate_rate": 0.4},
    "cut": {"cut_rate": 0.4},
    "drip": {"drip_rate": 0.3, "drip_interval": 0.2},
    "corrupt": {"corrupt_rate": 0.3},
    "dropped": {"drop_after_commit_rate": 0.5},
    "burst": {"burst": {"status": 429, "count": 3, "retry_after": 0}},
}


@pytest.mark.parametrize("fault", sorted(SEED_FAULTS))
def test_the_seed_ho_with_faults_converges_once_they_stop(db_url: str, tmp_path: Path, fault: str) -> None:
    """Issue #11: HO edits and deletes products, the outlet uploads usages, with the fault on. Once it is
    off, a sync and a reconciliation leave the outlet's catalogue equal to HO's, and every usage at HO at
    least once (the seed HO does not deduplicate: duplicates are measured and printed)."""
    from posync.demo.models import PromotionUsage, seed_registry
    from posync.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME

    rng = random.Random(fault)
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'seed-ho.db'}", profile="seed")
    ho.faults.update(seed=11)
    for n in range(1, 13):
        ho.put("products", f"p{n}", {"sku": f"P{n}", "name": f"product {n}", "price": n * 1000})
    server = serve_in_thread(ho.app)
    outlet = make_outlet(db_url, server.url, registry=seed_registry(), api_key=None, ho_profile="seed",
                         company_id="company-1", store_id="store-1",
                         username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD, brand_id="b1", pull_page_size=4,
                         since_overlap_seconds=1.0, **PATIENT)
    try:
        outlet.sync.sync_now()
        ho.faults.update(**SEED_FAULTS[fault])
        bills = 0
        for _ in range(5):
            with outlet.Session() as s:
                for _ in range(3):
                    bills += 1
                    s.add(PromotionUsage(promotion_id="promo1", bill_id=f"B{bills}", discount_amount=1000.0))
                s.commit()
            live = sorted(ho.records("products", include_deleted=False))
            ho.put("products", rng.choice(live), {"sku": "X", "name": f"HO edit {rng.random():.3f}",
                                                  "price": rng.randint(1, 99) * 100})
            if rng.random() < 0.4:
                ho.put("products", f"n{bills}", {"sku": "N", "name": "new at HO", "price": 1})
            if len(live) > 5 and rng.random() < 0.4:
                ho.delete("products", rng.choice(live))
            for _ in range(2):
                outlet.sync.sync_now()  # errors are reported, never raised
        assert_no_dead(outlet)
        injected = dict(ho.faults.injected)
        ho.faults.reset()
        ho.faults.burst = None
        for _ in range(20):
            report = outlet.sync.sync_now()
            if report.error is None and not report.pull.failed and not outlet.sync.manager.status().queue:
                break
            time.sleep(0.1)
        outlet.sync.reconcile(force=True)
        assert outlet.sync.manager.status().queue == {}
        with outlet.Session() as s:
            local = {p.id: (p.name, p.price) for p in s.exec(sqlmodel.select(Product)).all()}
        at_ho = {k: (r.data["name"], r.data["price"]) for k, r in ho.records("products", include_deleted=False).items()}
        assert local == at_ho
        counts = ho.usage_counts("bill_id")
        assert set(counts) == {f"B{i}" for i in range(1, bills + 1)}  # every usage reached HO
        duplicates = sum(n - 1 for n in counts.values())
        print(f"\n[seed faults: {fault}] injected={injected} usages={bills} duplicates_at_ho={duplicates}")
    finally:
        outlet.close()
        server.stop()
        ho.close()
