"""Status with seed 003's metrics and a health verdict (issue 17, item 1), and the sync log's retention.

Every cycle that runs leaves a record in the outlet database (a quiet one too, a failed one with why), so
the rates, the average duration, the last successful sync and the health are the same from every worker
process, the Python API and the HTTP router. Health follows seed 003's alert thresholds: more than 10 % of
the window's cycles failed, or no sync completed for an hour; plus dead letters, HO out of reach and
refused credentials when known.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import posync
from posync.demo.models import Order
from posync.http import management_app
from posync.models.enums import LogKind
from posync.models.log import SyncLogEntry
from posync.repositories import LogRepository
from posync.repositories.logs import CycleWindow
from posync.services import manage
from posync.services.status import CycleOutcome, HealthRules, assess, window_rates
from posync.testing import ReferenceHO, Rejection, ServerHandle, serve_in_thread
from tests.support import API_KEY, UNREACHABLE, Outlet, make_outlet

HOUR = 3600.0


class HO:
    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.ref = ReferenceHO(f"sqlite:///{path / 'ho.db'}", api_keys={API_KEY: None}, **kwargs)
        self.server: ServerHandle = serve_in_thread(self.ref.app)
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()
        self.ref.close()


@pytest.fixture
def ho(tmp_path: Path) -> Iterator[HO]:
    h = HO(tmp_path, validators={"orders": lambda c: Rejection("BAD_TOTAL", "a negative total")
                                 if c.data["total"] < 0 else None})
    yield h
    h.close()


@pytest.fixture
def clock() -> list[float]:
    return [float(int(time.time()))]  # whole seconds: datetimes compare exactly after a database round trip


@pytest.fixture
def outlet(db_url: str, ho: HO, clock: list[float]) -> Iterator[Outlet]:
    o = make_outlet(db_url, ho.url, clock=lambda: clock[0])
    yield o
    o.close()


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_a_quiet_outlet_advances_its_last_sync_and_stays_healthy_until_an_hour_passes_without_one(
        outlet: Outlet, clock: list[float]) -> None:
    fresh = outlet.sync.status()
    assert (fresh.cycles, fresh.success_rate, fresh.failure_rate, fresh.avg_duration_seconds) == (0, None, None, None)
    assert fresh.healthy and fresh.reasons == [] and fresh.last_success_at is None and fresh.lag_seconds is None
    clock[0] += HOUR + 60  # never synced, an hour after posync started here
    assert outlet.sync.status().reasons == ["no sync has completed since posync started here 61 min ago"]
    start = clock[0]
    assert outlet.sync.sync_now().error is None
    clock[0] += 1800
    quiet = outlet.sync.sync_now()  # nothing to push, nothing new at HO
    assert quiet.error is None and quiet.push.sent == 0 and quiet.pull.applied.written == 0
    status = outlet.sync.status()
    assert status.last_success_at == status.last_pull_at == status.last_push_at == at(start + 1800)
    assert (status.cycles, status.success_rate, status.failure_rate) == (2, 1.0, 0.0)
    assert status.avg_duration_seconds is not None and status.avg_duration_seconds >= 0
    assert status.healthy and status.lag_seconds == 0
    clock[0] += 3000  # 50 min since the last sync: still healthy, and the window holds only that cycle
    later = outlet.sync.status()
    assert later.healthy and later.lag_seconds == 3000 and later.cycles == 1
    clock[0] += 601  # 60 min 1 s
    silent = outlet.sync.status()
    assert not silent.healthy and silent.reasons == ["no sync completed for 60 min"]
    assert silent.cycles == 0 and silent.success_rate is None
    assert outlet.sync.sync_now().error is None
    assert outlet.sync.status().healthy


def test_more_than_ten_percent_failed_cycles_is_unhealthy_and_failures_are_recorded(
        outlet: Outlet, ho: HO, clock: list[float]) -> None:
    for _ in range(9):
        assert outlet.sync.sync_now().error is None
        clock[0] += 60
    good_pull = outlet.sync.status().last_pull_at
    ho.ref.faults.update(error_rate=1.0, error_status=503)
    clock[0] += 60
    assert outlet.sync.sync_now().error is not None
    one = outlet.sync.status()
    assert (one.cycles, one.failure_rate) == (10, pytest.approx(0.1))
    # 10 % is not more: only the failed attempt itself is a reason
    assert [r.split(":")[0] for r in one.reasons] == ["the syncer's last attempt failed (changes stay queued)"]
    assert one.last_pull_at == good_pull and one.last_success_at == good_pull  # a failure advances neither
    clock[0] += 60
    assert outlet.sync.sync_now().error is not None
    two = outlet.sync.status()
    assert two.cycles == 11 and two.failure_rate == pytest.approx(2 / 11)
    assert two.success_rate == pytest.approx(9 / 11)
    assert not two.healthy and two.reasons[0] == "2 of 11 sync cycles failed in the last 60 min (18%, more than 10%)"
    assert not two.online and two.last_error
    failed = outlet.sync.manager.logs(kind=LogKind.CYCLE_FAILED.value)
    assert len(failed) == 2 and all("503" in (row["detail"] or "") for row in failed)
    assert all(row["kind"] != LogKind.CYCLE.value for row in outlet.sync.manager.logs())  # routine rows hidden
    ho.ref.faults.reset()


def test_dead_letters_are_reported_with_their_last_error(outlet: Outlet, clock: list[float]) -> None:
    with outlet.Session() as s:
        s.add(Order(id="bad", total=-1))
        s.add(Order(id="good", total=3))
        s.commit()
    clock[0] += 5
    report = outlet.sync.sync_now()
    assert report.push.applied == 1 and report.push.rejected == 1
    status = outlet.sync.status()
    [dead] = outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10)
    assert status.dead_letters == [{"item_id": dead["id"], "resource": "orders", "entity_id": "bad",
                                    "attempts": dead["attempts"], "last_error": "BAD_TOTAL: a negative total",
                                    "at": at(clock[0])}]
    assert not status.healthy and status.reasons == ["1 change set aside (dead letters): fix and retry it"]
    assert status.as_dict()["dead_letters"][0]["at"] == at(clock[0]).isoformat()
    outlet.sync.manager.retry_all()
    assert outlet.sync.status().dead_letters == []


def test_the_oldest_pending_change_s_age(outlet: Outlet, ho: HO, clock: list[float]) -> None:
    ho.ref.faults.update(error_rate=1.0, error_status=503)
    with outlet.Session() as s:
        s.add(Order(id="o1", total=1))
        s.commit()
    made = datetime.now(UTC)  # captured by the database's trigger, in real time
    outlet.sync.sync_now()
    clock[0] += 120
    status = outlet.sync.status()
    assert status.pending == 1
    age = status.oldest_pending_age_seconds
    assert age is not None and age == pytest.approx((at(clock[0]) - made).total_seconds(), abs=5)
    clock[0] += 600
    assert outlet.sync.status().oldest_pending_age_seconds == pytest.approx(age + 600, abs=1e-3)
    ho.ref.faults.reset()
    outlet.sync.sync_now()
    assert outlet.sync.status().oldest_pending_age_seconds is None


def test_ho_down_with_check_ho_is_unreachable_with_a_reason(db_url: str) -> None:
    o = make_outlet(db_url, UNREACHABLE)
    try:
        assert o.sync.status().ho is None  # no live check unless asked
        status = o.sync.status(check_ho=True)
        assert status.ho is not None and status.ho["reachable"] is False and status.ho["error"]
        assert status.ho["latency_ms"] is None and status.ho["auth_ok"] is None
        assert not status.online and not status.healthy
        assert status.reasons == [f"head office unreachable: {status.ho['error']}"]
    finally:
        o.close()


def test_a_wrong_api_key_is_told_apart_from_an_outage(db_url: str, ho: HO) -> None:
    o = make_outlet(db_url, ho.url, api_key="not-the-key-0123456789")
    try:
        status = o.sync.status(check_ho=True)
        assert status.ho is not None and status.ho["reachable"] is True and status.ho["auth_ok"] is False
        assert status.online and status.auth_error and not status.healthy
        assert status.reasons == ["head office refuses posync's credentials: fix the settings"]
        o.sync.sync_now()  # the syncer learns it too: without a live check, the stored state says so
        stored = o.sync.status()
        assert stored.auth_error and stored.reasons[-1] == "head office refuses posync's credentials: fix the settings"
    finally:
        o.close()


def test_every_worker_the_api_and_the_http_router_give_the_same_status(db_url: str, ho: HO,
                                                                       clock: list[float]) -> None:
    syncer = make_outlet(db_url, ho.url, clock=lambda: clock[0])
    other = make_outlet(db_url, ho.url, clock=lambda: clock[0], engine=syncer.engine)  # another worker process
    server = serve_in_thread(management_app(other.sync, allow_anonymous=True))
    try:
        with syncer.Session() as s:
            s.add(Order(id="bad", total=-1))
            s.commit()
        syncer.sync.sync_now()
        ho.ref.faults.update(error_rate=1.0, error_status=503)
        clock[0] += 30
        syncer.sync.sync_now()
        ho.ref.faults.reset()
        clock[0] += 30
        shared = ("queue", "open_conflicts", "last_push_at", "last_pull_at", "online", "last_error", "last_cycle_at",
                  "dead_letters", "last_success_at", "window_seconds", "cycles", "success_rate", "failure_rate",
                  "avg_duration_seconds", "lag_seconds", "healthy", "reasons", "pending", "oldest_pending_age_seconds")
        here = syncer.sync.status().as_dict()
        there = other.sync.status().as_dict()
        over_http = httpx.get(server.url + "/status", timeout=30).json()
        assert here["cycles"] == 2 and here["failure_rate"] == 0.5 and not here["healthy"]
        assert {k: here[k] for k in shared} == {k: there[k] for k in shared} == {k: over_http[k] for k in shared}
        checked = httpx.get(server.url + "/status", params={"check_ho": "1"}, timeout=30).json()
        assert checked["ho"]["reachable"] is True and checked["ho"]["auth_ok"] is True
        assert over_http["ho"] is None
        bad = httpx.get(server.url + "/status", params={"check_ho": "maybe"}, timeout=30)
        assert bad.status_code == 400
    finally:
        server.stop()
        other.sync.close()
        syncer.close()


class PhotoStatus:
    """What status reads of a ``posync.photos.PhotoSync``: its ``status()``."""

    def status(self) -> dict[str, Any]:
        return {"photos": {"synced": 3, "failed": 1}, "last_incremental_at": "2026-12-07T10:17:00+00:00",
                "last_full_at": "2026-12-07T04:00:00+00:00", "last_pass": {"bytes": 2048, "failed": 1}}


def test_the_last_photo_pass_is_the_later_of_the_incremental_and_the_full(outlet: Outlet) -> None:
    assert outlet.sync.status().last_photo_pass_at is None and outlet.sync.status().photos is None
    outlet.sync.manager.photos = PhotoStatus()
    status = outlet.sync.status()
    assert status.last_photo_pass_at == datetime(2026, 12, 7, 10, 17, tzinfo=UTC)
    assert status.photos is not None and status.photos["photos"] == {"synced": 3, "failed": 1}


def test_next_runs_name_posync_s_jobs_while_its_scheduler_runs(db_url: str, ho: HO) -> None:
    o = make_outlet(db_url, ho.url, push_on_commit=False, single_syncer=False, sync_interval_seconds=3600)
    try:
        assert o.sync.status().next_runs == {}
        o.sync.start()
        runs = o.sync.status().next_runs
        assert set(runs) == {"sync-cycle", "housekeeping"} and all(isinstance(v, datetime) for v in runs.values())
        o.sync.stop()
        assert o.sync.status().next_runs == {}
    finally:
        o.close()


# -- retention ---------------------------------------------------------------------------------------------

def _log_rows(engine: sa.Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        return [(r.kind, r.resource) for r in conn.execute(sa.text(
            "SELECT kind, resource FROM posync_sync_log WHERE kind <> 'total' ORDER BY id"))]


def test_retention_removes_old_rows_in_chunks_and_the_totals_never_go_back(
        db_url: str, clock: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    o = make_outlet(db_url, clock=lambda: clock[0], log_retention_days=7)
    logs = LogRepository()
    try:
        now = at(clock[0])
        with o.engine.begin() as conn:
            for day in (30, 20, 9, 8):  # old
                old = now - timedelta(days=day)
                logs.add(conn, LogKind.CYCLE, old, count=2, duration_ms=100.0)
                logs.add(conn, LogKind.CYCLE_FAILED, old, duration_ms=50.0, detail="HO away")
                logs.add(conn, LogKind.PUSH, old, count=5, duration_ms=10.0)
                logs.add(conn, LogKind.PULL, old, resource="products", count=7, duration_ms=20.0)
                logs.add(conn, LogKind.CONFLICT, old, resource="products", entity_id="p1")
            for day in (6, 1, 0):  # kept (the last one so recent it is not even folded yet)
                logs.add(conn, LogKind.CYCLE, now - timedelta(days=day), count=1, duration_ms=40.0)
                logs.add(conn, LogKind.PUSH, now - timedelta(days=day), count=3, duration_ms=5.0)
        before = o.sync.manager.metrics().totals
        monkeypatch.setattr(manage, "RETENTION_CHUNK", 3)  # several chunks, several transactions
        o.sync.housekeeping()
        assert _log_rows(o.engine) == [("cycle", None), ("push", None)] * 3
        after = o.sync.manager.metrics().totals
        assert after == before
        by_kind = {(t.kind, t.resource): t for t in after}
        assert by_kind[("cycle", None)].rows == 7 and by_kind[("cycle", None)].changes == 11
        assert by_kind[("cycle", None)].duration_ms == pytest.approx(520.0)
        assert by_kind[("pull", "products")].rows == 4 and by_kind[("pull", "products")].changes == 28
        assert by_kind[("push", None)].changes == 29
        with o.engine.connect() as conn:  # the totals are dated 1970: the ``at`` index finds them
            log = SyncLogEntry.__table__  # type: ignore[attr-defined]
            dates = conn.execute(sa.select(log.c.at).where(log.c.kind == "total").distinct()).scalars()
            assert {at.replace(tzinfo=None) for at in dates} == {datetime(1970, 1, 1)}
        clock[0] += 8 * 86400  # the kept rows age out too; the totals keep them
        o.sync.housekeeping()
        assert _log_rows(o.engine) == []
        assert o.sync.manager.metrics().totals == before
        o.sync.housekeeping()  # nothing left to remove: the totals stay put
        assert o.sync.manager.metrics().totals == before
    finally:
        o.close()


def test_retention_is_a_setting_with_a_default_and_bad_values_are_refused() -> None:
    assert posync.PosyncSettings(api_key=API_KEY).log_retention_days == 14
    with pytest.raises(posync.ConfigurationError, match="log_retention_days"):
        posync.PosyncSettings(api_key=API_KEY, log_retention_days=0)
    with pytest.raises(posync.ConfigurationError, match="health_max_failure_rate"):
        posync.PosyncSettings(api_key=API_KEY, health_max_failure_rate=1.5)


# -- the window over recorded cycles ---------------------------------------------------------------------------

cycles_recorded = st.lists(st.tuples(st.integers(0, 2 * 3600), st.booleans(), st.floats(0, 5)), max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recorded=cycles_recorded)
def test_the_window_s_figures_are_those_of_the_cycles_recorded_in_it(outlet: Outlet, clock: list[float],
                                                                      recorded: list[tuple[int, bool, float]]) -> None:
    with outlet.engine.begin() as conn:  # one outlet for every example: each starts from no cycles
        conn.execute(sa.text("DELETE FROM posync_sync_log WHERE kind IN ('cycle', 'cycle_failed')"))
    now = clock[0]
    for ago, failed, seconds in recorded:
        clock[0] = now - ago
        outlet.sync.manager.record_cycle(online=not failed, last_error="HO away" if failed else None,
                                         auth_error=None, cycle=CycleOutcome("HO away" if failed else None, seconds))
    clock[0] = now
    status = outlet.sync.status()
    inside = [(failed, seconds) for ago, failed, seconds in recorded if ago < 3600]
    assert status.cycles == len(inside)
    if inside:
        assert status.failure_rate == pytest.approx(sum(f for f, _ in inside) / len(inside))
        assert status.success_rate == pytest.approx(1 - status.failure_rate)
        assert status.avg_duration_seconds == pytest.approx(sum(s for _, s in inside) / len(inside), abs=1e-3)
        assert (status.failure_rate > 0.1) == any("sync cycles failed" in r for r in status.reasons)
    else:
        assert status.success_rate is status.failure_rate is status.avg_duration_seconds is None
    completed = [ago for ago, failed, _ in recorded if not failed]
    if completed:
        assert status.last_success_at == at(now - min(completed))
    assert status.healthy == (status.reasons == [])


# -- the verdict, as a pure function -------------------------------------------------------------------------

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
windows = st.builds(CycleWindow, st.integers(0, 500), st.integers(0, 500), st.floats(0, 1e7))


@settings(max_examples=200, deadline=None)
@given(window=windows)
def test_rates_are_fractions_that_add_up_to_one(window: CycleWindow) -> None:
    success, failure, avg = window_rates(window)
    if window.ok + window.failed == 0:
        assert (success, failure, avg) == (None, None, None)
        return
    assert success is not None and failure is not None and avg is not None
    assert 0 <= success <= 1 and 0 <= failure <= 1 and success + failure == pytest.approx(1)
    assert avg == pytest.approx(window.duration_ms / (window.ok + window.failed) / 1000)


@settings(max_examples=200, deadline=None)
@given(window=windows, silent=st.one_of(st.none(), st.floats(0, 10 * HOUR)), dead=st.integers(0, 3),
       threshold=st.floats(0, 1), auth=st.booleans())
def test_each_threshold_crossed_gives_its_reason_and_only_then(window: CycleWindow, silent: float | None,
                                                                dead: int, threshold: float, auth: bool) -> None:
    rules = HealthRules(max_failure_rate=threshold)
    last = None if silent is None else NOW - timedelta(seconds=silent)
    reasons = assess(rules, now=NOW, window=window, last_success_at=last, watched_since=NOW - timedelta(days=1),
                     dead=dead, auth_error="401" if auth else None)
    cycles = window.ok + window.failed
    failing = bool(cycles) and window.failed / cycles > threshold
    assert any("sync cycles failed" in r for r in reasons) == failing
    assert any(r.startswith("no sync") for r in reasons) == (silent is None or silent > HOUR)
    assert any("dead letters" in r for r in reasons) == (dead > 0)
    assert any("credentials" in r for r in reasons) == auth
    assert len(reasons) == failing + (silent is None or silent > HOUR) + (dead > 0) + auth


def test_an_outage_the_syncer_met_is_unhealthy_at_once_without_a_live_check(db_url: str, ho: HO) -> None:
    """A good hour's history keeps the failure rate under 10 % well into an outage (backoff makes failed
    cycles sparse): the syncer's own failed attempt, as recorded, is a reason by itself (the trial found
    `healthy: true, online: false` for minutes)."""
    o = make_outlet(db_url, ho.url)
    try:
        for _ in range(12):
            assert o.sync.sync_now().error is None
        assert o.sync.status().healthy
        ho.server.stop()  # HO goes away
        assert o.sync.sync_now().error
        status = o.sync.status()  # no live check: what the syncer recorded
        assert status.failure_rate is not None and status.failure_rate < 0.10 and not status.online
        assert not status.healthy
        assert [r for r in status.reasons if r.startswith("the syncer's last attempt failed")], status.reasons
    finally:
        o.close()


def test_next_runs_are_the_outlet_s_whichever_worker_answers(db_url: str, ho: HO) -> None:
    """Two worker processes' Posyncs on one outlet database (the lease picks one syncer): both tell the same
    next runs, on the outlet's own grid (the trial found {} in every worker but the syncer)."""
    a = make_outlet(db_url, ho.url, push_on_commit=False, sync_interval_seconds=3600)
    b = posync.Posync(a.engine, a.sync.registry, a.sync.settings)
    try:
        a.sync.start()
        b.start()
        first, second = a.sync.status().next_runs, b.status().next_runs
        assert set(first) == set(second) == {"sync-cycle", "housekeeping"}
        for job in first:  # the same grid point (or the next, had the two reads straddled one)
            gap = abs((first[job] - second[job]).total_seconds())  # type: ignore[operator]
            assert gap == 0 or gap == pytest.approx(3600, abs=1)
    finally:
        b.close()
        a.close()
