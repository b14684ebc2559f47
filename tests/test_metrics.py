"""``GET /metrics`` on the management router (issue 17, item 4): Prometheus's text format, scraped over
real HTTP and read back with prometheus_client's own parser. Every worker answers the same (the values are
read from the outlet database at scrape time), the counters survive the sync log's retention, the host's
global registry is never touched, and the route is locked like the others."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from posync.demo.models import Order
from posync.http import management_app
from posync.http.metrics import families
from posync.repositories.logs import LogTotal
from posync.services.status import MetricsSnapshot, StatusReport
from posync.testing import ReferenceHO, Rejection, ServerHandle, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet

ADMIN = {"Authorization": "Bearer admin"}


def _admin(request: Any) -> bool:
    return bool(request.headers.get("authorization") == "Bearer admin")


class HO:
    def __init__(self, path: Path) -> None:
        self.ref = ReferenceHO(f"sqlite:///{path / 'ho.db'}", api_keys={API_KEY: None},
                               validators={"orders": lambda c: Rejection("BAD_TOTAL", "negative")
                                           if c.data["total"] < 0 else None})
        self.server: ServerHandle = serve_in_thread(self.ref.app)
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()
        self.ref.close()


@pytest.fixture
def ho(tmp_path: Path) -> Iterator[HO]:
    h = HO(tmp_path)
    yield h
    h.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    answer = httpx.get(url + "/metrics", headers=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def _work(outlet: Outlet, ho: HO, clock: list[float]) -> None:
    """Two sales HO takes, one it refuses for good, a failed cycle and a quiet one."""
    ho.ref.put("products", "p1", {"id": "p1", "name": "Tea", "price": 1})
    with outlet.Session() as s:
        s.add_all([Order(id="o1", total=1), Order(id="o2", total=2), Order(id="bad", total=-1)])
        s.commit()
    assert outlet.sync.sync_now().error is None
    ho.ref.faults.update(error_rate=1.0, error_status=503)
    clock[0] += 30
    assert outlet.sync.sync_now().error is not None
    ho.ref.faults.reset()
    clock[0] += 30
    assert outlet.sync.sync_now().error is None


def test_metrics_over_http_from_any_worker_say_what_the_outlet_did(db_url: str, ho: HO) -> None:
    clock = [float(int(time.time()))]
    syncer = make_outlet(db_url, ho.url, clock=lambda: clock[0])
    other = make_outlet(db_url, ho.url, clock=lambda: clock[0], engine=syncer.engine)  # another worker
    servers = [serve_in_thread(management_app(o.sync, authorize=_admin)) for o in (syncer, other)]
    try:
        _work(syncer, ho, clock)
        here, there = scrape(servers[0].url), scrape(servers[1].url)
        assert here == there  # whichever worker the scrape reaches
        assert here[("posync_sync_cycles_total", (("outcome", "ok"),))] == 2
        assert here[("posync_sync_cycles_total", (("outcome", "failed"),))] == 1
        assert here[("posync_sync_cycle_duration_seconds_count", (("outcome", "ok"),))] == 2
        assert here[("posync_sync_cycle_duration_seconds_sum", (("outcome", "ok"),))] > 0
        assert here[("posync_pushed_changes_total", ())] == 2  # the one HO refused is a dead letter
        assert here[("posync_push_batch_duration_seconds_count", ())] >= 1
        assert here[("posync_pulled_changes_total", (("resource", "products"),))] == 1
        assert here[("posync_pull_duration_seconds_count", (("resource", "products"),))] >= 1
        assert here[("posync_dead_letters_total", ())] == 1
        assert here[("posync_queue_items", (("status", "dead"),))] == 1
        assert here[("posync_queue_items", (("status", "pending"),))] == 0
        assert here[("posync_oldest_pending_age_seconds", ())] == 0
        assert here[("posync_open_conflicts", ())] == 0
        assert here[("posync_ho_up", ())] == 1
        assert here[("posync_healthy", ())] == 0  # a dead letter and a third of the cycles failed
        assert here[("posync_lag_seconds", ())] == 0
        assert here[("posync_last_success_timestamp_seconds", ())] == clock[0]
        # the host's global registry holds nothing of posync's
        assert not [m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("posync")]
        assert httpx.get(servers[0].url + "/metrics", timeout=30).status_code == 403
    finally:
        for server in servers:
            server.stop()
        other.sync.close()
        syncer.close()


def test_counters_never_go_back_when_retention_removes_their_rows(db_url: str, ho: HO) -> None:
    clock = [float(int(time.time()))]
    outlet = make_outlet(db_url, ho.url, clock=lambda: clock[0], log_retention_days=1)
    server = serve_in_thread(management_app(outlet.sync, allow_anonymous=True))
    counters = ("posync_sync_cycles_total", "posync_pushed_changes_total", "posync_pulled_changes_total",
                "posync_dead_letters_total", "posync_push_batch_duration_seconds_count",
                "posync_sync_cycle_duration_seconds_sum")
    try:
        _work(outlet, ho, clock)
        before = {k: v for k, v in scrape(server.url).items() if k[0] in counters}
        clock[0] += 2 * 86400
        outlet.sync.housekeeping()  # every row of the work above is older than a day now
        assert outlet.sync.manager.logs(kind="push") == [] and outlet.sync.manager.logs(kind="cycle") == []
        after = {k: v for k, v in scrape(server.url).items() if k[0] in counters}
        assert after == pytest.approx(before)
        assert outlet.sync.sync_now().error is None
        later = scrape(server.url)
        assert later[("posync_sync_cycles_total", (("outcome", "ok"),))] == \
            before[("posync_sync_cycles_total", (("outcome", "ok"),))] + 1
    finally:
        server.stop()
        outlet.close()


def test_without_prometheus_client_the_route_says_what_to_install(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    outlet = make_outlet(f"sqlite:///{tmp_path / 'o.db'}")
    server = serve_in_thread(management_app(outlet.sync, allow_anonymous=True))
    try:
        monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails, as when not installed
        answer = httpx.get(server.url + "/metrics", timeout=30)
        assert answer.status_code == 501 and "posync[prometheus]" in answer.json()["message"]
    finally:
        server.stop()
        outlet.close()


def test_photo_metrics_come_from_photo_status() -> None:
    photos = {"photos": {"synced": 7, "failed": 2, "pending": 1}, "last_pass": {"bytes": 4096, "failed": 2}}
    status = StatusReport(queue={}, open_conflicts=0, last_push_at=None, last_pull_at=None, photos=photos,
                          last_success_at=datetime(2026, 1, 1, tzinfo=UTC))
    snapshot = MetricsSnapshot(status, [LogTotal("cycle", None, 3, 0, 1500.0)])
    samples = {(s.name, tuple(s.labels.values())): s.value for f in families(snapshot) for s in f.samples}
    assert samples[("posync_photos", ("synced",))] == 7 and samples[("posync_photos", ("failed",))] == 2
    assert samples[("posync_photo_last_pass_bytes", ())] == 4096
    assert samples[("posync_photo_last_pass_failed", ())] == 2
    assert samples[("posync_sync_cycle_duration_seconds_sum", ("ok",))] == 1.5
    assert ("posync_lag_seconds", ()) not in samples  # never pulled: no lag to tell
    without = {s.name for f in families(MetricsSnapshot(StatusReport({}, 0, None, None), [])) for s in f.samples}
    assert not any(name.startswith("posync_photo") for name in without)
