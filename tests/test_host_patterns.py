"""The host-pattern contract: every way SQLAlchemy lets a host write a row is captured correctly, proven by
HO's final state, or refused with a clear error. On SQLite and PostgreSQL, against the reference HO over
real HTTP. Issue #10 items 1-7 (each has a test here that failed before capture moved into the database).

The tracked tables use ``cloud_wins``: a change posync loses or mis-bases shows up as HO's old data
winning, so "HO equals the outlet" really proves the change arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

import posync
from posync import ConflictStrategy, Direction, Registry, TrackedEntity
from posync.models import OutboxItem
from posync.testing import ReferenceHO, ServerHandle, serve_in_thread
from tests.host_models import HOST_MODEL_TABLES, Bill, BillLine, Lettered, UsageLog
from tests.support import API_KEY

OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]
BILLS = Bill.__table__  # type: ignore[attr-defined]
LINES = BillLine.__table__  # type: ignore[attr-defined]


def registry() -> Registry:
    return Registry([
        TrackedEntity(Bill, "bills", Direction.PUSH, ConflictStrategy.CLOUD_WINS),
        TrackedEntity(BillLine, "bill_lines", Direction.PUSH, ConflictStrategy.CLOUD_WINS),
        TrackedEntity(UsageLog, "usage_logs", Direction.PUSH, append_only=True),
    ])


class HostSession(Session):
    """The host's own session class for its AsyncSession (posync attaches to it, not to Session)."""


@dataclass
class Env:
    url: str
    engine: sa.Engine
    ho: ReferenceHO
    server: ServerHandle
    sync: posync.Posync
    Session: Any

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def converge(self) -> None:
        for _ in range(8):
            report = self.sync.sync_now()
            assert report.error is None, report.error
            if not self.sync.manager.status().queue:
                return
        raise AssertionError(f"the outbox never emptied: {self.sync.manager.queue()}")

    def ho_data(self, resource: str) -> dict[str, dict[str, Any]]:
        return {k: dict(r.data or {}) for k, r in self.ho.records(resource).items() if not r.deleted}

    def local_data(self, resource: str) -> dict[str, dict[str, Any]]:
        entity = self.sync.registry[resource]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(entity.table)).mappings().all()
        return {str(r[entity.pk.name]): entity.to_payload(r) for r in rows}

    def statuses(self, resource: str) -> set[str]:
        entity = self.sync.registry[resource]
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(entity.table.c.sync_status)).scalars())

    def assert_converged(self) -> None:
        """Sync until the outbox is empty; then HO holds exactly the outlet's bills and lines, every row
        is synced, and nothing was applied twice."""
        self.converge()
        for resource in ("bills", "bill_lines"):
            assert self.ho_data(resource) == self.local_data(resource), resource
            assert self.statuses(resource) <= {"synced"}, resource
        assert set(self.ho.applied_counts().values()) <= {1}


@contextmanager
def open_env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None})
    server = serve_in_thread(ho.app)
    engine = posync.create_engine(db_url)
    posync.migrations.upgrade(engine)
    sqlmodel.SQLModel.metadata.create_all(engine, tables=HOST_MODEL_TABLES)
    Session = sessionmaker(engine, class_=sqlmodel.Session, expire_on_commit=False)
    sync = posync.Posync(engine, registry(), posync.PosyncSettings(
        ho_url=server.url, api_key=API_KEY, request_timeout=5.0, initial_backoff_seconds=0,
        max_backoff_seconds=0), sessionmaker=Session)
    env = Env(db_url, engine, ho, server, sync, Session)
    try:
        yield env
    finally:
        sync.close()
        env.sync.close()
        engine.dispose()
        server.stop()
        ho.close()


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with open_env(db_url, tmp_path) as e:
        yield e


def seed_bill(env: Env, bill_id: str = "B1", lines: int = 2) -> None:
    """A bill with lines that HO already has."""
    with env.Session() as s:
        s.add(Bill(id=bill_id, table_no="T1", total=100,
                   lines=[BillLine(id=f"{bill_id}-L{i}", item=f"item {i}", qty=i + 1) for i in range(lines)]))
        s.commit()
    env.converge()
    assert bill_id in env.ho_data("bills")


# -- ORM -------------------------------------------------------------------------------------------------


def test_orm_add_update_delete(env: Env) -> None:
    seed_bill(env)
    with env.Session() as s:
        bill = s.get(Bill, "B1")
        bill.total = 150
        s.add(Bill(id="B2", total=5))
        s.commit()
        s.delete(s.get(Bill, "B2"))
        s.commit()
    env.assert_converged()
    assert env.ho_data("bills")["B1"]["total"] == 150 and "B2" not in env.ho_data("bills")


