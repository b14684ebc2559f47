"""Stateful property: whatever the interleaving of local edits, HO edits, failed and retried syncs,
outlet and HO converge once the faults stop, for every conflict strategy; nothing applies twice; and
under ``manual`` neither side is ever lost before someone chooses.

Each example gets a fresh reference HO and a fresh outlet database: examples never see each other's
records, so the suite holds at soak size (``make soak``: 2,000 examples per strategy) as at CI's 12.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from typing import Any, ClassVar

import pytest
import sqlmodel
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from posync import ConflictStrategy, HOUnavailableError
from posync.demo.models import Order, Product, pos_registry
from posync.testing import ReferenceHO, SyncHarness, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet

_run_ids = itertools.count()
N_IDS = 4
# no rule stalls HO: a slower answer is the machine, loaded at soak size (two cores, several runs), and a
# timeout then is an outage the example did not ask for
REQUEST_TIMEOUT = 10.0


class _HO:
    """A reference HO of one example's own."""

    def __init__(self, directory: str) -> None:
        self.ref = ReferenceHO(f"sqlite:///{directory}/ho.db", api_keys={API_KEY: None})
        self.server = serve_in_thread(self.ref.app)

    def close(self) -> None:
        self.server.stop()
        self.ref.close()


class SyncMachine(RuleBasedStateMachine):
    strategy: ClassVar[ConflictStrategy]

    def __init__(self) -> None:
        super().__init__()
        self.run = next(_run_ids)
        self.dir = tempfile.mkdtemp(prefix="posync-conv-")
        self.ho = _HO(self.dir)
        self.outlet: Outlet = make_outlet(
            f"sqlite:///{self.dir}/outlet.db", self.ho.server.url, outlet_id=f"outlet-{self.run}",
            registry=pos_registry(self.strategy), initial_backoff_seconds=0.0, max_backoff_seconds=0.0,
            max_retries=1000, request_timeout=REQUEST_TIMEOUT, lease_seconds=30.0)
        self.seen_conflict_sides: set[tuple[int, int]] = set()

    def pid(self, n: int) -> str:
        return f"r{self.run}-p{n}"

    def oid(self, n: int) -> str:
        return f"r{self.run}-o{n}"

    # -- local edits ------------------------------------------------------------------------------

    @rule(n=st.integers(0, N_IDS - 1), total=st.integers(0, 1000))
    def local_order(self, n: int, total: int) -> None:
        with self.outlet.Session() as s:
            row = s.get(Order, self.oid(n))
            if row is None:
                s.add(Order(id=self.oid(n), total=total))
            else:
                row.total = total
            s.commit()

    @rule(n=st.integers(0, N_IDS - 1))
    def local_delete_order(self, n: int) -> None:
        with self.outlet.Session() as s:
            row = s.get(Order, self.oid(n))
            if row is not None:
                s.delete(row)
                s.commit()

    @rule(n=st.integers(0, N_IDS - 1), price=st.integers(0, 1000))
    def local_product(self, n: int, price: int) -> None:
        with self.outlet.Session() as s:
            row = s.get(Product, self.pid(n))
            if row is None:
                s.add(Product(id=self.pid(n), name="local", price=price))
            else:
                row.price = price
                row.name = "local"
            s.commit()

    @rule(n=st.integers(0, N_IDS - 1))
    def local_delete_product(self, n: int) -> None:
        with self.outlet.Session() as s:
            row = s.get(Product, self.pid(n))
            if row is not None:
                s.delete(row)
                s.commit()

    # -- HO edits ----------------------------------------------------------------------------------

    @rule(n=st.integers(0, N_IDS - 1), price=st.integers(0, 1000))
    def ho_product(self, n: int, price: int) -> None:
        self.ho.ref.put("products", self.pid(n), {"id": self.pid(n), "name": "ho", "price": price})

    @rule(n=st.integers(0, N_IDS - 1))
    def ho_delete_product(self, n: int) -> None:
        current = self.ho.ref.get("products", self.pid(n))
        if current is not None and not current.deleted:
            self.ho.ref.delete("products", self.pid(n))

    # -- syncing, with and without faults ----------------------------------------------------------

    @rule()
    def sync(self) -> None:
        self.outlet.sync.sync_now()

    @rule(fault=st.sampled_from(["drop_after_commit_rate", "error_rate", "truncate_rate"]),
          rate=st.sampled_from([0.5, 1.0]), seed=st.integers(0, 1000))
    def faulty_sync(self, fault: str, rate: float, seed: int) -> None:
        self.ho.ref.faults.update(**{fault: rate, "seed": seed})
        try:
            self.outlet.sync.sync_now()
        finally:
            self.ho.ref.faults.update(**{fault: 0.0})

    @rule()
    def pull_only(self) -> None:
        with contextlib.suppress(HOUnavailableError):  # an outage mid-run is allowed: convergence is
            SyncHarness(self.outlet.sync).pull_all()             # checked once the run is over

    @precondition(lambda self: self.strategy is ConflictStrategy.MANUAL)
    @rule(choice=st.sampled_from(["local", "remote", "merged"]))
    def resolve_one(self, choice: str) -> None:
        open_ = self.outlet.sync.manager.conflicts()
        if open_:
            c = open_[0]
            merged = {"id": c["entity_id"], "name": "merged", "price": 7}
            self.outlet.sync.manager.resolve(c["id"], merged if choice == "merged" and c["local_data"] else
                                             ("local" if choice == "merged" else choice))

    @invariant()
    def manual_keeps_both_sides(self) -> None:
        for c in self.outlet.sync.manager.conflicts():
            assert c["local_op"] and c["remote_version"] >= 1
            assert (c["local_data"] is not None) or c["local_op"] == "delete"
            assert (c["remote_data"] is not None) or c["remote_deleted"]

    # -- convergence -------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            for _ in range(6):
                for c in self.outlet.sync.manager.conflicts():
                    self.outlet.sync.manager.resolve(c["id"], "remote")
                report = self.outlet.sync.sync_now()
                if report.error is None and self.outlet.sync.manager.status().pending == 0 \
                        and not self.outlet.sync.manager.conflicts():
                    break
            assert report.error is None, report.error
            self.outlet.sync.sync_now()
            status = self.outlet.sync.manager.status()
            assert status.queue == {}, status.queue
            assert self.local_state(Product) == self.ho_state("products", ("name", "price"))
            assert self.local_state(Order) == self.ho_state("orders", ("total",))
            applied = self.ho.ref.applied_counts(f"outlet-{self.run}")
            assert all(n == 1 for n in applied.values()), applied
        finally:
            self.outlet.close()
            self.ho.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def local_state(self, model: Any) -> dict[str, tuple[Any, ...]]:
        fields = ("name", "price") if model is Product else ("total",)
        with self.outlet.Session() as s:
            rows = s.exec(sqlmodel.select(model)).all()
            return {r.id: tuple(getattr(r, f) for f in fields) for r in rows if r.id.startswith(f"r{self.run}-")}

    def ho_state(self, resource: str, fields: tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
        prefix = f"r{self.run}-"
        return {k: tuple(r.data.get(f) for f in fields) for k, r in self.ho.ref.records(resource).items()
                if k.startswith(prefix) and not r.deleted}


@pytest.mark.parametrize("strategy", list(ConflictStrategy))
def test_outlet_and_ho_converge(strategy: ConflictStrategy) -> None:
    machine = type(f"Sync_{strategy.value}", (SyncMachine,), {"strategy": strategy})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=int(os.environ.get("POSYNC_CONVERGENCE_EXAMPLES", "12")), stateful_step_count=20, deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate] if os.environ.get("POSYNC_NO_SHRINK") else list(Phase),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))


