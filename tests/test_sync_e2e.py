"""Outlet ↔ reference head office over real loopback HTTP: push, pull, conflicts, poison, auth."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import posync
from posync import ConflictStrategy, ItemStatus
from posync.demo.models import Category, Order, Product, Promotion, PromotionUsage, pos_registry
from posync.models import OutboxItem
from posync.testing import Burst, Faults, ReferenceHO, Rejection, SyncHarness, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet

OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]


class HO:
    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.ref = ReferenceHO(f"sqlite:///{path / 'ho.db'}", api_keys={API_KEY: None}, **kwargs)
        self.server = serve_in_thread(self.ref.app)
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()
        self.ref.close()


@pytest.fixture
def ho(tmp_path: Path) -> Iterator[HO]:
    h = HO(tmp_path)
    yield h
    h.close()


def outlet_for(db_url: str, ho: HO, **kw: Any) -> Outlet:
    kw.setdefault("initial_backoff_seconds", 0.0)
    kw.setdefault("max_backoff_seconds", 0.0)
    return make_outlet(db_url, ho.url, **kw)


@pytest.fixture
def outlet(db_url: str, ho: HO) -> Iterator[Outlet]:
    o = outlet_for(db_url, ho)
    yield o
    o.close()


def ho_data(ho: HO, resource: str) -> dict[str, dict[str, Any]]:
    return {k: r.data for k, r in ho.ref.records(resource).items() if not r.deleted}


def outbox(o: Outlet) -> list[dict[str, Any]]:
    with o.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(OUTBOX).order_by(OUTBOX.c.id)).mappings()]


def test_push_reaches_ho_and_marks_rows_synced(outlet: Outlet, ho: HO) -> None:
    with outlet.Session() as s:
        s.add_all([Order(id="o1", total=10), Order(id="o2", total=20), Order(id="o3", total=30)])
        s.commit()
        s.get(Order, "o2").total = 25
        s.delete(s.get(Order, "o3"))
        s.commit()
    stats = SyncHarness(outlet.sync).drain()
    assert stats.applied == 2 and stats.coalesced_away == 2  # o3 never reached HO
    assert {k: v["total"] for k, v in ho_data(ho, "orders").items()} == {"o1": 10, "o2": 25}
    with outlet.Session() as s:
        o1 = s.get(Order, "o1")
        assert (o1.sync_status, o1.cloud_version) == ("synced", 1)
    assert outbox(outlet) == []
    with outlet.Session() as s:  # an update and a delete after the first push
        s.get(Order, "o1").total = 11
        s.delete(s.get(Order, "o2"))
        s.commit()
    SyncHarness(outlet.sync).drain()
    assert {k: v["total"] for k, v in ho_data(ho, "orders").items()} == {"o1": 11}
    assert ho.ref.get("orders", "o2").deleted


@pytest.mark.parametrize("max_batches", [1, 2, 3, 5])
def test_drain_stops_after_max_batches_and_leaves_nothing_leased(sqlite_url: str, ho: HO, max_batches: int) -> None:
    """The pipelined drain claims ahead (while a batch is on the wire, and in the transaction that
    settles one); it must still send exactly ``max_batches`` and give nothing back half-claimed."""
    outlet = outlet_for(sqlite_url, ho, push_batch_size=3)
    try:
        with outlet.Session() as s:
            s.add_all([Order(id=f"o{i:02d}", total=i) for i in range(20)])
            s.commit()
        stats = SyncHarness(outlet.sync).drain(max_batches=max_batches)
        assert (stats.batches, stats.applied) == (max_batches, 3 * max_batches)
        assert sorted(ho_data(ho, "orders")) == [f"o{i:02d}" for i in range(3 * max_batches)]
        statuses = [i["status"] for i in outbox(outlet)]
        assert statuses == ["pending"] * (20 - 3 * max_batches)  # nothing left in flight
    finally:
        outlet.close()


def test_an_outage_mid_drain_gives_back_every_queued_batch(tmp_path: Path) -> None:
    """Batches queue for the wire. HO goes away while applying the second batch (it still answers that
    one), with later batches claimed and queued behind it: the drain raises, every queued batch is given
    back, nothing stays in flight, and the next drain applies every change exactly once."""
    ho: HO | None = None

    def outage_after_o05(change: Any) -> None:  # HO applies o00-o05, then answers 503 to everything
        if change.entity_id == "o05" and ho is not None:
            ho.ref.faults.burst = Burst(503, count=1_000, retry_after=0)

    ho = HO(tmp_path, validators={"orders": outage_after_o05}, faults=Faults(latency=0.05))
    outlet = outlet_for(f"sqlite:///{tmp_path / 'o.db'}", ho, push_batch_size=3)
    try:
        with outlet.Session() as s:
            s.add_all([Order(id=f"o{i:02d}", total=i) for i in range(30)])
            s.commit()
        with pytest.raises(posync.TransportError):
            SyncHarness(outlet.sync).drain()
        items = outbox(outlet)
        assert {i["status"] for i in items} == {"pending"}  # nothing left leased
        assert [i["entity_id"] for i in items] == [f"o{i:02d}" for i in range(6, 30)]  # two batches settled
        ho.ref.faults.burst = None
        stats = SyncHarness(outlet.sync).drain()
        assert (stats.applied, stats.duplicates) == (24, 0)
        assert sorted(ho_data(ho, "orders")) == [f"o{i:02d}" for i in range(30)]
        assert outbox(outlet) == []
        assert set(ho.ref.store.applied_counts().values()) == {1}  # every key applied once
    finally:
        outlet.close()
        ho.close()


class _GcSampler:
    """Samples ``gc.isenabled()`` from another thread while a drain or a pull runs."""

    def __init__(self) -> None:
        self.samples: list[bool] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(gc.isenabled())
            time.sleep(0.0005)

    def __enter__(self) -> _GcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_by_default_posync_never_touches_the_collector(sqlite_url: str, tmp_path: Path) -> None:
    """Issue #10 item 16: a library must not change the host's interpreter. With the default settings a
    drain and a pull leave the cyclic GC on the whole time (sampled from another thread), automatic
    collections keep running, and a host that turned the collector off finds it off."""
    (tmp_path / "h").mkdir()
    slow = HO(tmp_path / "h", faults=Faults(latency=0.01))
    outlet = outlet_for(sqlite_url, slow, push_batch_size=2)
    try:
        with outlet.Session() as s:
            s.add_all([Order(id=f"o{i:03d}", total=i) for i in range(60)])
            s.commit()
        for i in range(60):
            slow.ref.put("products", f"p{i:03d}", {"id": f"p{i:03d}", "name": f"P{i}", "price": i})
        SyncHarness(outlet.sync).set_page_size(2)
        collections: list[int] = []

        def watch(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                collections.append(info["generation"])

        gc.enable()
        gc.callbacks.append(watch)
        try:
            with _GcSampler() as sampler:
                stats = SyncHarness(outlet.sync).drain()
                pulled = SyncHarness(outlet.sync).pull(pos_registry()["products"])
        finally:
            gc.callbacks.remove(watch)
        assert (stats.applied, pulled.applied.written) == (60, 60)
        assert sampler.samples and all(sampler.samples)
        assert collections, "automatic collections stopped during the drain"
        gc.disable()
        try:
            SyncHarness(outlet.sync).drain()
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        outlet.close()
        slow.close()


def test_the_opt_in_pause_covers_only_posyncs_database_work(sqlite_url: str, tmp_path: Path) -> None:
    """``pause_gc=True``: the collector is off only inside posync's claim/settle transactions, never while
    a batch is on the wire (HO answers after 50 ms here), and comes back as it was."""
    (tmp_path / "h").mkdir()
    slow = HO(tmp_path / "h", faults=Faults(latency=0.05))
    outlet = outlet_for(sqlite_url, slow, push_batch_size=5, pause_gc=True)
    try:
        with outlet.Session() as s:
            s.add_all([Order(id=f"o{i:03d}", total=i) for i in range(40)])
            s.commit()
        gc.enable()
        with _GcSampler() as sampler:
            stats = SyncHarness(outlet.sync).drain()
        assert stats.applied == 40 and gc.isenabled()
        off = sampler.samples.count(False) / len(sampler.samples)
        assert 0 < off < 0.5, f"the collector was off {off:.0%} of the drain"
    finally:
        outlet.close()
        slow.close()


def test_a_batch_delivered_twice_applies_once(outlet: Outlet, ho: HO) -> None:
    with outlet.Session() as s:
        s.add_all([Order(id=f"o{i}", total=i) for i in range(5)])
        s.commit()
    leases, _ = SyncHarness(outlet.sync).claim(10)
    changes = [le.change for le in leases]
    first = SyncHarness(outlet.sync).client.push(changes)
    second = SyncHarness(outlet.sync).client.push(changes)  # e.g. the first answer was lost
    assert {r.status for r in first} == {"applied"}
    assert {r.status for r in second} == {"duplicate"}
    assert [r.cloud_version for r in first] == [r.cloud_version for r in second]
    assert set(ho.ref.applied_counts("outlet-1").values()) == {1}


def test_an_edit_made_while_the_push_is_in_flight_is_not_lost(outlet: Outlet, ho: HO) -> None:
    with outlet.Session() as s:
        s.add(Order(id="o1", total=10))
        s.commit()
    leases, _ = SyncHarness(outlet.sync).claim(10)
    with outlet.Session() as s:  # the cashier edits while the batch is on the wire
        s.get(Order, "o1").total = 99
        s.commit()
    results = SyncHarness(outlet.sync).client.push([le.change for le in leases])
    SyncHarness(outlet.sync).settle(leases, results, posync.services.push.PushStats(), 0.0)
    with outlet.Session() as s:
        row = s.get(Order, "o1")
        assert (row.total, row.sync_status, row.cloud_version) == (99, "pending", 1)
    SyncHarness(outlet.sync).drain()
    assert ho_data(ho, "orders")["o1"]["total"] == 99
    with outlet.Session() as s:
        assert s.get(Order, "o1").sync_status == "synced"


def test_pull_is_incremental_applies_tombstones_and_skips_when_nothing_changed(outlet: Outlet, ho: HO) -> None:
    for i in range(7):
        ho.ref.put("products", f"p{i}", {"id": f"p{i}", "name": f"P{i}", "price": i})
    SyncHarness(outlet.sync).set_page_size(3)
    stats = SyncHarness(outlet.sync).pull_all()
    assert stats.pages >= 3 and stats.applied.written == 7
    ho.ref.put("products", "p1", {"id": "p1", "name": "P1 new", "price": 100})
    ho.ref.delete("products", "p2")
    stats = SyncHarness(outlet.sync).pull_all()
    assert (stats.applied.written, stats.applied.deleted) == (1, 1)
    with outlet.Session() as s:
        assert s.get(Product, "p1").price == 100 and s.get(Product, "p2") is None
        assert s.get(Product, "p1").sync_status == "synced"
    again = SyncHarness(outlet.sync).pull_all()
    assert "products" in again.skipped_resources and again.pages == 0
    assert outbox(outlet) == []  # applying HO's changes is never captured as a local change


def test_pulling_the_same_page_twice_applies_once(outlet: Outlet, ho: HO) -> None:
    ho.ref.put("products", "p1", {"id": "p1", "name": "A", "price": 1})
    page = SyncHarness(outlet.sync).client.pull(outlet.sync.registry["products"], 100)
    entity = outlet.sync.registry["products"]
    for _ in range(2):
        with posync.write_transaction(outlet.engine) as conn:
            stats = SyncHarness(outlet.sync).applier.apply(conn, entity, page.records, page.deleted)
    assert (stats.written, stats.skipped) == (0, 1)
    with outlet.Session() as s:
        assert s.get(Product, "p1").version == 1


NEWEST_GAP = 1.5  # seconds between two edits newest_wins must tell apart


def conflict_outlet(db_url: str, ho: HO, strategy: ConflictStrategy) -> Outlet:
    return outlet_for(db_url, ho, registry=pos_registry(strategy))


def make_conflict(o: Outlet, ho: HO, *, local_price: int = 111, ho_price: int = 222, gap: float = 0.0) -> None:
    ho.ref.put("products", "p1", {"id": "p1", "name": "Tea", "price": 100})
    o.sync.sync_now()
    with o.Session() as s:
        s.get(Product, "p1").price = local_price
        s.commit()
    time.sleep(gap)
    ho.ref.put("products", "p1", {"id": "p1", "name": "Tea", "price": ho_price})


@pytest.mark.parametrize("via", ["pull", "push"])
def test_cloud_wins_drops_the_local_change(db_url: str, ho: HO, via: str) -> None:
    o = conflict_outlet(db_url, ho, ConflictStrategy.CLOUD_WINS)
    try:
        make_conflict(o, ho)
        SyncHarness(o.sync).drain() if via == "push" else SyncHarness(o.sync).pull_all()
        o.sync.sync_now()
        with o.Session() as s:
            assert s.get(Product, "p1").price == 222
        assert ho_data(ho, "products")["p1"]["price"] == 222
        assert outbox(o) == [] and any(e["kind"] == "dropped" for e in o.sync.manager.logs())
    finally:
        o.close()


@pytest.mark.parametrize("via", ["pull", "push"])
def test_local_wins_rebases_and_pushes(db_url: str, ho: HO, via: str) -> None:
    o = conflict_outlet(db_url, ho, ConflictStrategy.LOCAL_WINS)
    try:
        make_conflict(o, ho)
        SyncHarness(o.sync).drain() if via == "push" else SyncHarness(o.sync).pull_all()
        o.sync.sync_now()
        assert ho_data(ho, "products")["p1"]["price"] == 111
        with o.Session() as s:
            row = s.get(Product, "p1")
            assert (row.price, row.sync_status, row.cloud_version) == (111, "synced", 3)
    finally:
        o.close()


def test_newest_wins_by_change_time(db_url: str, ho: HO) -> None:
    o = conflict_outlet(db_url, ho, ConflictStrategy.NEWEST_WINS)
    try:
        # the edits are further apart than HO's clock offset is known (its Date header has 1 s resolution):
        # which one is newer is a fact, not a coin toss on a loaded machine
        make_conflict(o, ho, gap=NEWEST_GAP)  # HO's edit came after the local one: HO's wins
        o.sync.sync_now()
        assert ho_data(ho, "products")["p1"]["price"] == 222
        ho.ref.put("products", "p1", {"id": "p1", "name": "Tea", "price": 300})
        time.sleep(NEWEST_GAP)
        with o.Session() as s:  # now the local edit is the newer one
            s.get(Product, "p1").price = 400
            s.commit()
        o.sync.sync_now()
        assert ho_data(ho, "products")["p1"]["price"] == 400
        with o.Session() as s:
            assert s.get(Product, "p1").price == 400
    finally:
        o.close()


@pytest.mark.parametrize("choice", ["local", "remote", "merged"])
def test_manual_keeps_both_sides_until_resolved(db_url: str, ho: HO, choice: str) -> None:
    o = conflict_outlet(db_url, ho, ConflictStrategy.MANUAL)
    try:
        make_conflict(o, ho)
        o.sync.sync_now()
        [conflict] = o.sync.manager.conflicts()
        assert (conflict["local_data"]["price"], conflict["remote_data"]["price"]) == (111, 222)
        with o.Session() as s:  # the entity's pushes wait; more local edits wait with them
            row = s.get(Product, "p1")
            assert row.sync_status == "conflict"
            row.name = "Green tea"
            s.commit()
        o.sync.sync_now()
        assert ho_data(ho, "products")["p1"]["price"] == 222
        assert {i["status"] for i in outbox(o)} <= {"conflict", "blocked"}
        resolution: Any = {"id": "p1", "name": "Merged", "price": 150} if choice == "merged" else choice
        o.sync.manager.resolve(conflict["id"], resolution)
        o.sync.sync_now()
        expected = {"local": (111, "Green tea"), "remote": (222, "Tea"), "merged": (150, "Merged")}[choice]
        at_ho = ho_data(ho, "products")["p1"]
        assert (at_ho["price"], at_ho["name"]) == expected
        with o.Session() as s:
            row = s.get(Product, "p1")
            assert (row.price, row.name, row.sync_status) == (*expected, "synced")
        assert o.sync.manager.conflicts() == [] and outbox(o) == []
        with pytest.raises(posync.ConflictStateError):
            o.sync.manager.resolve(conflict["id"], "local")
    finally:
        o.close()


def test_an_open_conflict_shows_the_local_side_as_it_is_now(db_url: str, ho: HO) -> None:
    """Found by the soak: the host deleted a row already in conflict, the inbox still showed the old local
    data, and resolving with a merged record on it failed ("needs the local row")."""
    o = conflict_outlet(db_url, ho, ConflictStrategy.MANUAL)
    try:
        make_conflict(o, ho)
        o.sync.sync_now()
        with o.Session() as s:
            s.get(Product, "p1").price = 333
            s.commit()
        [conflict] = o.sync.manager.conflicts()
        assert conflict["local_data"]["price"] == 333 and conflict["remote_data"]["price"] == 222
        with o.Session() as s:
            s.delete(s.get(Product, "p1"))
            s.commit()
        [conflict] = o.sync.manager.conflicts()
        assert (conflict["local_op"], conflict["local_data"]) == ("delete", None)
        o.sync.manager.resolve(conflict["id"], "local")
        o.sync.sync_now()
        assert "p1" not in ho_data(ho, "products") and o.sync.manager.conflicts() == []
    finally:
        o.close()


def test_custom_resolver(db_url: str, ho: HO) -> None:
    def cheapest(local: posync.LocalSide, remote: posync.RemoteSide) -> posync.Decision | posync.Merge:
        assert local.data is not None and remote.data is not None
        return posync.Merge({**remote.data, "price": min(local.data["price"], remote.data["price"])})

    o = outlet_for(db_url, ho, registry=pos_registry(product_resolver=cheapest))
    try:
        make_conflict(o, ho, local_price=90, ho_price=120)
        o.sync.sync_now()
        assert ho_data(ho, "products")["p1"]["price"] == 90
    finally:
        o.close()


def test_a_poison_record_blocks_only_its_own_entity(db_url: str, tmp_path: Path) -> None:
    def no_negative_totals(change: Any) -> Rejection | None:
        if change.data and change.data.get("total", 0) < 0:
            return Rejection("VALIDATION_ERROR", "total must not be negative")
        return None

    h = HO(tmp_path, validators={"orders": no_negative_totals})
    o = outlet_for(db_url, h)
    try:
        with o.Session() as s:
            s.add_all([Order(id="bad", total=-5), Order(id="ok1", total=1), Order(id="ok2", total=2)])
            s.commit()
        o.sync.sync_now()
        assert set(ho_data(h, "orders")) == {"ok1", "ok2"}
        [dead] = o.sync.manager.queue(ItemStatus.DEAD)
        assert dead["entity_id"] == "bad" and "total must not be negative" in dead["last_error"]
        with o.Session() as s:
            assert s.get(Order, "bad").sync_status == "failed"
            s.get(Order, "bad").table_no = "T9"  # still wrong: waits behind the dead change
            s.add(Order(id="ok3", total=3))  # everything else keeps flowing
            s.commit()
        o.sync.sync_now()
        assert set(ho_data(h, "orders")) == {"ok1", "ok2", "ok3"}
        assert [i["status"] for i in o.sync.manager.queue() if i["entity_id"] == "bad"] == ["dead", "blocked"]
        with o.Session() as s:  # an operator fixes the record and retries
            s.get(Order, "bad").total = 5
            s.commit()
        assert o.sync.manager.retry_all() == 1
        o.sync.sync_now()
        assert ho_data(h, "orders")["bad"] == {"id": "bad", "table_no": "T9", "total": 5, "status": "open"}
        assert outbox(o) == []
    finally:
        o.close()
        h.close()


def test_retryable_rejections_back_off_by_time_then_dead_letter(sqlite_url: str, tmp_path: Path) -> None:
    h = HO(tmp_path, validators={"orders": lambda c: Rejection("BUSY", "try later", retryable=True)})
    o = outlet_for(sqlite_url, h, max_retries=2, initial_backoff_seconds=0.3, max_backoff_seconds=0.3)
    try:
        with o.Session() as s:
            s.add(Order(id="o1", total=1))
            s.commit()

        def state() -> list[tuple[str, int]]:
            return [(i["status"], i["attempts"]) for i in outbox(o)]

        SyncHarness(o.sync).drain()
        assert state() == [("pending", 1)]
        SyncHarness(o.sync).drain()  # not due yet: a retry waits for its time, not for the next write
        assert state() == [("pending", 1)]
        time.sleep(0.35)
        SyncHarness(o.sync).drain()
        assert state() == [("pending", 2)]
        time.sleep(0.35)
        SyncHarness(o.sync).drain()
        assert state() == [("dead", 2)]
    finally:
        o.close()
        h.close()


def test_jwt_auth_refreshes_on_401(db_url: str, ho: HO) -> None:
    o = make_outlet(db_url, ho.url, username="posync", password="posync-password")
    try:
        with o.Session() as s:
            s.add(Order(id="o1", total=1))
            s.commit()
        assert SyncHarness(o.sync).drain().applied == 1
        ho.ref.revoke_access_tokens()  # every token issued so far now answers 401
        with o.Session() as s:
            s.get(Order, "o1").total = 2
            s.commit()
        assert SyncHarness(o.sync).drain().applied == 1
        assert "posync-password" not in repr(SyncHarness(o.sync).http.auth)
    finally:
        o.close()


def test_wrong_credentials_are_an_authentication_error_not_a_failed_change(db_url: str, ho: HO) -> None:
    o = make_outlet(db_url, ho.url, api_key="wrong-key")
    try:
        with o.Session() as s:
            s.add(Order(id="o1", total=1))
            s.commit()
        with pytest.raises(posync.AuthenticationError):
            SyncHarness(o.sync).drain()
        assert [(i["status"], i["attempts"]) for i in outbox(o)] == [("pending", 0)]
    finally:
        o.close()


def test_usage_logs_push_as_append_only(outlet: Outlet, ho: HO) -> None:
    with outlet.Session() as s:
        s.add_all([PromotionUsage(promotion_id="promo1", bill_id=f"B{i}", discount_amount=1.5) for i in range(3)])
        s.commit()
    stats = SyncHarness(outlet.sync).drain()
    assert stats.applied == 3 and len(ho.ref.usages()) == 3


def test_expired_cursor_triggers_a_full_resync(db_url: str, tmp_path: Path) -> None:
    h = HO(tmp_path, tombstone_horizon=0.0)
    o = outlet_for(db_url, h)
    try:
        for pid in ("p1", "p2", "p3"):
            h.ref.put("products", pid, {"id": pid, "name": pid, "price": 1})
        o.sync.sync_now()
        h.ref.delete("products", "p2")
        h.ref.put("products", "p9", {"id": "p9", "name": "new", "price": 9})
        with o.Session() as s:  # a local product HO has never seen survives the resync
            s.add(Product(id="local-only", name="x"))
            s.commit()
        h.ref.purge_tombstones(0.0)  # HO forgets the deletion of p2
        stats = SyncHarness(o.sync).pull_all()
        assert stats.resynced == ["products"]
        with o.Session() as s:
            ids = {p.id for p in s.exec(sa.select(Product)).scalars()}
        assert ids == {"p1", "p3", "p9", "local-only"}
    finally:
        o.close()
        h.close()


def test_demo_tables_all_converge_in_one_cycle(outlet: Outlet, ho: HO) -> None:
    ho.ref.put("categories", "c1", {"id": "c1", "name": "Bowls"})
    ho.ref.put("promotions", "x", {"id": "x", "name": "Deal", "discount_pct": 5})
    with outlet.Session() as s:
        s.add(Order(id="o1", total=1))
        s.commit()
    report = outlet.sync.sync_now()
    assert report.error is None
    with outlet.Session() as s:
        assert s.get(Category, "c1").name == "Bowls" and s.get(Promotion, "x").discount_pct == 5
    assert set(ho_data(ho, "orders")) == {"o1"}


class _NoCursorHO:
    """An HO that pages the seeds' way only (updated_since + offset, no cursor): the request's cursor is
    dropped and offset paging forced, as an HO built from seed 004 would behave."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/v1/sync/products"):
            parts = [p for p in scope["query_string"].split(b"&") if p and not p.startswith(b"cursor=")]
            if not any(p.startswith(b"offset=") for p in parts):
                parts.append(b"offset=0")
            scope = {**scope, "query_string": b"&".join(parts)}
        await self.app(scope, receive, send)