def test_delete_and_re_add_of_one_key_in_one_flush(env: Env) -> None:
    """Item 1: SQLAlchemy turns it into one UPDATE (a row switch). Before: the outbox got a create before
    a delete, folded into nothing, and HO kept the old bill."""
    seed_bill(env, lines=0)
    with env.Session() as s:
        s.delete(s.get(Bill, "B1"))
        s.add(Bill(id="B1", table_no="T9", total=999))
        s.commit()
    env.assert_converged()
    assert env.ho_data("bills")["B1"]["total"] == 999


@pytest.mark.parametrize("between", ["flush", "commit"])
def test_delete_then_re_add_of_one_key_before_the_push(env: Env, between: str) -> None:
    """Item 1: with a flush (or a commit) in between, delete + create is pushed as the update it amounts
    to, based on HO's version (before: on the new row's cloud_version=None, a false conflict that
    ``cloud_wins`` then settled by reverting the outlet)."""
    seed_bill(env, lines=0)
    with env.Session() as s:
        s.delete(s.get(Bill, "B1"))
        if between == "flush":
            s.flush()
        else:
            s.commit()
        s.add(Bill(id="B1", table_no="T9", total=999))
        s.commit()
    env.assert_converged()
    assert env.ho_data("bills")["B1"]["total"] == 999
    assert env.ho.get("bills", "B1").version == 2  # one update at HO, no conflict round trip


def test_merge_of_an_object_the_host_built(env: Env) -> None:
    """Item 4: ``merge(Bill(id=..., total=120))`` carries the host object's bookkeeping (cloud_version None,
    version 1): posync's columns stay posync's, so the push is based on what HO has."""
    seed_bill(env, lines=0)
    with env.Session() as s:
        s.get(Bill, "B1").table_no = "T7"  # the row is at version 2 now: a merge must not claim version 1
        s.commit()
    env.converge()
    with env.Session() as s:
        s.merge(Bill(id="B1", table_no="T1", total=120))
        s.commit()
    with env.engine.connect() as conn:
        assert conn.execute(sa.select(BILLS.c.cloud_version).where(BILLS.c.id == "B1")).scalar() == 2
    env.assert_converged()
    assert env.ho_data("bills")["B1"]["total"] == 120


def test_bookkeeping_written_by_the_host_is_undone(env: Env) -> None:
    """Any write path: a statement that sets cloud_version/sync_status itself does not change them."""
    seed_bill(env, lines=0)
    with env.engine.begin() as conn:
        conn.execute(BILLS.update().where(BILLS.c.id == "B1").values(cloud_version=None, sync_status="conflict"))
    with env.engine.connect() as conn:
        row = conn.execute(sa.select(BILLS.c.cloud_version, BILLS.c.sync_status)).one()
    assert tuple(row) == (1, "synced")
    assert env.sync.manager.status().queue == {}  # nothing to push: no data changed


def test_delete_orphan_cascade(env: Env) -> None:
    """Item 3: a line removed from ``bill.lines`` is deleted by the cascade during the flush; HO deletes it
    too (before: an update was queued and dropped, and HO kept the line)."""
    seed_bill(env, lines=3)
    with env.Session() as s:
        bill = s.get(Bill, "B1")
        bill.lines.remove(next(line for line in bill.lines if line.id == "B1-L1"))
        s.commit()
    env.assert_converged()
    assert sorted(env.ho_data("bill_lines")) == ["B1-L0", "B1-L2"]


def test_deleting_a_parent_cascades_to_its_lines(env: Env) -> None:
    seed_bill(env, lines=2)
    with env.Session() as s:
        s.delete(s.get(Bill, "B1"))
        s.commit()
    env.assert_converged()
    assert env.ho_data("bills") == {} and env.ho_data("bill_lines") == {}


def test_savepoints(env: Env) -> None:
    """A savepoint rolled back takes its captured changes with it; a released one keeps them."""
    with env.Session() as s:
        s.add(Bill(id="kept", total=1))
        with s.begin_nested():
            s.add(Bill(id="inner-kept", total=2))
        nested = s.begin_nested()
        s.add(Bill(id="rolled-back", total=3))
        s.flush()
        nested.rollback()
        s.commit()
    env.assert_converged()
    assert sorted(env.ho_data("bills")) == ["inner-kept", "kept"]