# -- the seed HO: no versions, offset pages, no deduplication ----------------------------------------------------


class SeedMachine(RuleBasedStateMachine):
    """Against the seed profile: HO edits, adds and hard-deletes products (some of it between page
    reads), the outlet uploads usages, syncs run with and without faults. Once the faults stop, a sync
    and a reconciliation leave the catalogue equal to HO's and every usage at HO at least once."""

    def __init__(self) -> None:
        super().__init__()
        from posync.demo.models import seed_registry
        from posync.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME

        self.dir = tempfile.mkdtemp(prefix="posync-seedconv-")
        self.ref = ReferenceHO(f"sqlite:///{self.dir}/ho.db", profile="seed")
        self.server = serve_in_thread(self.ref.app)
        self.outlet = make_outlet(
            f"sqlite:///{self.dir}/outlet.db", self.server.url, registry=seed_registry(), api_key=None,
            ho_profile="seed", username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD, brand_id="b1",
            company_id="company-1", store_id="store-1",
            pull_page_size=3, since_overlap_seconds=1.0, initial_backoff_seconds=0.0, max_backoff_seconds=0.0,
            max_retries=1000, request_timeout=REQUEST_TIMEOUT, lease_seconds=30.0)
        self.bills = 0

    @rule(n=st.integers(0, 2 * N_IDS), price=st.integers(0, 1000))
    def ho_put(self, n: int, price: int) -> None:
        self.ref.put("products", f"p{n}", {"sku": "S", "name": f"ho {price}", "price": price})

    @rule(n=st.integers(0, 2 * N_IDS))
    def ho_delete(self, n: int) -> None:
        self.ref.delete_record("products", f"p{n}")

    @rule()
    def usage(self) -> None:
        from posync.demo.models import PromotionUsage

        self.bills += 1
        with self.outlet.Session() as s:
            s.add(PromotionUsage(promotion_id="promo1", bill_id=f"B{self.bills}", discount_amount=10.0))
            s.commit()

    @rule()
    def sync(self) -> None:
        self.outlet.sync.sync_now()

    @rule(fault=st.sampled_from(["drop_after_commit_rate", "error_rate", "truncate_rate", "cut_rate"]),
          rate=st.sampled_from([0.5, 1.0]), seed=st.integers(0, 1000))
    def faulty_sync(self, fault: str, rate: float, seed: int) -> None:
        self.ref.faults.update(**{fault: rate, "seed": seed})
        try:
            self.outlet.sync.sync_now()
        finally:
            self.ref.faults.update(**{fault: 0.0})

    def teardown(self) -> None:
        from posync.demo.models import PromotionUsage

        try:
            for _ in range(6):
                report = self.outlet.sync.sync_now()
                if report.error is None and not report.pull.failed and not self.outlet.sync.manager.status().queue:
                    break
            self.outlet.sync.reconcile(force=True)
            assert self.outlet.sync.manager.status().queue == {}
            with self.outlet.Session() as s:
                local = {p.id: (p.name, p.price) for p in s.exec(sqlmodel.select(Product)).all()}
                usages = {u.bill_id for u in s.exec(sqlmodel.select(PromotionUsage)).all()}
            at_ho = {k: (r.data["name"], r.data["price"])
                     for k, r in self.ref.records("products", include_deleted=False).items()}
            assert local == at_ho
            assert set(self.ref.usage_counts("bill_id")) == usages
        finally:
            self.outlet.close()
            self.server.stop()
            self.ref.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def test_the_outlet_converges_with_the_seed_ho() -> None:
    run_state_machine_as_test(SeedMachine, settings=settings(
        max_examples=int(os.environ.get("POSYNC_CONVERGENCE_EXAMPLES", "12")), stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
