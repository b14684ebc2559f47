"""The management router is locked by default (issue 18, item 7): every route refuses an anonymous caller
with 401 and changes nothing, an ``authorize`` that says no (plain or async, or one that raises) gives 403,
and an explicit ``allow_anonymous=True`` or an ``authorize`` that says yes lets the same request through."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request

import posync
from posync.demo.models import Order, Product, pos_registry
from posync.errors import ConfigurationError
from posync.http import management_app
from posync.testing import ReferenceHO, Rejection, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet

ROUTES = [("GET", "/status"), ("GET", "/metrics"), ("POST", "/trigger"), ("GET", "/logs"), ("GET", "/queue"),
          ("POST", "/retry/{dead}"), ("POST", "/retry"), ("GET", "/conflicts"), ("POST", "/checkpoints/reset"),
          ("POST", "/reconcile"), ("POST", "/resolve/{conflict}")]


def _async_no(request: Request) -> Any:
    async def verdict() -> bool:
        return False
    return verdict()


async def _async_yes(request: Request) -> bool:
    return request.headers.get("authorization") == "Bearer admin"


def _raises(request: Request) -> bool:
    raise RuntimeError("the host's session store is down")


@pytest.fixture
def outlet_with_work(tmp_path: Path) -> Iterator[tuple[Outlet, ReferenceHO, dict[str, int]]]:
    """An outlet with one real dead letter and one real open conflict."""
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None},
                     validators={"orders": lambda c: Rejection("BAD", "no") if c.data["total"] < 0 else None})
    server = serve_in_thread(ho.app)
    outlet = make_outlet(f"sqlite:///{tmp_path / 'o.db'}", server.url,
                         registry=pos_registry(posync.ConflictStrategy.MANUAL))
    try:
        ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 1})
        with outlet.Session() as s:
            s.add(Order(id="bad", total=-1))
            s.commit()
        outlet.sync.sync_now()
        with outlet.Session() as s:
            s.get(Product, "p1").price = 5
            s.commit()
        ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 9})
        outlet.sync.sync_now()
        [dead] = outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10)
        [conflict] = outlet.sync.manager.conflicts()
        yield outlet, ho, {"dead": dead["id"], "conflict": conflict["id"]}
    finally:
        outlet.close()
        server.stop()
        ho.close()


def _call(url: str, method: str, path: str, ids: dict[str, int], headers: dict[str, str]) -> httpx.Response:
    body = b'{"choice": "local"}' if path.startswith("/resolve") else None
    return httpx.request(method, url + path.format(**ids), content=body, headers=headers, timeout=30)


def _untouched(outlet: Outlet, ids: dict[str, int]) -> None:
    assert [d["id"] for d in outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10)] == [ids["dead"]]
    assert [c["id"] for c in outlet.sync.manager.conflicts()] == [ids["conflict"]]


@pytest.mark.parametrize(("refusal", "status"), [(None, 401), (lambda r: False, 403), (_async_no, 403),
                                                  (_raises, 403)],
                         ids=["anonymous", "authorize-no", "async-authorize-no", "authorize-raises"])
def test_every_route_refuses_a_caller_it_was_not_told_to_admit_and_changes_nothing(
        outlet_with_work: tuple[Outlet, ReferenceHO, dict[str, int]],
        refusal: Callable[[Request], Any] | None, status: int) -> None:
    outlet, ho, ids = outlet_with_work
    pushed_before = ho.records("orders")
    server = serve_in_thread(management_app(outlet.sync, authorize=refusal))
    try:
        for method, path in ROUTES:
            answer = _call(server.url, method, path, ids, {"Authorization": "Bearer admin"})
            assert answer.status_code == status, (method, path, answer.text)
            assert answer.json()["status"] == "error"
    finally:
        server.stop()
    _untouched(outlet, ids)
    assert ho.records("orders") == pushed_before


@pytest.mark.parametrize("admit", ["allow_anonymous", "authorize", "async-authorize"])
def test_every_route_serves_a_caller_the_host_admits(
        outlet_with_work: tuple[Outlet, ReferenceHO, dict[str, int]], admit: str) -> None:
    outlet, _, ids = outlet_with_work
    app = {"allow_anonymous": lambda: management_app(outlet.sync, allow_anonymous=True),
           "authorize": lambda: management_app(outlet.sync, authorize=lambda r: True),
           "async-authorize": lambda: management_app(outlet.sync, authorize=_async_yes)}[admit]()
    server = serve_in_thread(app)
    try:
        headers = {} if admit == "allow_anonymous" else {"Authorization": "Bearer admin"}
        for method, path in ROUTES:
            answer = _call(server.url, method, path, ids, headers)
            assert answer.status_code == 200, (method, path, answer.text)
    finally:
        server.stop()
    assert outlet.sync.manager.conflicts() == []  # resolved through the router
    assert outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10) == []  # retried through the router


def test_a_router_mounted_before_posync_is_built_answers_503_then_serves(
        outlet_with_work: tuple[Outlet, ReferenceHO, dict[str, int]]) -> None:
    outlet, _, _ = outlet_with_work
    built: list[posync.Posync] = []
    server = serve_in_thread(management_app(lambda: built[0] if built else None,  # type: ignore[arg-type,return-value]
                                            allow_anonymous=True))
    try:
        early = httpx.get(server.url + "/status", timeout=30)
        assert early.status_code == 503 and "not started" in early.json()["message"]
        built.append(outlet.sync)
        assert httpx.get(server.url + "/status", timeout=30).status_code == 200
    finally:
        server.stop()


def test_authorize_and_allow_anonymous_together_is_a_configuration_error(
        outlet_with_work: tuple[Outlet, ReferenceHO, dict[str, int]]) -> None:
    with pytest.raises(ConfigurationError):
        management_app(outlet_with_work[0].sync, authorize=lambda r: True, allow_anonymous=True)


def test_logs_of_an_unknown_kind_answer_400_naming_the_kinds(
        outlet_with_work: tuple[Outlet, ReferenceHO, dict[str, int]]) -> None:
    outlet, _, _ = outlet_with_work
    server = serve_in_thread(management_app(outlet.sync, allow_anonymous=True))
    try:
        bad = httpx.get(server.url + "/logs", params={"kind": "nope"}, timeout=30)
        assert bad.status_code == 400, bad.text
        assert bad.json()["code"] == "BAD_REQUEST"
        assert "kind must be one of" in bad.json()["message"] and "cycle_failed" in bad.json()["message"]
        dead = httpx.get(server.url + "/logs", params={"kind": "dead"}, timeout=30)
        assert dead.status_code == 200 and dead.json(), dead.text
        assert {row["kind"] for row in dead.json()} == {"dead"}
    finally:
        server.stop()
