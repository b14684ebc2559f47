"""The syncer lease's rules, one process playing several holders with their own clocks (issue 18, items 3 and
4; review findings): a lease written under a clock since set back can be taken; a process that released the
lease never takes it back by a renewal already under way; a busy close leaves the lease run out but naming
its holder, so the next holder gives that holder's claimed changes back; a worker that is not the syncer asks
the syncer for a cycle instead of running one. SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa

import posync
from posync.demo.models import Order, pos_registry
from posync.demo.outlet import prepare_database
from posync.workers.leader import SyncerLease


def _lease(engine: sa.Engine, holder: str, now: list[float]) -> SyncerLease:
    return SyncerLease(engine, holder, seconds=6.0, clock=lambda: now[0])


def _row(engine: sa.Engine) -> tuple[str | None, float, float | None]:
    with engine.connect() as conn:
        holder, expires_at, trigger_at = conn.execute(sa.text(
            "SELECT holder, expires_at, trigger_at FROM posync_lease WHERE name = 'syncer'")).one()
    return holder, float(expires_at), trigger_at


def test_a_lease_written_under_a_clock_since_set_back_can_be_taken(db_url: str) -> None:
    engine = prepare_database(db_url)
    try:
        a_now, b_now = [1_000_000.0], [1_000_001.0]
        assert _lease(engine, "a", a_now).renew().held
        assert not _lease(engine, "b", b_now).renew().held  # a's lease runs for 6 s more
        b_now[0] = 1_000_000.0 - 3600  # b's clock (the machine's) was set back an hour: a's lease looks endless
        assert _lease(engine, "b", b_now).renew().held
        assert _row(engine)[0] == "b"
    finally:
        engine.dispose()


def test_a_released_lease_is_not_taken_back_by_its_own_renewal(db_url: str) -> None:
    engine = prepare_database(db_url)
    try:
        now = [1_000_000.0]
        a = _lease(engine, "a", now)
        assert a.renew().held
        a.release(give_back=True)
        assert not a.renew().held and _row(engine)[0] is None
        assert _lease(engine, "b", now).renew().held
    finally:
        engine.dispose()


def test_a_busy_close_leaves_its_changes_to_the_next_holder(db_url: str) -> None:
    engine = prepare_database(db_url)
    try:
        now = [1_000_000.0]
        a = _lease(engine, "a", now)
        assert a.renew().held
        posync.capture.install(engine, pos_registry())
        with engine.begin() as conn:  # a's claimed batch, still on the wire when a closes
            conn.execute(Order.__table__.insert().values(  # type: ignore[attr-defined]
                id="o1", table_no="", total=1, status="open", version=1, sync_status="pending",
                updated_at=datetime.now(UTC)))
            conn.execute(sa.text("UPDATE posync_outbox SET status = 'inflight', lease_owner = 'a', "
                                 "available_at = :until"), {"until": now[0] + 60})
        a.release(give_back=False)
        holder, expires_at, _ = _row(engine)
        assert holder == "a" and expires_at == 0.0  # run out, still naming a
        renewal = _lease(engine, "b", now).renew()
        assert renewal.held and renewal.taken_over
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT status, lease_owner FROM posync_outbox")).all() == [("pending", None)]
    finally:
        engine.dispose()


def test_a_worker_that_is_not_the_syncer_asks_it_for_a_cycle(db_url: str) -> None:
    engine = prepare_database(db_url)
    sync = posync.Posync(engine, pos_registry(), posync.PosyncSettings(api_key="k", ho_url="http://127.0.0.1:9"))
    try:
        now = [time.time()]  # another worker holds the lease (for its 6 s: this test takes less)
        assert _lease(engine, "another-worker", now).renew().held
        sync.start()
        assert sync.sync_here_or_ask() is None  # asked, not run here
        assert _row(engine)[2] is not None
    finally:
        sync.close()
        engine.dispose()
