"""Change capture: the outbox row is written in the transaction that made the change, or not at all."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

import posync
from posync.demo.models import Order, Product
from posync.models import OutboxItem
from tests.support import Outlet, make_outlet

OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]


@pytest.fixture
def outlet(db_url: str) -> Outlet:
    o = make_outlet(db_url)
    yield o
    o.close()


def queued(outlet: Outlet) -> list[tuple[str, str, str, int | None]]:
    with outlet.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(OUTBOX.c.resource, OUTBOX.c.entity_id, OUTBOX.c.op, OUTBOX.c.entity_version)
            .order_by(OUTBOX.c.id))]


def test_create_update_delete_are_queued_in_commit_order(outlet: Outlet) -> None:
    with outlet.Session() as s:
        s.add(Order(id="o1", total=100))
        s.commit()
        order = s.get(Order, "o1")
        order.total = 120
        s.commit()
        assert order.version == 2 and order.sync_status == "pending"
        s.delete(order)
        s.commit()
    assert queued(outlet) == [("orders", "o1", "create", 1), ("orders", "o1", "update", 2),
                              ("orders", "o1", "delete", 2)]


def test_rollback_leaves_nothing_behind(outlet: Outlet) -> None:
    with outlet.Session() as s:
        s.add(Order(id="o1", total=100))
        s.flush()  # the outbox row exists inside the transaction...
        assert len(queued_in(s)) == 1
        s.rollback()  # ...and goes with it
    assert queued(outlet) == []


def queued_in(session: object) -> list[object]:
    return list(session.connection().execute(sa.select(OUTBOX.c.id)))  # type: ignore[attr-defined]


def test_unchanged_object_is_not_queued(outlet: Outlet) -> None:
    with outlet.Session() as s:
        s.add(Order(id="o1", total=100))
        s.commit()
        order = s.get(Order, "o1")
        order.total = 100  # same value: not a change
        s.commit()
    assert [q[2] for q in queued(outlet)] == ["create"]


def test_stale_write_is_refused(outlet: Outlet) -> None:
    with outlet.Session() as s:
        s.add(Order(id="o1", total=100))
        s.commit()
    with outlet.Session() as a, outlet.Session() as b:
        mine, theirs = a.get(Order, "o1"), b.get(Order, "o1")
        mine.total = 1
        a.commit()
        theirs.total = 2
        with pytest.raises(StaleDataError):
            b.commit()
    with outlet.Session() as s:
        assert s.get(Order, "o1").total == 1


def test_unit_of_work_reports_stale_write_as_posync_error(outlet: Outlet) -> None:
    with outlet.Session() as s:
        s.add(Order(id="o1", total=100))
        s.commit()
    stale = outlet.Session()
    old = stale.get(Order, "o1")
    with outlet.sync.unit_of_work(outlet.Session) as s:
        s.get(Order, "o1").total = 5
    old.total = 7
    with pytest.raises(posync.StaleWriteError) as info, outlet.sync.unit_of_work(lambda: stale):
        pass
    assert info.value.resource == "pos_order"


def test_pull_only_changes_are_not_captured(db_url: str) -> None:
    registry = posync.Registry([posync.TrackedEntity(Product, "products", posync.Direction.PULL)])
    o = make_outlet(db_url, registry=registry)
    try:
        with o.Session() as s:
            s.add(Product(id="p1", name="x"))
            s.commit()
        assert queued(o) == []
    finally:
        o.close()


def test_raw_writes_are_captured_without_enqueue(outlet: Outlet) -> None:
    with outlet.engine.begin() as conn:
        conn.execute(Order.__table__.insert().values(id="raw1", total=5, version=1, sync_status="pending",
                                                     updated_at=posync.models.utcnow()))
    assert queued(outlet) == [("orders", "raw1", "create", 1)]
    with outlet.engine.begin() as conn:
        assert outlet.sync.enqueue(conn, "orders", ["raw1"]) == 1  # a push of the row as it is, on demand
    assert queued(outlet)[-1] == ("orders", "raw1", "update", 1)


def test_registration_errors_are_clear() -> None:
    with pytest.raises(posync.ConfigurationError, match="registered twice"):
        posync.Registry([posync.TrackedEntity(Order, "orders"), posync.TrackedEntity(Order, "orders")])
    with pytest.raises(posync.ConfigurationError, match="must inherit"):
        posync.TrackedEntity(int, "ints")  # type: ignore[arg-type]


def test_an_unreadable_timestamp_from_ho_is_a_protocol_error() -> None:
    entity = posync.TrackedEntity(Product, "products")
    with pytest.raises(posync.ProtocolError, match="ISO 8601"):
        entity.from_remote({"id": "p1", "updated_at": "yesterday-ish"})
