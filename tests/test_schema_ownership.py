"""posync's tables stay posync's (issue 18, item 2): the host's ``create_all`` never makes them, the host's
Alembic autogenerate leaves them alone with ``posync.migrations.include_object``, and ``Posync(...)`` refuses
a schema posync's migrations did not make. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import sqlmodel
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import posync
from posync.demo.models import pos_registry
from posync.migrations import HEAD, downgrade, include_object, upgrade


def _posync_tables(engine: sa.Engine) -> set[str]:
    return {n for n in sa.inspect(engine).get_table_names() if n.startswith("posync_")}


def _start(engine: sa.Engine) -> posync.Posync:
    return posync.Posync(engine, pos_registry(), posync.PosyncSettings(api_key="k"))


def test_the_hosts_create_all_makes_only_the_hosts_tables(db_url: str) -> None:
    engine = posync.create_engine(db_url)
    try:
        sqlmodel.SQLModel.metadata.create_all(engine)  # the host's own, with posync imported
        assert _posync_tables(engine) == set()
        assert {"pos_order", "pos_product"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_hosts_autogenerate_proposes_nothing_for_posyncs_tables(db_url: str) -> None:
    engine = posync.create_engine(db_url)
    try:
        upgrade(engine)
        sqlmodel.SQLModel.metadata.create_all(engine)
        with engine.connect() as conn:
            plain = compare_metadata(MigrationContext.configure(conn), sqlmodel.SQLModel.metadata)
            guarded = compare_metadata(MigrationContext.configure(conn, opts={"include_object": include_object}),
                                       sqlmodel.SQLModel.metadata)
        assert any(d[0] == "remove_table" and d[1].name.startswith("posync_") for d in plain)  # why it exists
        assert guarded == []
    finally:
        engine.dispose()


def test_posync_refuses_tables_its_migrations_did_not_make(db_url: str) -> None:
    engine = posync.create_engine(db_url)
    try:
        sqlmodel.SQLModel.metadata.create_all(engine)
        posync.models.metadata.create_all(engine)  # as an older posync's tables in SQLModel.metadata were made
        with pytest.raises(posync.ConfigurationError, match="migrations did not make them"):
            _start(engine)
    finally:
        engine.dispose()


def test_posync_refuses_a_database_without_its_tables_or_behind_its_head(db_url: str) -> None:
    engine = posync.create_engine(db_url)
    try:
        sqlmodel.SQLModel.metadata.create_all(engine)
        with pytest.raises(posync.ConfigurationError, match=r"tables are missing: run posync\.migrations\.upgrade"):
            _start(engine)
        upgrade(engine)
        downgrade(engine, "0003")
        with pytest.raises(posync.ConfigurationError, match=f"revision 0003, this posync needs {HEAD}"):
            _start(engine)
        upgrade(engine)
        _start(engine).close()
    finally:
        engine.dispose()