def test_pull_from_an_ho_without_cursors_uses_updated_since_and_offsets(db_url: str, tmp_path: Path) -> None:
    ref = ReferenceHO(f"sqlite:///{tmp_path / 'legacy.db'}", api_keys={API_KEY: None})
    server = serve_in_thread(_NoCursorHO(ref.app))
    o = make_outlet(db_url, server.url)
    try:
        for i in range(7):
            ref.put("products", f"p{i}", {"id": f"p{i}", "name": f"P{i}", "price": i})
        SyncHarness(o.sync).set_page_size(3)
        stats = SyncHarness(o.sync).pull(o.sync.registry["products"])
        assert stats.applied.written == 7 and stats.pages == 3
        ref.put("products", "p1", {"id": "p1", "name": "P1 new", "price": 100})
        ref.delete("products", "p2")
        stats = SyncHarness(o.sync).pull(o.sync.registry["products"])
        assert stats.applied.written == 1 and stats.applied.deleted == 1  # the overlap re-reads, by version
        with o.Session() as s:
            assert s.get(Product, "p1").price == 100 and s.get(Product, "p2") is None
    finally:
        o.close()
        server.stop()
        ref.close()


def test_a_change_that_makes_ho_fail_with_500_is_isolated_and_the_rest_flow(sqlite_url: str, tmp_path: Path) -> None:
    def crash_on_boom(change: Any) -> None:
        if change.entity_id == "boom":
            raise RuntimeError("HO bug triggered by this record")

    h = HO(tmp_path, validators={"orders": crash_on_boom})
    o = outlet_for(sqlite_url, h, max_retries=0)
    try:
        with o.Session() as s:
            s.add_all([Order(id=i, total=1) for i in ("a", "b", "boom", "c", "d", "e")])
            s.commit()
        SyncHarness(o.sync).drain()
        assert set(ho_data(h, "orders")) == {"a", "b", "c", "d", "e"}
        [dead] = o.sync.manager.queue(ItemStatus.DEAD)
        assert dead["entity_id"] == "boom" and "HO failed on this change" in dead["last_error"]
    finally:
        o.close()
        h.close()


def test_two_terminals_sharing_one_database_push_each_change_once(db_url: str, ho: HO) -> None:
    first = outlet_for(db_url, ho, push_batch_size=40)
    second = outlet_for(db_url, ho, engine=first.engine, push_batch_size=40)
    try:
        with first.Session() as s:
            s.add_all([Order(id=f"o{i}", total=i) for i in range(400)])
            s.commit()
        errors: list[BaseException] = []

        def drain(o: Outlet) -> None:
            try:
                SyncHarness(o.sync).drain()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(o,)) for o in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        SyncHarness(first.sync).drain()
        assert len(ho_data(ho, "orders")) == 400
        assert set(ho.ref.applied_counts("outlet-1").values()) == {1}
        assert sum(ho.ref.applied_counts("outlet-1").values()) == 400
        assert outbox(first) == []
    finally:
        second.sync.close()
        first.close()
