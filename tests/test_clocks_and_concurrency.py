"""Clocks that move and outlets that sync from two processes.

Issue #10 item 14 (an outlet clock set back: nothing may wait on it), item 17 (another process's push in
flight is not a conflict), item 18 (``newest_wins`` compares in one clock when HO's runs hours ahead).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from posync import ConflictStrategy
from posync.demo.models import Category, Order, Product, pos_registry
from posync.services.push import PushStats
from posync.testing import ReferenceHO, Rejection, ServerHandle, SyncHarness, serve_in_thread
from tests.support import API_KEY, make_outlet

DAY = 86400.0


class HO:
    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.ref = ReferenceHO(f"sqlite:///{path / 'ho.db'}", api_keys={API_KEY: None}, **kwargs)
        self.server: ServerHandle = serve_in_thread(self.ref.app)
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()
        self.ref.close()


@pytest.fixture
def ho(tmp_path: Path) -> Iterator[HO]:
    h = HO(tmp_path)
    yield h
    h.close()


def test_a_clock_set_back_a_day_makes_nothing_wait(db_url: str, tmp_path: Path) -> None:
    """Before: a sale captured while the outlet's clock ran a day fast waited 24 h, later sales overtook
    it, and a retry scheduled then waited a day too."""
    busy = {"o2": 1}

    def reject_once(change: Any) -> Rejection | None:
        if busy.get(change.entity_id):
            busy[change.entity_id] -= 1
            return Rejection("BUSY", "try again", retryable=True)
        return None

    h = HO(tmp_path, validators={"orders": reject_once})
    now = [time.time() + DAY]  # the outlet's clock, a day fast
    o = make_outlet(db_url, h.url, clock=lambda: now[0], initial_backoff_seconds=30, max_backoff_seconds=60)
    try:
        with o.Session() as s:
            s.add(Order(id="o1", total=1))
            s.add(Order(id="o2", total=2))
            s.commit()
        h.ref.faults.update(error_rate=1.0, error_status=503)
        assert o.sync.sync_now().error is not None  # offline while the clock is fast
        h.ref.faults.reset()
        report = o.sync.sync_now()
        assert report.push.applied == 1 and report.push.rejected == 1  # o2 waits out a 15-30 s retry
        now[0] = time.time()  # someone corrects the clock
        with o.Session() as s:
            s.add(Order(id="o3", total=3))  # captured with the right clock
            s.commit()
        report = o.sync.sync_now()
        assert report.push.applied == 2, report  # o2 no longer waits a day, o3 goes too
        assert sorted(h.ref.records("orders")) == ["o1", "o2", "o3"]
        assert o.sync.manager.status().queue == {}
    finally:
        o.close()
        h.close()


def test_a_crashed_workers_lease_does_not_outlast_a_clock_set_back(sqlite_url: str, ho: HO) -> None:
    now = [time.time() + DAY]
    o = make_outlet(sqlite_url, ho.url, clock=lambda: now[0], lease_seconds=60)
    try:
        with o.Session() as s:
            s.add(Order(id="o1", total=1))
            s.commit()
        leases, _ = SyncHarness(o.sync).claim()  # a worker leases it for 60 s (of the fast clock) and dies
        assert len(leases) == 1
        now[0] = time.time()
        assert SyncHarness(o.sync).drain().applied == 1
    finally:
        o.close()


def test_the_outage_backoff_is_not_fooled_by_the_wall_clock(sqlite_url: str, ho: HO) -> None:
    now = [time.time() + DAY]
    o = make_outlet(sqlite_url, ho.url, clock=lambda: now[0], outage_initial_backoff_seconds=0.2,
                    outage_max_backoff_seconds=0.2)
    try:
        ho.ref.faults.update(error_rate=1.0, error_status=503)
        assert SyncHarness(o.sync).run_cycle().error is not None
        ho.ref.faults.reset()
        now[0] = time.time()  # the clock is set back a day
        time.sleep(1.2)  # the 503 said Retry-After: 1
        assert SyncHarness(o.sync).run_cycle().ran  # monotonic: due now, whatever the wall clock says
    finally:
        o.close()


@pytest.mark.parametrize("strategy", [ConflictStrategy.MANUAL, ConflictStrategy.LOCAL_WINS])
def test_another_processes_push_in_flight_is_not_a_conflict(db_url: str, ho: HO, strategy: ConflictStrategy) -> None:
    """Two processes sync one outlet. While the first one's push is on the wire (HO has applied it, its
    answer not yet settled), the second one pulls the same record back. Before: under ``manual`` the
    in-flight item was marked conflict and the inbox held a conflict although HO had exactly the
    outlet's data; under ``local_wins`` HO got an extra version."""
    registry = pos_registry(strategy)
    first = make_outlet(db_url, ho.url, registry=registry)
    second = make_outlet(db_url, ho.url, registry=registry, engine=first.engine)
    try:
        ho.ref.put("products", "p1", {"id": "p1", "sku": "P1", "name": "Tea", "price": 10})
        first.sync.sync_now()
        with first.Session() as s:
            s.get(Product, "p1").price = 12
            s.commit()
        leases, _ = SyncHarness(first.sync).claim()
        results = SyncHarness(first.sync).client.push([le.change for le in leases])  # HO applies it: version 2
        stats = SyncHarness(second.sync).pull_all()
        assert stats.applied.conflicts == 0
        SyncHarness(first.sync).settle(leases, results, PushStats(), 0.0)
        first.sync.sync_now()
        assert first.sync.manager.conflicts() == [] and first.sync.manager.status().queue == {}
        record = ho.ref.get("products", "p1")
        assert record is not None and (record.version, record.data["price"]) == (2, 12)
        with first.Session() as s:
            row = s.get(Product, "p1")
            assert (row.price, row.cloud_version, row.sync_status) == (12, 2, "synced")
    finally:
        second.sync.close()
        first.close()


