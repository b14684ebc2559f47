"""Every column type SQLAlchemy and SQLModel offer round-trips push and pull, on SQLite and PostgreSQL.

Issue #10 item 8 (JSON sent as Python repr text, an Enum as ``'Color.BLUE'``, a date breaking the pull
on SQLite, ``DataError`` on PostgreSQL) and item 9 (a non-UTC timestamp from HO stored seven hours off on
SQLite), and issue #11 item 7 (SQLModel's own ``UTCDateTime``, what a plain ``datetime`` field is).

Property: a row of generated values, written by the host, pushed to the reference HO (which keeps the
JSON it receives), dropped locally and pulled back, reads exactly as it was written.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlmodel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Field

import posync
from posync import ConflictStrategy, Direction, Registry, Tracked, TrackedEntity
from posync.capture import suppressed
from posync.testing import ReferenceHO, ServerHandle, SyncHarness, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Typed(Tracked, table=True):
    __tablename__ = "test_typed"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(default="", max_length=40)
    note: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    qty: int = 0
    big: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, default=0))
    ratio: float = 0.0
    price: Decimal = Field(default=Decimal("0"), sa_column=sa.Column(sa.Numeric(14, 2), nullable=False,
                                                                      default=Decimal("0")))
    flag: bool = False
    day: date | None = None
    at: time | None = None
    stamp: datetime | None = None  # SQLModel's UTCDateTime
    naive: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=False), nullable=True))
    aware: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True))
    color: Color = Color.RED
    meta: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    blob: bytes | None = None
    span: timedelta | None = None


TYPED = Typed.__table__  # type: ignore[attr-defined]
COLUMNS = [c.name for c in TYPED.columns if c.name not in posync.models.tracked.BOOKKEEPING_COLUMNS]


def registry() -> Registry:
    return Registry([TrackedEntity(Typed, "typed", Direction.BOTH, ConflictStrategy.CLOUD_WINS)])


@dataclass
class Env:
    outlet: Outlet
    ho: ReferenceHO
    server: ServerHandle


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory, pg_admin: sa.Engine) -> Iterator[dict[str, Env]]:
    """One outlet per database for the module (each example writes rows of its own ids)."""
    from tests.conftest import drop_pg_database, new_pg_database

    tmp = tmp_path_factory.mktemp("types")
    pg_url = new_pg_database(pg_admin)
    made: dict[str, Env] = {}
    try:
        for name, url in (("sqlite", f"sqlite:///{tmp / 'outlet.db'}"), ("postgres", pg_url)):
            ho = ReferenceHO(f"sqlite:///{tmp / f'ho-{name}.db'}", api_keys={API_KEY: None})
            server = serve_in_thread(ho.app)
            engine = posync.create_engine(url)
            posync.migrations.upgrade(engine)
            sqlmodel.SQLModel.metadata.create_all(engine, tables=[TYPED])
            made[name] = Env(make_outlet(url, server.url, registry=registry(), engine=engine), ho, server)
        yield made
    finally:
        for env in made.values():
            env.outlet.close()
            env.server.stop()
            env.ho.close()
        drop_pg_database(pg_admin, pg_url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest, envs: dict[str, Env]) -> Env:
    return envs[request.param]


# -- values both databases can hold -------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
_offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_moments = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2100, 12, 30))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=8)

rows = st.fixed_dictionaries({
    "name": _text.filter(lambda t: len(t) <= 40),
    "note": st.none() | _text,
    "qty": st.integers(-(2**31), 2**31 - 1),
    "big": st.integers(-(2**63), 2**63 - 1),
    "ratio": st.floats(allow_nan=False, allow_infinity=False),
    "price": st.decimals(min_value=-(10**11), max_value=10**11, places=2, allow_nan=False, allow_infinity=False),
    "flag": st.booleans(),
    "day": st.none() | st.dates(min_value=date(1, 1, 1)),
    "at": st.none() | st.times(),
    "stamp": st.none() | st.builds(lambda m, tz: m.replace(tzinfo=tz), _moments, _offsets),
    "naive": st.none() | _moments,
    "aware": st.none() | st.builds(lambda m, tz: m.replace(tzinfo=tz), _moments, _offsets),
    "color": st.sampled_from(Color),
    "meta": st.none() | st.dictionaries(_text, _json, max_size=4),
    "blob": st.none() | st.binary(max_size=64),
    "span": st.none() | st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=30)),
})


def _same(column: str, wrote: Any, read: Any) -> bool:
    if isinstance(wrote, datetime) and wrote.tzinfo is not None:  # one instant; read back in UTC
        return read is not None and read.replace(tzinfo=read.tzinfo or UTC) == wrote
    if isinstance(wrote, Decimal):
        return read == wrote
    return bool(read == wrote)


def _read(outlet: Outlet, key: uuid.UUID) -> dict[str, Any] | None:
    with outlet.Session() as s:
        row = s.get(Typed, key)
        return None if row is None else {c: getattr(row, c) for c in COLUMNS}


def _converge(outlet: Outlet) -> None:
    for _ in range(5):
        report = outlet.sync.sync_now()
        assert report.error is None, report.error
        if not outlet.sync.manager.status().queue:
            return
    raise AssertionError(outlet.sync.manager.queue())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(values=rows)
def test_every_column_type_round_trips_push_and_pull(env: Env, values: dict[str, Any]) -> None:
    outlet, ho = env.outlet, env.ho
    key = uuid.uuid4()
    with outlet.Session() as s:
        s.add(Typed(id=key, **values))
        s.commit()
    written = _read(outlet, key)
    assert written is not None
    _converge(outlet)
    record = ho.get("typed", str(key))
    assert record is not None and record.data is not None
    wire = record.data
    assert wire["id"] == str(key)
    assert wire["color"] == values["color"].value  # the member's value, not 'Color.BLUE'
    assert wire["meta"] == values["meta"]  # a JSON value, not its Python repr
    # drop the local row (as posync's own write, so HO is not told) and pull it back from HO
    with outlet.engine.begin() as conn, suppressed(conn):
        conn.execute(TYPED.delete().where(TYPED.c.id == key))
    outlet.sync.reset_checkpoint("typed")
    report = outlet.sync.sync_now()
    assert report.error is None, report.error
    pulled = _read(outlet, key)
    assert pulled is not None
    for column in COLUMNS:
        assert _same(column, written[column], pulled[column]), (column, written[column], pulled[column])
    assert outlet.sync.manager.status().queue == {}


def test_a_timestamp_with_an_offset_from_ho_is_one_instant(env: Env) -> None:
    """Item 9: ``08:00+07:00`` from HO is 01:00 UTC in the outlet (SQLite included), and goes back to HO as
    the same instant, never as ``08:00+00:00``."""
    outlet, ho = env.outlet, env.ho
    key = str(uuid.uuid4())
    ho.put("typed", key, {"id": key, "name": "from HO", "qty": 1, "big": 2, "ratio": 0.5, "price": "10.50",
                          "flag": True, "color": "blue", "aware": "2026-01-01T08:00:00+07:00",
                          "stamp": "2026-01-01T08:00:00+07:00", "naive": "2026-01-01T08:00:00+07:00"})
    SyncHarness(outlet.sync).pull_all(force=True)
    row = _read(outlet, uuid.UUID(key))
    assert row is not None
    moment = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert row["aware"].replace(tzinfo=row["aware"].tzinfo or UTC) == moment
    assert row["stamp"] == moment and row["naive"] == moment.replace(tzinfo=None)  # a naive column holds UTC
    assert row["price"] == Decimal("10.50") and row["color"] is Color.BLUE
    with outlet.Session() as s:
        s.get(Typed, uuid.UUID(key)).name = "edited at the outlet"
        s.commit()
    _converge(outlet)
    data = ho.get("typed", key).data  # type: ignore[union-attr]
    for column in ("aware", "stamp", "naive"):
        assert datetime.fromisoformat(data[column]) == moment, (column, data[column])


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("qty", "seven", "expected an integer"),
    ("big", 2**70, "does not fit"),
    ("color", "green", "is not one of"),
    ("day", "01/02/2026", "ISO 8601 date"),
    ("price", {"amount": 1}, "decimal"),
    ("name", "x" * 41, "do not fit a column of 40"),
    ("blob", "not base64!", "base64"),
])
def test_a_value_that_does_not_fit_fails_the_page_and_changes_nothing(env: Env, field: str, value: Any,
                                                                      reason: str) -> None:
    outlet, ho = env.outlet, env.ho
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    ho.put("typed", good, {"id": good, "name": "good"})
    ho.put("typed", bad, {"id": bad, "name": "bad", field: value})
    stats = SyncHarness(outlet.sync).pull_all(force=True)
    assert reason in stats.failed.get("typed", ""), stats.failed
    assert _read(outlet, uuid.UUID(good)) is None  # the page failed as a whole
    ho.put("typed", bad, {"id": bad, "name": "fixed"})  # HO fixes the record: the resource recovers
    stats = SyncHarness(outlet.sync).pull_all(force=True)
    assert stats.failed == {}
    assert _read(outlet, uuid.UUID(good)) is not None and _read(outlet, uuid.UUID(bad))["name"] == "fixed"


def test_model_fields_ho_does_not_send_are_left_alone(env: Env, tmp_path: Path) -> None:
    """Issue #11 item 6: HO fields the model lacks are ignored; columns HO does not send keep their value."""
    outlet, ho = env.outlet, env.ho
    key = str(uuid.uuid4())
    ho.put("typed", key, {"id": key, "name": "first", "qty": 5, "unknown_to_the_outlet": [1, 2]})
    SyncHarness(outlet.sync).pull_all(force=True)
    with outlet.engine.begin() as conn, suppressed(conn):
        conn.execute(TYPED.update().where(TYPED.c.id == uuid.UUID(key)).values(note="local note"))
    ho.put("typed", key, {"id": key, "name": "second"})
    SyncHarness(outlet.sync).pull_all(force=True)
    row = _read(outlet, uuid.UUID(key))
    assert row is not None and (row["name"], row["qty"], row["note"]) == ("second", 5, "local note")
