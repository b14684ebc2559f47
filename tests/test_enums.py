"""The enums are stored and sent as their values: these must stay the strings posync always wrote (issue 16
turned string literals into enums without a migration)."""

from __future__ import annotations

from posync.ho.wire import PushResult
from posync.models import ConflictStatus, LogKind, PushOutcome


def test_stored_values_are_the_old_strings() -> None:
    assert {k.value for k in LogKind} == {"push", "pull", "reconcile", "reset", "conflict", "rebased", "dropped",
                                          "coalesced", "dead", "resolve", "retry", "cycle", "cycle_failed", "total"}
    assert [s.value for s in ConflictStatus] == ["open", "resolved"]
    assert {o.value for o in PushOutcome} == {"applied", "duplicate", "conflict", "rejected", "invalid",
                                              "server_error"}
    assert all(len(k.value) <= 20 for k in LogKind)  # posync_sync_log.kind is VARCHAR(20)


def test_a_push_result_reads_and_writes_the_wire_strings() -> None:
    result = PushResult.model_validate({"status": "applied", "cloud_version": 3})
    assert result.status is PushOutcome.APPLIED and result.status == "applied"
    assert result.model_dump(mode="json")["status"] == "applied"