def test_newest_wins_compares_in_hos_clock(db_url: str, ho: HO) -> None:
    """HO's clock runs 3 h ahead. HO edits a category; a second later the outlet edits it. Before: HO's
    stamp (3 h "later") beat the outlet's newer edit. posync estimates HO's clock offset from HO's answers."""
    o = make_outlet(db_url, ho.url, registry=pos_registry())
    try:
        ho.ref.faults.update(clock_skew=3 * 3600)
        ho.ref.put("categories", "c1", {"id": "c1", "name": "Bowls"})
        o.sync.sync_now()
        assert abs(SyncHarness(o.sync).client.clock.seconds - 3 * 3600) < 5
        ho.ref.put("categories", "c1", {"id": "c1", "name": "HO's rename"})
        time.sleep(1.1)
        with o.Session() as s:
            s.get(Category, "c1").name = "the outlet's later rename"
            s.commit()
        o.sync.sync_now()
        assert ho.ref.get("categories", "c1").data["name"] == "the outlet's later rename"  # type: ignore[union-attr]
        with o.Session() as s:
            assert s.get(Category, "c1").name == "the outlet's later rename"
    finally:
        o.close()


def test_an_earlier_outlet_edit_still_loses_to_a_later_ho_edit(db_url: str, ho: HO) -> None:
    o = make_outlet(db_url, ho.url, registry=pos_registry())
    try:
        ho.ref.faults.update(clock_skew=-3 * 3600)  # HO's clock behind this time
        ho.ref.put("categories", "c1", {"id": "c1", "name": "Bowls"})
        o.sync.sync_now()
        with o.Session() as s:
            s.get(Category, "c1").name = "outlet first"
            s.commit()
        time.sleep(1.1)
        ho.ref.put("categories", "c1", {"id": "c1", "name": "HO later"})
        SyncHarness(o.sync).pull_all()
        with o.Session() as s:
            assert s.get(Category, "c1").name == "HO later"
    finally:
        o.close()
