"""Shared fixtures: a fresh database per test on SQLite and on the real PostgreSQL server.

PostgreSQL tests never skip: if the server at POSYNC_PG_URL (default 127.0.0.1:5432, database ``test``)
cannot be reached, the fixture fails the test. Each PostgreSQL test gets its own throw-away database so
parallel runs and helpers never see each other's tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

PG_ADMIN_URL = os.environ.get("POSYNC_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _admin_engine() -> Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # a down server is a failure here, never a skip
        pytest.fail(f"PostgreSQL at {make_url(PG_ADMIN_URL).render_as_string()} is not reachable: {exc}")
    yield engine
    engine.dispose()


def new_pg_database(admin: Engine) -> str:
    name = f"posync_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin: Engine, url: str) -> None:
    name = make_url(url).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    url = new_pg_database(pg_admin)
    yield url
    drop_pg_database(pg_admin, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outlet.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run the test once on SQLite and once on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outlet.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def ho(db_url: str) -> Iterator[Any]:
    """A reference head office on the test's database (modules with their own ``ho`` override it)."""
    from posync.testing import ReferenceHO

    with ReferenceHO(db_url) as ref:
        yield ref


@pytest.fixture
def server(ho: Any) -> Iterator[Any]:
    """The module's ``ho`` (a ReferenceHO) served over loopback HTTP."""
    from posync.testing import serve_in_thread

    with serve_in_thread(ho.app) as handle:
        yield handle


@pytest.fixture
def photo_ho() -> Iterator[Any]:
    """The shipped photo HO, served on loopback; ``image_url`` points at it."""
    from posync.testing import serve_in_thread
    from posync.testing.photos import PhotoHO

    ho = PhotoHO()
    with serve_in_thread(ho.app) as server:
        ho.base_url = server.url
        yield ho
