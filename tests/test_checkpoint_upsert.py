"""Two syncers (``single_syncer=False``) saving a resource's first checkpoint at once: the second waits
for the first and updates it; it never fails on the primary key (it did on PostgreSQL: UniqueViolation)."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from posync.db import write_transaction
from posync.demo.outlet import prepare_database
from posync.repositories import CheckpointRepository


def test_two_syncers_saving_a_first_checkpoint_at_once_both_succeed(db_url: str) -> None:
    engine = prepare_database(db_url)
    repo = CheckpointRepository()
    errors: list[BaseException] = []
    first_saved = threading.Event()

    def second() -> None:
        first_saved.wait(10)
        try:  # on PostgreSQL its insert waits on the first transaction's row, then must update it
            with write_transaction(engine) as conn:
                repo.save(conn, "products", cursor="c2", ho_version="2")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    # the first transaction: read "no checkpoint yet", save one, hold it open while the second arrives
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        assert repo.get(conn, "products") is None
        repo.save(conn, "products", cursor="c1", ho_version="1")
        first_saved.set()
        thread.join(0.5)  # the second is waiting on this transaction (its lock or its row)
        conn.commit()
    thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    with engine.connect() as conn:
        row = repo.get(conn, "products")
        count = conn.execute(sa.text("SELECT count(*) FROM posync_checkpoint")).scalar_one()
    assert row is not None and (row["cursor"], row["ho_version"]) == ("c2", "2") and count == 1
    engine.dispose()
