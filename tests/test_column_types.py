"""Column types beyond str/int survive the driver-level reads of push and pull: a UUID primary key,
a Decimal, a timezone-aware datetime and a NULL, on SQLite (which stores UUIDs as hex and datetimes
as text) and on PostgreSQL (native types)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
import sqlmodel
from sqlmodel import Field

from posync import ConflictStrategy, Tracked
from posync.demo.models import pos_registry
from posync.registry import Registry, TrackedEntity
from posync.testing import ReferenceHO, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet


class Ticket(Tracked, table=True):
    __tablename__ = "test_ticket"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    amount: Decimal = Field(sa_column=sa.Column(sa.Numeric(12, 2), nullable=False))
    opened_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    note: str | None = None


def registry() -> Registry:
    return Registry([*pos_registry(), TrackedEntity(Ticket, "tickets", strategy=ConflictStrategy.CLOUD_WINS)])


@pytest.fixture
def pair(db_url: str) -> Iterator[tuple[Outlet, ReferenceHO]]:
    with ReferenceHO(db_url, api_keys={API_KEY: None}) as ho, serve_in_thread(ho.app) as server:
        outlet = make_outlet(db_url, server.url, registry=registry())
        sqlmodel.SQLModel.metadata.create_all(outlet.engine, tables=[Ticket.__table__])  # type: ignore[attr-defined]
        try:
            yield outlet, ho
        finally:
            outlet.close()


def test_uuid_decimal_datetime_and_null_round_trip(pair: tuple[Outlet, ReferenceHO]) -> None:
    outlet, ho = pair
    ids = [uuid.uuid4() for _ in range(3)]
    opened = datetime(2026, 11, 23, 9, 30, 15, 250000, tzinfo=UTC)
    with outlet.Session() as s:
        s.add_all([Ticket(id=ids[0], amount=Decimal("12.50"), opened_at=opened, note="table 4"),
                   Ticket(id=ids[1], amount=Decimal("0.05"), opened_at=opened, note=None)])
        s.commit()
        s.add(Ticket(id=ids[2], amount=Decimal("99.99"), opened_at=opened))
        s.commit()
        s.get(Ticket, ids[2]).amount = Decimal("100.00")  # an update of a UUID-keyed row
        s.commit()
    stats = outlet.sync.push.drain()
    assert stats.applied == 3 and not stats.errors

    sent = {k: r.data for k, r in ho.records("tickets").items()}
    assert set(sent) == {str(i) for i in ids}
    assert sent[str(ids[0])] == {"id": str(ids[0]), "amount": "12.50", "opened_at": opened.isoformat(),
                                 "note": "table 4"}
    assert sent[str(ids[1])]["note"] is None
    assert sent[str(ids[2])]["amount"] == "100.00"
    with outlet.Session() as s:  # every row was found again by its UUID and marked synced
        assert {(t.sync_status, t.cloud_version) for t in s.exec(sqlmodel.select(Ticket))} == {("synced", 1)}

    # HO edits one ticket; the pull writes it back through the same key and column conversions
    ho.put("tickets", str(ids[1]), {"id": str(ids[1]), "amount": "7.25", "opened_at": "2026-11-23T10:00:00+00:00",
                                     "note": "from HO"})
    outlet.sync.sync_now()
    with outlet.Session() as s:
        t = s.get(Ticket, ids[1])
        assert (t.amount, t.note, t.cloud_version, t.sync_status) == (Decimal("7.25"), "from HO", 2, "synced")
        assert t.opened_at.replace(tzinfo=t.opened_at.tzinfo or UTC) == datetime(2026, 11, 23, 10, tzinfo=UTC)