def test_primary_key_change(env: Env) -> None:
    """Item 6: a changed key is the delete of the old entity and the create of the new one (before: HO
    ended with both, the row stayed pending)."""
    seed_bill(env, "OLD", lines=0)
    with env.Session() as s:
        s.get(Bill, "OLD").id = "NEW"
        s.commit()
    seed_bill(env, "CORE", lines=0)
    with env.engine.begin() as conn:
        conn.execute(BILLS.update().where(BILLS.c.id == "CORE").values(id="CORE2"))
    env.assert_converged()
    assert sorted(env.ho_data("bills")) == ["CORE2", "NEW"]
    assert env.ho.get("bills", "OLD").deleted and env.ho.get("bills", "CORE").deleted


# -- statements and the bulk methods ---------------------------------------------------------------------


def test_core_insert_through_the_session(env: Env) -> None:
    """Item 2: ``session.execute(insert(Model))`` (before: committed, never queued, HO never heard)."""
    with env.Session() as s:
        s.execute(sa.insert(Bill).values(id="C1", table_no="T2", total=7, version=1, sync_status="pending",
                                         updated_at=posync.models.utcnow()))
        s.commit()
    env.assert_converged()
    assert env.ho_data("bills")["C1"]["total"] == 7


def test_orm_bulk_insert_and_bulk_update(env: Env) -> None:
    """Item 2: ORM-enabled bulk INSERT with a list of parameter sets, and bulk UPDATE by primary key."""
    now = posync.models.utcnow()
    with env.Session() as s:
        s.execute(sa.insert(Bill), [{"id": f"K{i}", "total": i, "version": 1, "sync_status": "pending",
                                     "updated_at": now} for i in range(5)])
        s.commit()
        # with a version column, SQLAlchemy's bulk UPDATE by key wants the version each row is at
        s.execute(sa.update(Bill), [{"id": "K1", "total": 100, "version": 1},
                                    {"id": "K2", "total": 200, "version": 1}])
        s.commit()
    env.assert_converged()
    assert {k: v["total"] for k, v in env.ho_data("bills").items()} == {"K0": 0, "K1": 100, "K2": 200, "K3": 3,
                                                                         "K4": 4}


def test_orm_update_and_delete_statements(env: Env) -> None:
    """``update(Model).where(...)`` and ``delete(Model).where(...)``: refused before, captured now."""
    for bill in ("A", "B", "C"):
        seed_bill(env, bill, lines=0)
    with env.Session() as s:
        s.execute(sa.update(Bill).where(Bill.id.in_(["A", "B"])).values(total=0))
        s.execute(sa.delete(Bill).where(Bill.id == "C"))
        s.commit()
    env.assert_converged()
    assert {k: v["total"] for k, v in env.ho_data("bills").items()} == {"A": 0, "B": 0}


def _upsert(env: Env, rows: list[dict[str, Any]]) -> sa.Insert:
    insert = sqlite.insert if env.dialect == "sqlite" else postgresql.insert
    stmt = insert(BILLS).values(rows)
    return stmt.on_conflict_do_update(index_elements=[BILLS.c.id],
                                      set_={"total": stmt.excluded.total, "table_no": stmt.excluded.table_no})


def test_upserts(env: Env) -> None:
    """Item 2: ``INSERT ... ON CONFLICT DO UPDATE``: the new row is a create, the existing one an update."""
    seed_bill(env, "EXISTING", lines=0)
    now = posync.models.utcnow()
    common = {"version": 1, "sync_status": "pending", "updated_at": now}
    with env.Session() as s:
        s.execute(_upsert(env, [{"id": "EXISTING", "table_no": "T5", "total": 55, **common},
                                {"id": "FRESH", "table_no": "T6", "total": 66, **common}]))
        s.commit()
    env.assert_converged()
    assert {k: v["total"] for k, v in env.ho_data("bills").items()} == {"EXISTING": 55, "FRESH": 66}


def test_the_legacy_bulk_methods(env: Env) -> None:
    """Item 2: ``bulk_save_objects``, ``bulk_insert_mappings`` and ``bulk_update_mappings`` write without
    the unit of work's events (before: rows committed, outbox empty)."""
    seed_bill(env, "U1", lines=0)
    with env.Session() as s:
        s.bulk_save_objects([Bill(id="S1", total=1), Bill(id="S2", total=2)])
        s.bulk_insert_mappings(Bill, [{"id": "M1", "total": 10, "version": 1, "sync_status": "pending",
                                       "updated_at": posync.models.utcnow()}])
        s.commit()
        s.bulk_update_mappings(Bill, [{"id": "U1", "total": 111, "version": 1},
                                      {"id": "S1", "total": 11, "version": 1}])
        s.commit()
    env.assert_converged()
    assert {k: v["total"] for k, v in env.ho_data("bills").items()} == {"U1": 111, "S1": 11, "S2": 2, "M1": 10}


