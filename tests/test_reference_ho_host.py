"""The reference HO as a guest in a host's process: it leaves the cyclic GC alone unless asked, and takes
routes a host (or another part of posync's tests) mounts on it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posync.testing import DEFAULT_API_KEY, Change, ReferenceHO, serve_in_thread


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def push_watching_gc(ho: ReferenceHO) -> list[bool]:
    """Apply a push whose validator records whether the collector is on while HO applies it."""
    seen: list[bool] = []

    def watch(change: Change) -> None:
        seen.append(gc.isenabled())

    ho.validators["orders"] = watch
    results = ho.apply_push("o1", [{"idempotency_key": "k1", "resource": "orders", "entity_id": "1",
                                    "op": "create", "base_version": None, "data": {"id": "1"}}])
    assert results[0]["status"] == "applied"
    return seen


def test_push_leaves_the_collector_alone_by_default(db_url: str) -> None:
    with ReferenceHO(db_url) as ho:
        assert ho.pause_gc is False
        assert push_watching_gc(ho) == [True]
    assert gc.isenabled()


def test_pause_gc_holds_it_off_during_a_push_and_gives_it_back(db_url: str) -> None:
    with ReferenceHO(db_url, pause_gc=True) as ho:
        assert push_watching_gc(ho) == [False]
    assert gc.isenabled()
    gc.disable()  # a host that turned it off keeps it off
    with ReferenceHO(db_url, pause_gc=True) as ho:
        ho.apply_push("o1", [])
    assert not gc.isenabled()


async def photos(request: Request) -> Response:
    payload = await request.json()
    return JSONResponse({"photos": [], "company_id": payload.get("company_id")})


async def photo(request: Request) -> Response:
    return Response(b"\xff\xd8jpeg:" + request.path_params["id"].encode(), media_type="image/jpeg")


EXTRA = [Route("/api/v1/sync/product-photos/", photos, methods=["POST"]),  # seed 001
         Route("/api/sync/product-photos/{id}", photo, methods=["GET"])]  # seed 000


@pytest.mark.parametrize("profile", ["posync", "seed"])
def test_extra_routes_are_served_after_the_builtin_ones(db_url: str, profile: Any) -> None:
    with ReferenceHO(db_url, profile=profile, extra_routes=EXTRA) as ho, serve_in_thread(ho.app) as s, \
            httpx.Client(base_url=s.url) as c:
        # a POST on a sync path goes past the (GET-only) pull route to the mounted one
        r = c.post("/api/v1/sync/product-photos/", json={"company_id": "c1"})
        assert r.status_code == 200 and r.json() == {"photos": [], "company_id": "c1"}
        r = c.get("/api/sync/product-photos/ph1")
        assert r.content == b"\xff\xd8jpeg:ph1"
        assert ho.requests["GET /api/sync/product-photos/ph1"] == 1  # counted and faultable like the rest
        ho.faults.update(error_rate=1.0)
        assert c.get("/api/sync/product-photos/ph1").status_code == 500
        ho.faults.reset()
        # the built-in routes still win where they match: the pull route takes a GET on a sync path
        auth = ({"Authorization": f"Bearer {ho.issue_tokens()['access']}"} if profile == "seed"
                else {"X-API-Key": DEFAULT_API_KEY})
        r = c.get("/api/v1/sync/product-photos/", params={"company_id": "c1", "store_id": "s1"}, headers=auth)
        assert r.status_code == 200 and r.json()["product-photos"] == []


def test_without_extra_routes_the_path_is_unknown(db_url: str) -> None:
    with ReferenceHO(db_url, profile="seed") as ho, serve_in_thread(ho.app) as s, httpx.Client(base_url=s.url) as c:
        r = c.post("/api/v1/sync/product-photos/", json={})
        assert r.status_code == 405 and r.json()["code"] == "METHOD_NOT_ALLOWED"
        assert c.get("/api/sync/product-photos/ph1").status_code == 404
