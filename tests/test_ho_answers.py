"""What HO answers is checked at the boundary: a malformed, hostile or endless answer is a typed error that
changes nothing locally, never a raw exception, a wedged cycle or an item in flight for ever.

Issue #10 items 10 (a cursor that does not advance or goes backwards), 11 (a server that drips a byte
every few seconds; ``close()`` bounded), 13 (malformed answers, fuzzed), the errors-at-the-boundary
section (a non-JSON 401, method and path on TransportError) and issue #11 items 5 and 8.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

import posync
from posync.demo.models import Order, Product
from posync.errors import HOUnavailableError, ProtocolError
from posync.ho import ApiKeyAuth, HttpCore
from posync.ho.photos import V1Source
from posync.models import OutboxItem
from posync.testing import ServerHandle, SyncHarness, serve_in_thread
from tests.scripted_ho import ScriptedHO, drip
from tests.support import Outlet, make_outlet

OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]
PRODUCTS = Product.__table__  # type: ignore[attr-defined]
PULL = "GET /api/v1/sync/products/"
PUSH = "POST /api/v1/sync/push/"


def empty_pages(ho: ScriptedHO) -> None:
    for resource in ("products", "categories", "promotions"):
        ho.on(f"GET /api/v1/sync/{resource}/", (200, {resource: [], "has_more": False, "next_cursor": "c:0"}))


class Scripted:
    def __init__(self, db_url: str, **settings: Any) -> None:
        self.ho = ScriptedHO()
        empty_pages(self.ho)
        self.server: ServerHandle = serve_in_thread(self.ho)
        settings.setdefault("request_timeout", 2.0)
        settings.setdefault("initial_backoff_seconds", 0.0)
        settings.setdefault("max_backoff_seconds", 0.0)
        self.outlet: Outlet = make_outlet(db_url, self.server.url, **settings)

    def close(self) -> None:
        self.outlet.close()
        self.server.stop()

    def products(self) -> dict[str, Any]:
        with self.outlet.engine.connect() as conn:
            return {r.id: (r.name, r.price, r.cloud_version) for r in conn.execute(sa.select(PRODUCTS))}

    def checkpoint(self, resource: str = "products") -> Any:
        with self.outlet.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT cursor, ho_version FROM posync_checkpoint WHERE resource = ?"
                                        if conn.dialect.name == "sqlite" else
                                        "SELECT cursor, ho_version FROM posync_checkpoint WHERE resource = %s",
                                        (resource,)).first()

    def outbox(self) -> list[dict[str, Any]]:
        with self.outlet.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(OUTBOX).order_by(OUTBOX.c.id)).mappings()]


@pytest.fixture
def scripted(db_url: str) -> Iterator[Scripted]:
    s = Scripted(db_url)
    yield s
    s.close()


# -- item 10: a pull that does not move on ----------------------------------------------------------------------


@pytest.mark.parametrize("cursors", [["c:5", "c:5"], ["c:10", "c:4"], ["c:7", "c:8", "c:7"]])
def test_a_cursor_that_does_not_advance_or_goes_back_is_a_protocol_error(scripted: Scripted,
                                                                         cursors: list[str]) -> None:
    """Before: tens of thousands of requests in 10 s, a cycle that never ended, ``close()`` hanging."""
    answers = iter(cursors + cursors[-1:] * 100)

    def page(query: dict[str, str], body: Any) -> Any:
        return 200, {"products": [{"id": "p1", "version": 1, "name": "A", "price": 1}], "has_more": True,
                     "next_cursor": next(answers)}

    scripted.ho.on(PULL, page)
    started = time.monotonic()
    report = scripted.outlet.sync.sync_now()
    assert time.monotonic() - started < 5
    assert "cursor" in report.pull.failed["products"], report.pull.failed
    assert scripted.ho.calls[PULL] <= len(cursors) + 1
    assert "categories" not in report.pull.failed  # the other resources were pulled all the same


def test_an_offset_that_does_not_advance_is_a_protocol_error(scripted: Scripted) -> None:
    scripted.ho.on(PULL, (200, {"products": [], "has_more": True, "next_offset": 0, "next_cursor": None,
                                "sync_timestamp": "2026-01-01T00:00:00+00:00"}))
    report = scripted.outlet.sync.sync_now()
    assert "next_offset does not advance" in report.pull.failed["products"]
    assert scripted.ho.calls[PULL] <= 3


# -- item 11: deadlines ----------------------------------------------------------------------------------------


def test_a_dripping_server_trips_the_total_deadline(db_url: str) -> None:
    """One byte every 0.3 s: no per-read timeout ever trips; the 1 s budget of the request does."""
    s = Scripted(db_url, request_timeout=1.0)
    try:
        body = b'{"products": [], "has_more": false, "next_cursor": "c:0", "pad": "' + b"x" * 100 + b'"}'
        s.ho.on(PULL, (200, drip(body, 0.3)))
        started = time.monotonic()
        report = s.outlet.sync.sync_now()
        took = time.monotonic() - started
        assert "products" in report.pull.failed or report.error is not None
        assert took < 4, took  # at most the budget plus one read of it
    finally:
        s.close()


def test_close_returns_within_its_bound_while_a_cycle_is_stuck_on_the_wire(db_url: str) -> None:
    s = Scripted(db_url, request_timeout=3.0)
    try:
        s.ho.on(PULL, (200, drip(b"x" * 1000, 0.5)))
        cycle = threading.Thread(target=s.outlet.sync.sync_now)
        cycle.start()
        time.sleep(0.5)
        started = time.monotonic()
        s.outlet.sync.close(timeout=1.0)
        assert time.monotonic() - started < 2.5
        cycle.join(10)
        assert not cycle.is_alive()
    finally:
        s.close()


# -- item 13: malformed answers, fuzzed ---------------------------------------------------------------------------

_junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3), max_leaves=6)
_bad_record = st.one_of(
    _junk,
    st.fixed_dictionaries({"id": st.just("p1"), "version": st.sampled_from(["seven", -1, 1.5, True, [1]])}),
    st.fixed_dictionaries({"id": st.sampled_from([None, True, 1.5, [], {}, ""]), "version": st.just(1)}),
    st.fixed_dictionaries({"id": st.just("p1"), "version": st.just(2),
                           "updated_at": st.sampled_from([123, "yesterday", "2026-13-45T00:00:00", ["x"]])}),
    st.fixed_dictionaries({"id": st.just("p1"), "version": st.just(2), "price": st.sampled_from(
        ["cheap", {"a": 1}, [1], 2**80, 1.5]), "name": st.just("A")}),
    st.fixed_dictionaries({"id": st.just("p1"), "version": st.just(2), "name": st.sampled_from([None, {"x": 1}])}),
)
_bad_page = st.one_of(
    _junk,
    st.just({}),  # before: accepted as an empty page
    st.fixed_dictionaries({"products": _junk, "has_more": st.booleans()}),
    st.fixed_dictionaries({"products": st.lists(_bad_record, min_size=1, max_size=3), "has_more": st.just(False),
                           "next_cursor": st.just("c:9")}),
    st.fixed_dictionaries({"products": st.just([]), "has_more": _junk, "next_cursor": _junk}),
    st.fixed_dictionaries({"products": st.just([]), "deleted": _junk, "next_cursor": st.just("c:9")}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(page=_bad_page)
def test_a_malformed_page_changes_nothing_and_raises_nothing(scripted: Scripted, page: Any) -> None:
    """Before: raw TypeError/KeyError/ValueError/StatementError out of ``sync_now()``; ``"version":
    "seven"`` stored and every later pull raising for ever; ``{}`` taken for an empty page and its
    version saved."""
    scripted.ho.on(PULL, (200, {"products": [{"id": "p1", "version": 1, "name": "A", "price": 1}],
                                "has_more": False, "next_cursor": "c:1"}))
    assert scripted.outlet.sync.sync_now().pull.failed == {}
    before, cursor = scripted.products(), scripted.checkpoint()
    scripted.ho.on(PULL, (200, page))
    report = scripted.outlet.sync.sync_now()  # never raises
    if "products" in report.pull.failed:
        assert scripted.products() == before and scripted.checkpoint() == cursor
    scripted.ho.on(PULL, (200, {"products": [{"id": "p1", "version": 3, "name": "B", "price": 2}],
                                "has_more": False, "next_cursor": "c:3"}))
    report = scripted.outlet.sync.sync_now()
    assert report.pull.failed == {} and scripted.products()["p1"][:2] == ("B", 2)  # nothing wedged


@pytest.mark.parametrize("page", [
    {},
    {"products": [{"id": "p1", "version": "seven", "name": "A"}], "has_more": False, "next_cursor": "c:9"},
    {"products": [{"id": "p1", "version": 5, "updated_at": "2026-01-01T00:00:00", "price": "cheap"}],
     "has_more": False, "next_cursor": "c:9"},
    {"products": [{"id": "p1", "version": 5, "name": None}], "has_more": False, "next_cursor": "c:9"},
], ids=["empty-object", "version-text", "price-text", "null-name"])
def test_these_pages_fail_the_resource(scripted: Scripted, page: Any) -> None:
    scripted.ho.on(PULL, (200, page))
    report = scripted.outlet.sync.sync_now()
    assert "products" in report.pull.failed and scripted.products() == {}
    assert scripted.checkpoint() in (None, (None, None))  # no cursor saved (nor a version to skip on)


def _results(make: Any) -> Any:
    def answer(query: dict[str, str], body: Any) -> Any:
        return 200, {"results": [make(c) for c in body["changes"]]}

    return answer


@pytest.mark.parametrize("make", [
    lambda c: {"idempotency_key": c["idempotency_key"], "status": "applied", "cloud_version": "seven"},
    lambda c: {"idempotency_key": c["idempotency_key"], "status": "applied"},
    lambda c: {"idempotency_key": c["idempotency_key"], "status": "conflict"},
    lambda c: {"idempotency_key": c["idempotency_key"], "status": "conflict", "current": {"version": "x"}},
    lambda c: {"idempotency_key": c["idempotency_key"], "status": "exploded"},
    lambda c: "not an object",
], ids=["version-text", "no-version", "conflict-bare", "conflict-bad-version", "unknown-status", "not-object"])
def test_an_unusable_push_result_counts_an_attempt_and_ends_dead_lettered(db_url: str, make: Any) -> None:
    """Before: the item stayed in flight for ever, never counted as an attempt, never dead-lettered."""
    s = Scripted(db_url, max_retries=2)
    try:
        s.ho.on(PUSH, _results(make))
        with s.outlet.Session() as session:
            session.add(Order(id="o1", total=5))
            session.commit()
        for attempt in range(1, 4):
            report = s.outlet.sync.sync_now()
            assert report.error is None, report.error
            [item] = s.outbox()
            assert item["status"] != "inflight"
            assert item["attempts"] == min(attempt, 2) or item["status"] == "dead"
        assert s.outbox()[0]["status"] == "dead" and s.outbox()[0]["last_error"]
    finally:
        s.close()


@pytest.mark.parametrize("answer", [{"results": "nope"}, {"results": []}, {}, [1, 2], b"<html>oops</html>"])
def test_an_unreadable_push_answer_gives_the_batch_back(scripted: Scripted, answer: Any) -> None:
    scripted.ho.on(PUSH, (200, answer))
    with scripted.outlet.Session() as s:
        s.add(Order(id="o1", total=5))
        s.commit()
    report = scripted.outlet.sync.sync_now()
    assert report.error is not None and isinstance(report.error, str)
    [item] = scripted.outbox()
    assert (item["status"], item["attempts"]) == ("pending", 0)  # HO may have applied it: resent as it was


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=_junk)
def test_a_malformed_version_answer_is_reported(scripted: Scripted, answer: Any) -> None:
    scripted.ho.on("GET /api/v1/sync/version/", (200, answer))
    report = scripted.outlet.sync.sync_now()
    if report.error is not None:
        assert "version" in report.error


# -- errors at the boundary ----------------------------------------------------------------------------------------


def test_a_401_that_is_not_json_is_an_authentication_error_with_method_and_path(scripted: Scripted) -> None:
    scripted.ho.on(PULL, (401, b"<html>login required</html>"))
    with pytest.raises(posync.AuthenticationError) as info:
        SyncHarness(scripted.outlet.sync).client.pull(scripted.outlet.sync.registry["products"], 10)
    assert (info.value.method, info.value.path) == ("GET", "/api/v1/sync/products/")


def test_an_error_body_in_the_seed_shape_keeps_its_message(scripted: Scripted) -> None:
    """Issue #11 item 5: ``{"error", "code"}`` kept the code and dropped the message."""
    scripted.ho.on(PULL, (400, {"error": "Brand ID is required", "code": "MISSING_BRAND_ID"}))
    with pytest.raises(posync.HOErrorResponse) as info:
        SyncHarness(scripted.outlet.sync).client.pull(scripted.outlet.sync.registry["products"], 10)
    assert info.value.code == "MISSING_BRAND_ID" and "Brand ID is required" in str(info.value)


