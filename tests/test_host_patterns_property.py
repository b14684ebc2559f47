"""Hypothesis, stateful: a host writes its bills through random mixes of the SQLAlchemy patterns POS code
uses (ORM, a delete and re-add of one key, merge of a built object, Core inserts, upserts, bulk methods,
statements, raw SQL, key changes, savepoints rolled back, delete-orphan cascades), syncs now and then with
HO misbehaving; once the faults stop, HO holds exactly the outlet's bills and lines and applied every
change once. Issue #10, "Tests". SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from sqlalchemy.dialects import postgresql, sqlite

import posync
from tests.host_models import Bill, BillLine
from tests.test_host_patterns import BILLS, Env, open_env

KEYS = st.sampled_from([f"B{i}" for i in range(5)])


class HostMachine(RuleBasedStateMachine):
    url: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="posync-hp-")
        url = self.url if not self.url.startswith("sqlite") else f"sqlite:///{self.tmp}/outlet.db"
        if not url.startswith("sqlite"):  # each example on an empty database of its own
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
            engine.dispose()
        self._ctx = open_env(url, Path(self.tmp))
        self.env: Env = self._ctx.__enter__()
        self.n = 0

    def _exists(self, key: str) -> bool:
        with self.env.engine.connect() as conn:
            return conn.execute(sa.select(BILLS.c.id).where(BILLS.c.id == key)).first() is not None

    def _now(self) -> Any:
        return posync.models.utcnow()

    @rule(key=KEYS, total=st.integers(0, 999))
    def orm_upsert(self, key: str, total: int) -> None:
        with self.env.Session() as s:
            bill = s.get(Bill, key)
            if bill is None:
                s.add(Bill(id=key, total=total, lines=[BillLine(id=f"{key}-L0", item="x")]))
            else:
                bill.total = total
            s.commit()

    @rule(key=KEYS)
    def orm_delete(self, key: str) -> None:
        with self.env.Session() as s:
            bill = s.get(Bill, key)
            if bill is not None:
                s.delete(bill)
                s.commit()

    @rule(key=KEYS, total=st.integers(0, 999), flush=st.booleans())
    def delete_and_re_add(self, key: str, total: int, flush: bool) -> None:
        with self.env.Session() as s:
            bill = s.get(Bill, key)
            if bill is None:
                return
            s.delete(bill)
            if flush:
                s.flush()
            s.add(Bill(id=key, total=total))
            s.commit()

    @rule(key=KEYS, total=st.integers(0, 999))
    def merge_built_object(self, key: str, total: int) -> None:
        if not self._exists(key):
            return
        with self.env.Session() as s:
            s.merge(Bill(id=key, total=total))
            s.commit()

    @rule(key=KEYS, total=st.integers(0, 999))
    def dialect_upsert(self, key: str, total: int) -> None:
        insert = sqlite.insert if self.env.dialect == "sqlite" else postgresql.insert
        stmt = insert(BILLS).values(id=key, table_no="", total=total, version=1, sync_status="pending",
                                    updated_at=self._now())
        with self.env.Session() as s:
            s.execute(stmt.on_conflict_do_update(index_elements=[BILLS.c.id], set_={"total": stmt.excluded.total}))
            s.commit()

    @rule(total=st.integers(0, 999))
    def statement_update(self, total: int) -> None:
        with self.env.Session() as s:
            s.execute(sa.update(Bill).where(Bill.id.in_(["B0", "B1"])).values(total=total))
            s.commit()

    @rule(key=KEYS, total=st.integers(0, 999))
    def bulk_update_mappings(self, key: str, total: int) -> None:
        with self.env.Session() as s:
            bill = s.get(Bill, key)
            if bill is not None:
                s.bulk_update_mappings(Bill, [{"id": key, "total": total, "version": bill.version}])
                s.commit()

    @rule(key=KEYS)
    def raw_delete(self, key: str) -> None:
        with self.env.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM hp_bill_line WHERE bill_id = :k"), {"k": key})
            conn.execute(sa.text("DELETE FROM hp_bill WHERE id = :k"), {"k": key})

    @rule(key=KEYS, new=KEYS)
    def change_key(self, key: str, new: str) -> None:
        if key == new or not self._exists(key) or self._exists(new):
            return
        with self.env.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM hp_bill_line WHERE bill_id = :k"), {"k": key})
            conn.execute(BILLS.update().where(BILLS.c.id == key).values(id=new))

    @rule(key=KEYS, total=st.integers(0, 999))
    def savepoint_rolled_back(self, key: str, total: int) -> None:
        with self.env.Session() as s:
            nested = s.begin_nested()
            bill = s.get(Bill, key)
            if bill is None:
                s.add(Bill(id=key, total=total))
            else:
                bill.total = total
            s.flush()
            nested.rollback()
            s.commit()

    @rule(key=KEYS)
    def orphan_a_line(self, key: str) -> None:
        with self.env.Session() as s:
            bill = s.get(Bill, key)
            if bill is not None and bill.lines:
                bill.lines.remove(bill.lines[0])
                s.commit()

    @rule()
    def sync(self) -> None:
        self.env.sync.sync_now()

    @rule(fault=st.sampled_from(["drop_after_commit_rate", "error_rate", "truncate_rate", "cut_rate"]),
          rate=st.sampled_from([0.5, 1.0]), seed=st.integers(0, 99))
    def faulty_sync(self, fault: str, rate: float, seed: int) -> None:
        self.env.ho.faults.update(**{fault: rate, "seed": seed})
        try:
            self.env.sync.sync_now()
        finally:
            self.env.ho.faults.reset()

    def teardown(self) -> None:
        try:
            self.env.ho.faults.reset()
            self.env.assert_converged()
        finally:
            self._ctx.__exit__(None, None, None)


@pytest.mark.parametrize("which", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_random_mixes_of_write_patterns_end_with_ho_equal_to_the_outlet(which: str,
                                                                          request: pytest.FixtureRequest) -> None:
    url = "sqlite" if which == "sqlite" else request.getfixturevalue("pg_url")
    machine = type(f"Host_{which}", (HostMachine,), {"url": url})
    examples = int(os.environ.get("POSYNC_HOST_PATTERN_EXAMPLES", "10" if which == "sqlite" else "4"))
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
