"""The outbox without a head office: claiming, ordering, leases, outage behaviour."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from posync import HOUnavailableError, ItemStatus
from posync.demo.models import Order
from posync.models import OutboxItem
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
    leases, nothing = outlet.sync.push.claim(10)
    assert nothing == 0
    assert [(le.entity_id, le.op.value) for le in leases] == [("a", "create"), ("b", "create")]
    assert leases[0].change["data"]["total"] == 5  # the latest state, folded
    assert [i["status"] for i in items(outlet)] == ["inflight", "inflight"]  # the update folded into a's create


def test_a_change_made_while_its_entity_is_in_flight_waits_its_turn(outlet: Outlet) -> None:
    add_orders(outlet, ["a"])
    first, _ = outlet.sync.push.claim(10)
    with outlet.Session() as s:
        s.get(Order, "a").total = 9
        s.commit()
    again, _ = outlet.sync.push.claim(10)
    assert again == []  # never two changes of one entity in flight
    assert [i["op"] for i in items(outlet)] == ["create", "update"]
    assert first[0].change["data"]["total"] == 1


def test_create_then_delete_before_sending_sends_nothing(outlet: Outlet) -> None:
    add_orders(outlet, ["a"])
    with outlet.Session() as s:
        s.delete(s.get(Order, "a"))
        s.commit()
    leases, nothing = outlet.sync.push.claim(10)
    assert leases == [] and nothing == 2 and items(outlet) == []


def test_outage_gives_the_batch_back_untouched(outlet: Outlet) -> None:
    add_orders(outlet, ["a", "b"])
    with pytest.raises(HOUnavailableError):
        outlet.sync.push.push_once()
    rows = items(outlet)
    assert [r["status"] for r in rows] == ["pending", "pending"]
    assert [r["attempts"] for r in rows] == [0, 0]  # an outage is not the change's fault
    keys = [r["idempotency_key"] for r in rows]
    assert all(keys)
    with pytest.raises(HOUnavailableError):
        outlet.sync.push.push_once()
    assert [r["idempotency_key"] for r in items(outlet)] == keys  # resent under the same keys


def test_sync_cycle_during_outage_backs_off_quietly(outlet: Outlet, caplog: pytest.LogCaptureFixture) -> None:
    add_orders(outlet, ["a"])
    caplog.set_level("DEBUG", logger="posync")
    first = outlet.sync.worker.run_cycle()
    second = outlet.sync.worker.run_cycle()
    assert first.ran and first.error and first.next_attempt_in > 0
    assert not second.ran  # inside the backoff window: nothing attempted
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 1
    assert outlet.sync.manager.status().pending == 1


def test_expired_lease_is_reclaimed_with_the_same_key(db_url: str) -> None:
    clock = [1000.0]
    o = make_outlet(db_url, lease_seconds=10)
    o.sync.push._clock = lambda: clock[0]
    try:
        add_orders(o, ["a"])
        first, _ = o.sync.push.claim(10)
        clock[0] += 11  # the worker that took it died
        again, _ = o.sync.push.claim(10)
        assert [le.change for le in again] == [le.change for le in first]
    finally:
        o.close()


def test_claim_uses_the_due_index(sqlite_url: str) -> None:
    """O(batch), not O(queue): the due-items query is an index range scan (bench/bench_claim.py measures it)."""
    outlet = make_outlet(sqlite_url)
    stmt = (sa.select(OUTBOX.c.id).where(OUTBOX.c.status == ItemStatus.PENDING.value, OUTBOX.c.available_at <= 1.0)
            .order_by(OUTBOX.c.available_at, OUTBOX.c.id).limit(10))
    sql = str(stmt.compile(outlet.engine, compile_kwargs={"literal_binds": True}))
    with outlet.engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "USING COVERING INDEX ix_posync_outbox_due" in plan or "USING INDEX ix_posync_outbox_due" in plan
    assert "TEMP B-TREE" not in plan  # no sort of the whole queue
    outlet.close()
