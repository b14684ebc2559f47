"""The outbox without a head office: claiming, ordering, leases, outage behaviour."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa

from posync import HOUnavailableError
from posync.demo.models import Order
from posync.ho import PushResult
from posync.models import OutboxItem
from posync.repositories import OutboxRepository
from posync.services.push import PushStats
from posync.services.push.keys import idempotency_keys
from posync.testing import SyncHarness
from tests.support import Outlet, make_outlet

OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]


@pytest.fixture
def outlet(db_url: str) -> Outlet:
    o = make_outlet(db_url, lease_seconds=30)
    yield o
    o.close()


def add_orders(outlet: Outlet, ids: list[str]) -> None:
    with outlet.Session() as s:
        for i in ids:
            s.add(Order(id=i, total=1))
        s.commit()


def items(outlet: Outlet) -> list[dict]:
    with outlet.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(OUTBOX).order_by(OUTBOX.c.id)).mappings()]


def test_claim_takes_one_folded_change_per_entity_in_order(outlet: Outlet) -> None:
    add_orders(outlet, ["a", "b"])
    with outlet.Session() as s:
        s.get(Order, "a").total = 5
        s.commit()
    leases, nothing = SyncHarness(outlet.sync).claim(10)
    assert nothing == 0
    assert [(le.entity_id, le.op.value) for le in leases] == [("a", "create"), ("b", "create")]
    assert leases[0].change["data"]["total"] == 5  # the latest state, folded
    assert [i["status"] for i in items(outlet)] == ["inflight", "inflight"]  # the update folded into a's create


def test_a_change_made_while_its_entity_is_in_flight_waits_its_turn(outlet: Outlet) -> None:
    add_orders(outlet, ["a"])
    first, _ = SyncHarness(outlet.sync).claim(10)
    with outlet.Session() as s:
        s.get(Order, "a").total = 9
        s.commit()
    again, _ = SyncHarness(outlet.sync).claim(10)
    assert again == []  # never two changes of one entity in flight
    assert [i["op"] for i in items(outlet)] == ["create", "update"]
    assert first[0].change["data"]["total"] == 1


def test_a_claim_reads_past_due_items_it_cannot_take_to_fill_its_batch(outlet: Outlet) -> None:
    """The oldest due items belong to an entity in flight: the claim's first window takes nothing, the
    next ones fill the batch."""
    add_orders(outlet, ["a"])
    first, _ = SyncHarness(outlet.sync).claim(1)
    for total in (2, 3, 4):  # three edits of "a" queue up behind its change in flight
        with outlet.Session() as s:
            s.get(Order, "a").total = total
            s.commit()
    add_orders(outlet, ["b", "c", "d", "e"])
    leases, _ = SyncHarness(outlet.sync).claim(3)
    assert [le.entity_id for le in leases] == ["b", "c", "d"]
    assert [le.entity_id for le in first] == ["a"]


def test_create_then_delete_before_sending_sends_nothing(outlet: Outlet) -> None:
    add_orders(outlet, ["a"])
    with outlet.Session() as s:
        s.delete(s.get(Order, "a"))
        s.commit()
    leases, nothing = SyncHarness(outlet.sync).claim(10)
    assert leases == [] and nothing == 2 and items(outlet) == []


def test_outage_gives_the_batch_back_untouched(outlet: Outlet) -> None:
    add_orders(outlet, ["a", "b"])
    with pytest.raises(HOUnavailableError):
        SyncHarness(outlet.sync).push_once()
    rows = items(outlet)
    assert [r["status"] for r in rows] == ["pending", "pending"]
    assert [r["attempts"] for r in rows] == [0, 0]  # an outage is not the change's fault
    keys = [r["idempotency_key"] for r in rows]
    assert all(keys)
    with pytest.raises(HOUnavailableError):
        SyncHarness(outlet.sync).push_once()
    assert [r["idempotency_key"] for r in items(outlet)] == keys  # resent under the same keys


def test_sync_cycle_during_outage_backs_off_quietly(outlet: Outlet, caplog: pytest.LogCaptureFixture) -> None:
    add_orders(outlet, ["a"])
    caplog.set_level("DEBUG", logger="posync")
    first = SyncHarness(outlet.sync).run_cycle()
    second = SyncHarness(outlet.sync).run_cycle()
    assert first.ran and first.error and first.next_attempt_in > 0
    assert not second.ran  # inside the backoff window: nothing attempted
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 1
    assert outlet.sync.manager.status().pending == 1


def test_expired_lease_is_reclaimed_with_the_same_key(db_url: str) -> None:
    clock = [1000.0]
    o = make_outlet(db_url, lease_seconds=10)
    SyncHarness(o.sync).set_clock(lambda: clock[0])
    try:
        add_orders(o, ["a"])
        first, _ = SyncHarness(o.sync).claim(10)
        clock[0] += 11  # the worker that took it died
        again, _ = SyncHarness(o.sync).claim(10)
        assert [le.change for le in again] == [le.change for le in first]
    finally:
        o.close()


def test_claim_uses_the_due_index(sqlite_url: str) -> None:
    """O(batch), not O(queue): the due-items query is an index range scan (bench/bench_claim.py measures it)."""
    outlet = make_outlet(sqlite_url)
    with outlet.engine.connect() as conn:
        for after, params in ((False, ("pending", 1.0, 10)), (True, ("pending", 1.0, 0.5, 7, 10))):
            sql = OutboxRepository.due_sql("sqlite", after)
            plans = [str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
            # a range of the due index, bounded above by now (and below by the window's start)
            assert any(p.startswith("SEARCH o USING INDEX ix_posync_outbox_due (status=? AND available_at")
                       and p.endswith("available_at<?)") for p in plans), plans
            # the "alone in its entity" check reads the entity index only, never the table
            assert "SEARCH p USING COVERING INDEX ix_posync_outbox_entity (resource=? AND entity_id=?)" in plans
            assert not any("TEMP B-TREE" in p or "SCAN" in p for p in plans)  # no sort or walk of the queue
    outlet.close()


def test_an_entitys_items_are_read_through_the_entity_index(sqlite_url: str) -> None:
    """O(entity), not O(queue): every statement that looks for one entity's items seeks the entity
    index, also where it filters on status (SQLite's planner would otherwise take the due index for
    ``status = ?`` and walk every pending item)."""
    outlet = make_outlet(sqlite_url)
    add_orders(outlet, [f"o{i}" for i in range(20)])
    statements: list[str] = []
    repo = OutboxRepository()
    with outlet.engine.begin() as conn:
        raw = conn.connection.driver_connection
        raw.set_trace_callback(statements.append)  # the SQL as run, with its values
        keys = [("orders", "o1"), ("orders", "o2")]
        repo.rebase_followers(conn, [(*k, 1) for k in keys], repo.still_queued(conn, keys))
        repo.hold_followers(conn, ("orders", "o3"), time.time() + 60)
        repo.outstanding(conn, [("orders", "o4"), ("orders", "o5")])
        raw.set_trace_callback(None)
        by_entity = [sql for sql in statements if "entity_id" in sql and "posync_outbox" in sql]
        assert len(by_entity) >= 4, statements
        for sql in by_entity:
            plan = [str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
            assert any("ix_posync_outbox_entity (resource=? AND entity_id=?)" in p for p in plan), (sql, plan)
            assert not any("ix_posync_outbox_due" in p or p.startswith("SCAN") for p in plan), (sql, plan)
    outlet.close()


@pytest.mark.parametrize("returning", [True, False], ids=["delete-returning", "select-then-delete"])
def test_a_settle_after_the_lease_ran_out_changes_nothing(db_url: str, returning: bool) -> None:
    """A worker whose lease expired (another took the change over) must not settle it: the item
    stays in flight with its new owner, who settles it. Both settle paths: ``DELETE ... RETURNING`` and the
    read-then-delete fallback for SQLite < 3.35."""
    clock = [time.time() + 5]  # past the capture time of the orders below
    slow, fast = make_outlet(db_url, lease_seconds=10), make_outlet(db_url, lease_seconds=10)
    for o in (slow, fast):
        SyncHarness(o.sync).set_clock(lambda: clock[0])
        o.engine.dialect.delete_returning = returning and o.engine.dialect.delete_returning
    try:
        add_orders(slow, ["a", "b"])
        mine, _ = SyncHarness(slow.sync).claim(1)  # "a"
        clock[0] += 11
        theirs, _ = SyncHarness(fast.sync).claim(10)  # "a" again (lease ran out) and "b"
        assert sorted(le.entity_id for le in theirs) == ["a", "b"]
        stats = PushStats()
        SyncHarness(slow.sync).settle(mine, [PushResult(status="applied", cloud_version=1)], stats, 1.0)
        assert stats.applied == 0
        fast_owner = SyncHarness(fast.sync).owner
        assert [(i["status"], i["lease_owner"]) for i in items(slow)] == [("inflight", fast_owner)] * 2
        SyncHarness(fast.sync).settle(theirs, [PushResult(status="applied", cloud_version=1)] * 2, stats, 1.0)
        assert stats.applied == 2 and items(fast) == []
        with fast.engine.connect() as conn:
            rows = conn.execute(sa.select(Order.sync_status, Order.cloud_version).order_by(Order.id)).all()
        assert [tuple(r) for r in rows] == [("synced", 1)] * 2
    finally:
        slow.close()
        fast.close()


def test_idempotency_keys_are_distinct_time_ordered_uuid7() -> None:
    """Keys are UUIDv7 (RFC 9562): unique, stamped with the current millisecond, later batches sort after."""
    before = time.time_ns() // 1_000_000
    first = list(idempotency_keys(2_000))
    time.sleep(0.002)
    second = list(idempotency_keys(10))
    after = time.time_ns() // 1_000_000
    assert len(set(first + second)) == 2_010
    for key in first + second:
        u = uuid.UUID(key)
        assert (len(key), u.version, u.variant) == (32, 7, uuid.RFC_4122)
        assert before <= u.int >> 80 <= after
    assert max(first) < min(second)