def test_raw_sql_and_core_on_a_plain_connection(env: Env) -> None:
    """Raw SQL and Core ``executemany`` on a connection of the host's own: captured without enqueue()."""
    seed_bill(env, "R1", lines=0)
    with env.engine.begin() as conn:
        conn.execute(BILLS.insert(), [{"id": f"E{i}", "total": i, "version": 1, "sync_status": "pending",
                                       "updated_at": posync.models.utcnow()} for i in range(3)])
        conn.execute(sa.text("UPDATE hp_bill SET total = 42 WHERE id = 'R1'"))
        conn.execute(sa.text("DELETE FROM hp_bill WHERE id = 'E0'"))
    env.assert_converged()
    assert {k: v["total"] for k, v in env.ho_data("bills").items()} == {"R1": 42, "E1": 1, "E2": 2}


def test_insert_or_replace_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    """SQLite's REPLACE deletes the old row without a delete trigger: the insert is the update it is."""
    with open_env(sqlite_url, tmp_path) as env:
        seed_bill(env, "P1", lines=0)
        with env.engine.begin() as conn:
            conn.execute(sa.text("INSERT OR REPLACE INTO hp_bill (id, table_no, total, version, sync_status, "
                                 "updated_at) VALUES ('P1', 'T3', 333, 1, 'synced', '2026-01-01 00:00:00')"))
        env.assert_converged()
        assert env.ho_data("bills")["P1"]["total"] == 333


def test_enqueue_of_a_raw_delete_is_based_on_hos_version(env: Env) -> None:
    """Item 5: the documented raw-delete path (delete, then ``enqueue(..., "delete")``) sent base None and
    always conflicted; under cloud_wins the bill came back. Now the database captured the delete with its
    base, and the enqueued one folds into it."""
    seed_bill(env, "D1", lines=0)
    with env.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM hp_bill WHERE id = 'D1'"))
        env.sync.enqueue(conn, "bills", ["D1"], "delete")
    env.assert_converged()
    assert "D1" not in env.ho_data("bills") and env.ho.get("bills", "D1").deleted


def test_async_session(env: Env) -> None:
    """``AsyncSession`` runs the ORM in its synchronous session; posync's hooks attach to the host's one."""
    url = env.url.replace("sqlite://", "sqlite+aiosqlite://").replace("+psycopg://", "+psycopg_async://")
    seed_bill(env, "A1", lines=0)

    async def work() -> None:
        engine = create_async_engine(url)
        AsyncSessionMaker = async_sessionmaker(engine, class_=AsyncSession, sync_session_class=HostSession,
                                               expire_on_commit=False)
        env.sync.capture.attach(AsyncSessionMaker)
        try:
            async with AsyncSessionMaker() as s:
                s.add(Bill(id="A2", total=2))
                bill = await s.get(Bill, "A1")
                assert bill is not None
                bill.total = 11
                await s.commit()
        finally:
            await engine.dispose()

    asyncio.run(work())
    env.assert_converged()
    assert {k: v["total"] for k, v in env.ho_data("bills").items()} == {"A1": 11, "A2": 2}


def test_an_async_sessionmaker_on_sqlalchemys_own_session_is_refused(env: Env) -> None:
    with pytest.raises(posync.ConfigurationError, match="sync_session_class"):
        env.sync.capture.attach(async_sessionmaker(class_=AsyncSession))


def test_truncate_on_postgresql_deletes_every_row_at_ho(pg_url: str, tmp_path: Path) -> None:
    """A new-user trial: PostgreSQL's TRUNCATE fires no row trigger, so it emptied a pushed table and told
    HO nothing. It is captured like ``DELETE FROM``: a delete of every row (CASCADE to the lines too)."""
    with open_env(pg_url, tmp_path) as env:
        seed_bill(env, "T1", lines=2)
        seed_bill(env, "T2", lines=1)
        with env.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE hp_bill CASCADE"))
        env.assert_converged()
        assert env.ho_data("bills") == {} and env.ho_data("bill_lines") == {}


