"""Alembic environment for posync's own tables.

posync keeps its revision in ``posync_alembic_version`` and only ever looks at ``posync_*`` tables, so
it lives beside the host app's Alembic history without touching it. Run it with ``posync db upgrade``
or ``posync.migrations.upgrade(engine)`` from the host's setup code.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import MetaData

from posync.migrations import VERSION_TABLE
from posync.models import posync_tables


def _metadata() -> MetaData:
    md = MetaData()
    for table in posync_tables():
        table.to_metadata(md)
    return md


def _include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table":
        return bool(name and name.startswith("posync_")) and name != VERSION_TABLE
    return True


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            _configure_and_run(conn)
        engine.dispose()
    else:
        _configure_and_run(connection)


def _configure_and_run(connection: Any) -> None:
    context.configure(connection=connection, target_metadata=_metadata(), version_table=VERSION_TABLE,
                      include_object=_include, render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run()
