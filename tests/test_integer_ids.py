"""An integer primary key travels as an integer in the record's own fields, in both dialects, on SQLite and
PostgreSQL (a new user's trial: the demo's ``PromotionUsage`` has an INTEGER ``id``; HO stored ``"1"``).

The outbox keys an entity by text (``entity_id``, and the posync protocol's ``entity_id``) by design; the
record's ``data`` must keep each column's type, the id column included. Through the real reference HO over
loopback: what HO received is checked for its JSON type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
from posync.demo.models import PromotionUsage, seed_registry
from posync.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, ReferenceHO, ServerHandle, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet

SEED = {"ho_profile": "seed", "api_key": None, "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD,
        "company_id": "company-1", "store_id": "store-1", "brand_id": "brand-1",
        "initial_backoff_seconds": 0.0, "max_backoff_seconds": 0.0}
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def _is_int(value: Any) -> bool:
    return type(value) is int  # JSON true/false would be a bool, which is an int subclass


def _converge(outlet: Outlet) -> None:
    for _ in range(5):
        report = outlet.sync.sync_now()
        assert report.error is None, report.error
        if not outlet.sync.manager.status().queue:
            return
    raise AssertionError(outlet.sync.manager.queue())


# -- the seed dialect: the demo's usage upload ----------------------------------------------------------------


def test_a_usage_s_integer_id_reaches_the_seed_ho_as_an_integer(db_url: str, tmp_path: Path) -> None:
    """Before: HO stored ``{"id": "1", ...}`` for ``PromotionUsage.id == 1`` (an INTEGER column)."""
    ids = [INT32[0], -7, 0, 1, 42, INT32[1]]  # INTEGER on PostgreSQL is 32 bits
    with ReferenceHO(f"sqlite:///{tmp_path / 'seed-ho.db'}", profile="seed") as ho, \
            serve_in_thread(ho.app) as server:
        outlet = make_outlet(db_url, server.url, registry=seed_registry(), **SEED)
        try:
            with outlet.Session() as s:
                for i in ids:
                    s.add(PromotionUsage(id=i, promotion_id="promo1", bill_id=f"B{i}", discount_amount=1.5,
                                         store_id="store-1"))
                s.commit()
            _converge(outlet)
        finally:
            outlet.close()
        received = [u["data"] for u in ho.usages()]
    assert sorted(u["id"] for u in received) == sorted(ids)
    assert all(_is_int(u["id"]) for u in received), [u["id"] for u in received]
    # the other fields keep their types too; usage_id is posync's upload key, text
    assert all(type(u["discount_amount"]) is float and isinstance(u["usage_id"], str) for u in received)


# -- the posync dialect: a BIGINT key, any value, pushed and pulled back --------------------------------------


class IntKeyed(Tracked, table=True):
    __tablename__ = "test_int_keyed"
    id: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    name: str = Field(default="", max_length=40)


INT_KEYED = IntKeyed.__table__  # type: ignore[attr-defined]


@dataclass
class Env:
    outlet: Outlet
    ho: ReferenceHO
    server: ServerHandle


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory, pg_admin: sa.Engine) -> Iterator[dict[str, Env]]:
    """One outlet per database for the module; an example's id may repeat an earlier one (an update)."""
    from tests.conftest import drop_pg_database, new_pg_database

    tmp = tmp_path_factory.mktemp("intkeys")
    pg_url = new_pg_database(pg_admin)
    made: dict[str, Env] = {}
    try:
        for name, url in (("sqlite", f"sqlite:///{tmp / 'outlet.db'}"), ("postgres", pg_url)):
            ho = ReferenceHO(f"sqlite:///{tmp / f'ho-{name}.db'}", api_keys={API_KEY: None})
            server = serve_in_thread(ho.app)
            engine = posync.create_engine(url)
            posync.migrations.upgrade(engine)
            sqlmodel.SQLModel.metadata.create_all(engine, tables=[INT_KEYED])
            registry = Registry([TrackedEntity(IntKeyed, "keyed", Direction.BOTH, ConflictStrategy.CLOUD_WINS)])
            made[name] = Env(make_outlet(url, server.url, registry=registry, engine=engine), ho, server)
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


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(key=st.integers(*INT64) | st.sampled_from([INT64[0], -1, 0, 1, 2**53 + 1, INT64[1]]),
       name=st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=10))
def test_an_integer_key_is_an_integer_in_the_pushed_record_and_pulls_back(env: Env, key: int, name: str) -> None:
    outlet, ho = env.outlet, env.ho
    with outlet.Session() as s:
        row = s.get(IntKeyed, key)
        if row is None:
            s.add(IntKeyed(id=key, name=name))
        else:
            row.name = name
        s.commit()
    _converge(outlet)
    record = ho.get("keyed", str(key))  # HO keys its records by the change's entity_id, text
    assert record is not None and record.data is not None
    assert _is_int(record.data["id"]) and record.data["id"] == key, record.data
    assert record.data["name"] == name
    # drop the local row (as posync's own write, so HO is not told) and pull it back
    with outlet.engine.begin() as conn, suppressed(conn):
        conn.execute(INT_KEYED.delete().where(INT_KEYED.c.id == key))
    outlet.sync.reset_checkpoint("keyed")
    report = outlet.sync.sync_now()
    assert report.error is None, report.error
    with outlet.Session() as s:
        pulled = s.get(IntKeyed, key)
        assert pulled is not None and pulled.name == name
    assert outlet.sync.manager.status().queue == {}
