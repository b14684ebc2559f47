"""Examples the host-pattern state machine found, replayed step by step (deterministic)."""

from __future__ import annotations

from tests.test_host_patterns_property import HostMachine


def test_a_bill_deleted_then_created_again_with_its_line_lives_on(db_url: str) -> None:
    """Found by CI on PostgreSQL: HO answered the re-create with a conflict (it keeps the key as a
    tombstone), ``cloud_wins`` then deleted the new bill locally: on PostgreSQL the line's foreign key made
    every cycle fail (wedged); on SQLite the till's new bill was silently gone. A create that meets a
    tombstone is now resent based on it."""
    machine = type("Replay", (HostMachine,), {"url": db_url})()
    try:
        machine.sync()
        machine.dialect_upsert(key="B2", total=0)
        machine.sync()
        machine.orm_delete(key="B2")
        machine.sync()
        machine.orm_upsert(key="B2", total=5)
        report = machine.env.sync.sync_now()
        assert report.error is None, report.error
        live = {k: r.data for k, r in machine.env.ho.records("bills").items() if not r.deleted}
        assert live.get("B2", {}).get("total") == 5
        assert machine._exists("B2")
    finally:
        machine.teardown()