def test_truncate_on_postgresql_of_a_table_with_a_column_named_like_a_row_alias(pg_url: str) -> None:
    """A review: the trigger's ``to_jsonb(t)`` took the column ``t``, not the row, and the TRUNCATE failed."""
    engine = posync.create_engine(pg_url)
    posync.migrations.upgrade(engine)
    sqlmodel.SQLModel.metadata.create_all(engine, tables=[Lettered.__table__])  # type: ignore[attr-defined]
    sync = posync.Posync(engine, Registry([TrackedEntity(Lettered, "lettered", Direction.PUSH)]),
                         posync.PosyncSettings(ho_url="http://127.0.0.1:9", api_key=API_KEY))
    try:
        with sqlmodel.Session(engine) as s:
            s.add_all([Lettered(id="a", t=1), Lettered(id="b", t=2)])
            s.commit()
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE hp_lettered"))
        with engine.connect() as conn:
            deletes = conn.execute(sa.select(OUTBOX.c.entity_id).where(OUTBOX.c.op == "delete")).scalars().all()
        assert sorted(deletes) == ["a", "b"]
    finally:
        sync.close()
        engine.dispose()


def test_truncate_of_an_append_only_table_on_postgresql_waits_for_ho(pg_url: str, tmp_path: Path) -> None:
    """Truncating usages HO has not received is refused, as deleting one is; once HO has them all, it is
    a local purge."""
    with open_env(pg_url, tmp_path) as env:
        _usage(env, "U1")
        with pytest.raises(posync.UnsupportedWriteError, match="HO has not received"), env.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE hp_usage"))
        env.converge()
        with env.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE hp_usage"))
        env.converge()
        assert [u["data"]["id"] for u in env.ho.usages()] == ["U1"]


# -- append-only -------------------------------------------------------------------------------------------


def _usage(env: Env, usage_id: str = "U1") -> None:
    with env.Session() as s:
        s.add(UsageLog(id=usage_id, promotion_id="promo1", amount=500))
        s.commit()


@pytest.mark.parametrize("path", ["orm", "core"])
def test_an_append_only_row_cannot_be_updated(env: Env, path: str) -> None:
    """Item 7: correcting a pushed usage sent a second usage. Updates are refused on every path."""
    _usage(env)
    env.converge()
    with pytest.raises(posync.UnsupportedWriteError, match="UPDATE of an append-only row") as info:
        if path == "orm":
            with env.Session() as s:
                s.get(UsageLog, "U1").amount = 1
                s.commit()
        else:
            with env.engine.begin() as conn:
                conn.execute(sa.text("UPDATE hp_usage SET amount = 1 WHERE id = 'U1'"))
    assert info.value.resource == "usage_logs" and "correcting row" in str(info.value)
    assert [u["data"]["amount"] for u in env.ho.usages()] == [500]


@pytest.mark.parametrize("path", ["orm", "core"])
def test_an_append_only_row_is_deleted_only_once_ho_has_it(env: Env, path: str) -> None:
    """Item 7: deleting a usage sent an empty usage ``{}``. Before HO has it, a delete is refused; after,
    it is a local purge HO is not told about."""

    def delete(usage_id: str) -> None:
        if path == "orm":
            with env.Session() as s:
                s.delete(s.get(UsageLog, usage_id))
                s.commit()
        else:
            with env.engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM hp_usage WHERE id = :id"), {"id": usage_id})

    _usage(env, "early")
    with pytest.raises(posync.UnsupportedWriteError, match="HO has not received"):
        delete("early")
    env.converge()
    delete("early")
    env.converge()
    assert [u["data"]["id"] for u in env.ho.usages()] == ["early"]
    with env.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM hp_usage")).scalar() == 0


# -- capture outlives the sync machinery ------------------------------------------------------------------------


def test_a_sale_written_after_close_is_still_queued(env: Env) -> None:
    """Item 12: after ``close()`` capture was detached and a sale written then was lost. Capture lives in
    the database now; a new Posync pushes it. A closed Posync refuses to sync, loudly."""
    env.sync.close()
    with env.Session() as s:
        s.add(Bill(id="late", total=9))
        s.commit()
    with pytest.raises(posync.ClosedError):
        env.sync.sync_now()
    with pytest.raises(posync.ClosedError):
        env.sync.start()
    env.sync = posync.Posync(env.engine, registry(), env.sync.settings, sessionmaker=env.Session)
    env.assert_converged()
    assert env.ho_data("bills")["late"]["total"] == 9


def test_missing_capture_triggers_show_in_status(env: Env) -> None:
    """A host migration that rebuilds a table drops its triggers: status says so, a new Posync puts them back."""
    name = "posync_after_hp_bill" if env.dialect == "postgresql" else "posync_ins_hp_bill"
    with env.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TRIGGER {name}" + (" ON hp_bill" if env.dialect == "postgresql" else ""))
    assert env.sync.manager.status().capture_missing == ["bills"]
    posync.capture.install(env.engine, registry())
    assert env.sync.manager.status().capture_missing == []