def test_refused_credentials_are_an_authentication_error_in_status(db_url: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Issue #11 item 8: a wrong password was "head office unreachable (token endpoint answered 401)" and
    retried for ever as an outage."""
    s = Scripted(db_url, api_key=None, username="edge", password="wrong")
    try:
        s.ho.on("POST /api/v1/token/", (401, {"detail": "No active account found with the given credentials"}))
        caplog.set_level(logging.INFO, logger="posync")
        for _ in range(3):
            report = s.outlet.sync.sync_now()
            assert report.error and "credentials" in report.error
        status = s.outlet.sync.manager.status()
        assert status.auth_error and "edge" in status.auth_error and not status.online
        refusals = [r for r in caplog.records if r.name.startswith("posync") and r.levelno >= logging.WARNING]
        assert len(refusals) == 1 and "credentials" in refusals[0].getMessage()
        assert "wrong" not in caplog.text
    finally:
        s.close()


def test_a_page_above_the_size_limit_is_refused(db_url: str) -> None:
    s = Scripted(db_url, max_response_bytes=4096)
    try:
        s.ho.on(PULL, (200, {"products": [{"id": f"p{i}", "version": 1, "name": "x" * 50} for i in range(200)],
                             "has_more": False, "next_cursor": "c:1"}))
        report = s.outlet.sync.sync_now()
        assert "max_response_bytes" in report.pull.failed["products"]
        assert s.products() == {}
    finally:
        s.close()


def test_a_huge_page_is_applied_in_short_transactions(db_url: str) -> None:
    """Item 15: an HO that ignores ``limit`` sent a page of a million records, applied in one transaction
    (10.9 s holding the write lock). A page is applied ``apply_chunk_size`` records at a time."""
    s = Scripted(db_url, apply_chunk_size=100, pull_page_size=50)
    try:
        records = [{"id": f"p{i:05d}", "version": 1, "name": "n", "price": i} for i in range(1000)]
        s.ho.on(PULL, (200, {"products": records, "has_more": False, "next_cursor": "c:1"}))
        commits: list[int] = []
        sa.event.listen(s.outlet.engine, "commit", lambda conn: commits.append(1))
        report = s.outlet.sync.sync_now()
        assert report.pull.failed == {} and len(s.products()) == 1000
        assert len(commits) >= 10
    finally:
        s.close()


@pytest.mark.parametrize("with_date", [False, True])
def test_a_retry_after_http_date_is_honoured(with_date: bool) -> None:
    """RFC 9110 lets Retry-After be an HTTP date; the core used to drop it and fall back to its own backoff.
    Measured from HO's own ``Date`` when it sends one (HO's clock), else from the outlet's."""
    now = time.time()
    headers = {"Retry-After": formatdate(now + 30, usegmt=True)}
    if with_date:  # HO's clock 100 s ahead of ours: the wait is still 30 s
        headers = {"Retry-After": formatdate(now + 130, usegmt=True), "Date": formatdate(now + 100, usegmt=True)}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers=headers, json={"code": "UNAVAILABLE", "message": "busy"})

    core = HttpCore("http://ho.test", None, transport=httpx.MockTransport(answer))
    with pytest.raises(HOUnavailableError) as caught:
        core.call("GET", "/api/v1/sync/version/")
    core.close()
    assert caught.value.status == 503
    assert caught.value.retry_after is not None and 28.0 <= caught.value.retry_after <= 31.0


def test_photo_manifest_calls_go_through_the_core() -> None:
    """The photo sources call HO through HttpCore (issue 16): its Retry-After and its size limit apply."""
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}),
                    httpx.Response(200, content=b"[" + b"0," * 1000 + b"0]")])
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    core = HttpCore("http://ho.test", ApiKeyAuth(SecretStr("k"), "outlet-1"), transport=httpx.MockTransport(answer),
                    max_response_bytes=1024)
    source = V1Source(core, company_id="c", store_id="s")
    with pytest.raises(HOUnavailableError) as caught:
        next(source.pages(None, 10))
    assert (caught.value.status, caught.value.retry_after) == (429, 7.0)
    with pytest.raises(ProtocolError, match="limit"):
        next(source.pages(None, 10))
    core.close()
    assert all(r.headers["X-API-Key"] == "k" and r.headers["X-Outlet-ID"] == "outlet-1" for r in seen)
