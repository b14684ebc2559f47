"""The reference HO over real loopback sockets, on SQLite and PostgreSQL: auth, push, usage, pull, admin."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from posync.errors import NotFoundError
from posync.testing import (
    DEFAULT_API_KEY,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    Change,
    ChangeEvent,
    ReferenceHO,
    Rejection,
    RemoteHO,
    ServerHandle,
    serve_in_thread,
)

PUSH = "/api/v1/sync/push/"
Q = {"company_id": "c1", "store_id": "s1"}


def poison(change: Change) -> Rejection | str | None:
    data = change.data or {}
    if data.get("poison"):
        return Rejection("VALIDATION_ERROR", "poison record", retryable=False)
    if isinstance(data.get("total"), int | float) and data["total"] < 0:
        return "total < 0"
    return None


@pytest.fixture
def ho(db_url: str) -> Iterator[ReferenceHO]:
    with ReferenceHO(db_url, api_keys={DEFAULT_API_KEY: None, "k-o1": ["o1"]},
                     validators={"orders": poison, "usage": poison}) as ho:
        yield ho


@pytest.fixture
def client(server: ServerHandle) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": DEFAULT_API_KEY, "X-Outlet-ID": "o1"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        yield c


def change(key: str, entity_id: str, op: str = "create", base: int | None = None, resource: str = "orders",
           **data: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "resource": resource, "entity_id": entity_id, "op": op,
            "base_version": base, "changed_at": "2026-11-23T10:00:00+00:00",
            "data": None if op == "delete" else {"id": entity_id, **data}}


def push(client: httpx.Client, *changes: dict[str, Any], outlet: str = "o1") -> list[dict[str, Any]]:
    r = client.post(PUSH, json={"outlet_id": outlet, "changes": list(changes)}, headers={"X-Outlet-ID": outlet})
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    assert [x["idempotency_key"] for x in results] == [c.get("idempotency_key") for c in changes]
    return results


# -- authentication ---------------------------------------------------------------------------------


def test_requests_without_credentials_answer_401(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/api/v1/sync/version/", params=Q)
        assert r.status_code == 401
        assert r.json()["status"] == "error" and r.json()["code"] == "UNAUTHORIZED"
        r = c.get("/api/v1/sync/version/", params=Q, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401


def test_api_key_bound_to_an_outlet(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": "k-o1"}) as c:
        ok = c.post(PUSH, json={"changes": [change("a", "1")]}, headers={"X-Outlet-ID": "o1"})
        assert ok.status_code == 200
        other = c.post(PUSH, json={"changes": [change("b", "2")]}, headers={"X-Outlet-ID": "o2"})
        assert other.status_code == 403 and other.json()["code"] == "UNAUTHORIZED"


def test_jwt_login_revoke_then_refresh(server: ServerHandle, ho: ReferenceHO) -> None:
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/api/v1/token/", json={"username": DEFAULT_USERNAME, "password": "no"}).status_code == 401
        tokens = c.post("/api/token/", json={"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}).json()
        auth = {"Authorization": f"Bearer {tokens['access']}", "X-Outlet-ID": "o1"}
        assert c.get("/api/v1/sync/version/", params=Q, headers=auth).status_code == 200
        ho.revoke_access_tokens()
        r = c.get("/api/v1/sync/version/", params=Q, headers=auth)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        fresh = c.post("/api/v1/token/refresh/", json={"refresh": tokens["refresh"]})
        assert fresh.status_code == 200
        auth["Authorization"] = f"Bearer {fresh.json()['access']}"
        assert c.get("/api/v1/sync/version/", params=Q, headers=auth).status_code == 200
        # an access token is not a refresh token, and garbage is refused
        assert c.post("/api/v1/token/refresh/", json={"refresh": fresh.json()["access"]}).status_code == 401
        assert c.post("/api/v1/token/refresh/", json={"refresh": "x.y.z"}).status_code == 401


def test_access_token_expires(db_url: str) -> None:
    with ReferenceHO(db_url, access_ttl=1.0) as ho, serve_in_thread(ho.app) as s, \
            httpx.Client(base_url=s.url) as c:
        access = ho.issue_tokens()["access"]
        auth = {"Authorization": f"Bearer {access}"}
        assert c.get("/api/v1/sync/version/", params=Q, headers=auth).status_code == 200
        time.sleep(2.1)
        r = c.get("/api/v1/sync/version/", params=Q, headers=auth)
        assert r.status_code == 401 and "expired" in r.json()["message"]


# -- push -------------------------------------------------------------------------------------------


def test_push_version_rules(client: httpx.Client, ho: ReferenceHO) -> None:
    r = push(client, change("k1", "42", total=1), change("k2", "42", op="update", base=1, total=2))
    assert [(x["status"], x["cloud_version"]) for x in r] == [("applied", 1), ("applied", 2)]
    # a create of an id that exists, and a stale update: conflict with HO's current record
    (c1,) = push(client, change("k3", "42", total=9))
    assert c1["status"] == "conflict" and c1["current"]["version"] == 2 and c1["current"]["data"]["total"] == 2
    (c2,) = push(client, change("k4", "42", op="update", base=1, total=3))
    assert c2["status"] == "conflict" and c2["current"]["deleted"] is False
    (c3,) = push(client, change("k5", "42", op="delete", base=1))
    assert c3["status"] == "conflict"
    # delete at the right version, then again: applied with the tombstone's version
    assert push(client, change("k6", "42", op="delete", base=2))[0] == {
        "idempotency_key": "k6", "status": "applied", "cloud_version": 3}
    assert push(client, change("k7", "42", op="delete", base=2))[0]["cloud_version"] == 3
    (c4,) = push(client, change("k8", "42", op="update", base=3, total=4))
    assert c4["status"] == "conflict" and c4["current"]["deleted"] is True and c4["current"]["version"] == 3
    # re-creating a tombstone needs its version as base_version
    assert push(client, change("k9", "42", total=5))[0]["status"] == "conflict"
    assert push(client, change("k10", "42", base=3, total=5))[0]["cloud_version"] == 4
    # HO has no row at all: updates conflict against version 0, deletes are already done
    (c5,) = push(client, change("k11", "nope", op="update", base=1, total=1))
    assert c5["current"] == {"id": "nope", "version": 0, "deleted": True, "updated_at": None, "data": None}
    assert push(client, change("k12", "nope", op="delete", base=1))[0]["status"] == "applied"
    rec = ho.get("orders", "42")
    assert rec is not None and rec.version == 4 and rec.data == {"id": "42", "total": 5} and not rec.deleted


def test_push_idempotency(client: httpx.Client, ho: ReferenceHO) -> None:
    a = change("o1:orders:1:1", "1", total=10)
    assert push(client, a, a)[1] == {"idempotency_key": a["idempotency_key"], "status": "duplicate",
                                     "cloud_version": 1}
    assert push(client, a)[0]["status"] == "duplicate"
    assert push(client, {**a, "changed_at": "2026-11-24T00:00:00+00:00"})[0]["status"] == "duplicate"
    reused = push(client, {**a, "data": {"id": "1", "total": 11}})[0]
    assert reused["status"] == "rejected" and reused["code"] == "IDEMPOTENCY_KEY_REUSED"
    # keys are per outlet
    assert push(client, a, outlet="o2")[0]["status"] == "conflict"
    assert ho.applied_count("o1", a["idempotency_key"]) == 1
    assert ho.get("orders", "1").version == 1  # type: ignore[union-attr]


def test_poison_and_malformed_changes_are_rejected_per_item(client: httpx.Client, ho: ReferenceHO) -> None:
    bad = change("p1", "9", poison=True)
    results = push(client, change("g1", "1", total=1), bad, change("n1", "2", total=-5),
                   {**change("t1", "3"), "base_version": "x"}, {**change("t2", "4"), "op": "upsert"},
                   {**change("t3", "5"), "entity_id": 5}, {**change("t4", "6"), "data": [1]},
                   change("g2", "7", total=2))
    assert [x["status"] for x in results] == ["applied", *["rejected"] * 6, "applied"]
    assert results[1] == {"idempotency_key": "p1", "status": "rejected", "code": "VALIDATION_ERROR",
                          "reason": "poison record", "retryable": False}
    assert results[2]["reason"] == "total < 0"
    # a rejection is not remembered: the same poison record is rejected again, never "duplicate"
    assert push(client, bad)[0]["status"] == "rejected"
    r = client.post(PUSH, json={"changes": [None, {"resource": "orders"}]})
    assert [x["status"] for x in r.json()["results"]] == ["rejected", "rejected"]
    # an op that is a list or an object (unhashable) is a validation error too, not a 500
    r = client.post(PUSH, json={"changes": [{**change("u1", "8"), "op": ["create"]}, {**change("u2", "8"), "op": {}}]})
    assert r.status_code == 200
    assert [x["code"] for x in r.json()["results"]] == ["VALIDATION_ERROR", "VALIDATION_ERROR"]
    assert set(ho.records("orders")) == {"1", "7"}


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (b"\xff\xfe", 400), (b"[]", 422), (b'{"changes": {}}', 422), (b"null", 422),
     (b'{"changes": [], "outlet_id": 5}', 422), (b'{"changes": [], "outlet_id": "o9"}', 400)],
)
def test_bad_push_bodies_are_4xx(client: httpx.Client, body: bytes, status: int) -> None:
    r = client.post(PUSH, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["status"] == "error" and r.json()["code"] == "VALIDATION_ERROR"


def test_push_needs_an_outlet_id(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": DEFAULT_API_KEY}) as c:
        assert c.post(PUSH, json={"changes": []}).status_code == 400
        assert c.post(PUSH, json={"changes": [], "outlet_id": "o1"}).status_code == 200


def test_concurrent_duplicate_pushes_apply_exactly_once(server: ServerHandle, ho: ReferenceHO) -> None:
    batch = [change(f"o1:orders:{i}:1", str(i), total=i) for i in range(60)]
    batch += [change(f"o1:orders:{i}:2", str(i), op="update", base=1, total=-i + 1000) for i in range(0, 60, 3)]
    n = 8
    barrier = threading.Barrier(n)
    answers: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []

    def terminal() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=60,
                              headers={"X-API-Key": DEFAULT_API_KEY, "X-Outlet-ID": "o1"}) as c:
                barrier.wait()
                r = c.post(PUSH, json={"changes": batch})
                assert r.status_code == 200, r.text
                answers.append(r.json()["results"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=terminal) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(answers) == n
    for i, c in enumerate(batch):
        statuses = sorted(a[i]["status"] for a in answers)
        assert statuses == ["applied"] + ["duplicate"] * (n - 1), (c["idempotency_key"], statuses)
    counts = ho.applied_counts("o1")
    assert len(counts) == len(batch) and set(counts.values()) == {1}
    records = ho.records("orders")
    assert {k: r.version for k, r in records.items()} == {str(i): 2 if i % 3 == 0 else 1 for i in range(60)}


def test_two_ho_processes_on_one_database_apply_once(db_url: str) -> None:
    """Two HO instances (separate engines, as two processes would have) racing on the same keys."""
    with ReferenceHO(db_url) as a, ReferenceHO(db_url) as b:
        batch = [change(f"k{i}", str(i), total=i) for i in range(200)]
        barrier = threading.Barrier(4)
        out: list[list[dict[str, Any]]] = []

        def run(ho: ReferenceHO) -> None:
            barrier.wait()
            out.append(ho.apply_push("o1", batch))

        threads = [threading.Thread(target=run, args=(ho,)) for ho in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(out) == 4
        assert all(sorted(r[i]["status"] for r in out) == ["applied", "duplicate", "duplicate", "duplicate"]
                   for i in range(len(batch)))
        assert set(a.applied_counts().values()) == {1} and len(b.records("orders")) == 200


def test_usage_upload(client: httpx.Client, ho: ReferenceHO) -> None:
    u = {"idempotency_key": "u1", "promotion_id": "pr1", "bill_id": "B001", "discount_amount": 15000.0,
         "used_at": "2026-01-27T10:00:00Z", "store_id": "s1"}
    r = client.post("/api/v1/sync/usage/", json={"outlet_id": "o1", "usages": [u, u, {**u, "bill_id": "B2"},
                                                                               {**u, "idempotency_key": "u2",
                                                                                "poison": True}, 7]})
    assert r.status_code == 200
    assert [x["status"] for x in r.json()["results"]] == ["applied", "duplicate", "rejected", "rejected",
                                                         "rejected"]
    assert r.json()["results"][2]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert [x["data"]["bill_id"] for x in ho.usages()] == ["B001"]
    assert ho.applied_count("o1", "u1") == 1
    assert client.post("/api/v1/sync/usage/", json={"usages": "x"}).status_code == 422


# -- pull -------------------------------------------------------------------------------------------


def test_pull_pages_by_cursor(client: httpx.Client, ho: ReferenceHO) -> None:
    for i in range(5):
        ho.put("products", f"p{i}", {"name": f"P{i}", "price": 1000 * i})
    ho.delete("products", "p1")
    r = client.get("/api/v1/sync/products/", params={**Q, "limit": 3, "cursor": ""})
    body = r.json()
    assert r.status_code == 200 and body["has_more"] is True and body["next_offset"] is None
    assert [p["id"] for p in body["products"]] == ["p0", "p2", "p3"]  # p1 moved to seq 6 when deleted
    first = body["products"][0]
    assert set(first) == {"id", "version", "updated_at", "name", "price"} and first["version"] == 1
    seen = [p["id"] for p in body["products"]]
    body = client.get("/api/v1/sync/products/", params={**Q, "limit": 3, "cursor": body["next_cursor"]}).json()
    seen += [p["id"] for p in body["products"]]
    assert body["has_more"] is False and sorted(seen) == ["p0", "p2", "p3", "p4"]
    assert body["deleted_ids"] == ["p1"] and body["deleted"][0]["version"] == 2
    assert set(body["deleted"][0]) == {"id", "version", "deleted_at"}
    last = client.get("/api/v1/sync/products/", params={**Q, "cursor": body["next_cursor"]}).json()
    assert last["products"] == [] and last["next_cursor"] == body["next_cursor"] and last["total"] == 0
    assert "sync_timestamp" in last


def test_pull_errors(client: httpx.Client, db_url: str) -> None:
    def code(path: str, **params: Any) -> tuple[int, str]:
        r = client.get(path, params=params)
        return r.status_code, r.json()["code"]

    assert code("/api/v1/sync/products/", store_id="s") == (400, "MISSING_COMPANY_ID")
    assert code("/api/v1/sync/products/", company_id="c") == (400, "MISSING_STORE_ID")
    assert code("/api/v1/sync/products/", **Q, cursor="zz") == (400, "INVALID_CURSOR")
    assert code("/api/v1/sync/products/", **Q, limit="ten") == (400, "VALIDATION_ERROR")
    assert code("/api/v1/sync/products/", **Q, limit="0") == (400, "VALIDATION_ERROR")
    assert code("/api/v1/sync/products/", **Q, updated_since="yesterday") == (400, "INVALID_DATE_FORMAT")
    assert code("/api/v1/sync/products/", **Q, offset="-1") == (400, "VALIDATION_ERROR")
    assert code("/api/v1/sync/push/", **Q) == (404, "UNKNOWN_RESOURCE")
    assert code("/api/v1/sync/version/") == (400, "MISSING_COMPANY_ID")
    assert code("/api/v1/nothing/") == (404, "NOT_FOUND")
    assert client.post("/api/v1/sync/products/").status_code == 405
    with ReferenceHO(db_url, resources=["products"], require_auth=False) as limited, \
            serve_in_thread(limited.app) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/api/v1/sync/products/", params=Q).status_code == 200
        assert c.get("/api/v1/sync/categories/", params=Q).json()["code"] == "UNKNOWN_RESOURCE"
        assert c.get("/api/v1/sync/version/", params=Q).json()["resources"] == {"products": 0}


def test_pull_legacy_updated_since_and_offset(client: httpx.Client, ho: ReferenceHO) -> None:
    for i in range(5):
        ho.put("categories", f"c{i}", {"name": f"C{i}"})
    body = client.get("/api/v1/sync/categories/", params={**Q, "offset": 0, "limit": 2}).json()
    assert [c["id"] for c in body["categories"]] == ["c0", "c1"] and body["next_offset"] == 2
    assert body["next_cursor"] is None
    since = ho.get("categories", "c2").updated_at  # type: ignore[union-attr]
    body = client.get("/api/v1/sync/categories/", params={**Q, "updated_since": since}).json()
    assert [c["id"] for c in body["categories"]] == ["c3", "c4"] and body["has_more"] is False
    z = client.get("/api/v1/sync/categories/", params={**Q, "updated_since": "2000-01-01T00:00:00Z"}).json()
    assert len(z["categories"]) == 5


def test_version_endpoint(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.put("products", "p1", {"name": "a"})
    ho.put("categories", "c1", {"name": "b"})
    ho.put("products", "p1", {"name": "c"})
    body = client.get("/api/v1/sync/version/", params={"company_id": "c1"}).json()
    assert body["version"] == 3 and body["resources"] == {"products": 3, "categories": 2}


def test_tombstone_horizon_expires_old_cursors(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.put("products", "a", {"n": 1})
    ho.put("products", "b", {"n": 2})
    old = client.get("/api/v1/sync/products/", params={**Q, "cursor": ""}).json()["next_cursor"]
    ho.delete("products", "a")  # seq 3
    assert ho.purge_tombstones(horizon=3600) == 0  # too young
    fresh = client.get("/api/v1/sync/products/", params={**Q, "cursor": old}).json()
    assert fresh["deleted_ids"] == ["a"]
    assert ho.purge_tombstones(horizon=0) == 1
    r = client.get("/api/v1/sync/products/", params={**Q, "cursor": old})
    assert r.status_code == 410 and r.json()["code"] == "CURSOR_EXPIRED"
    assert client.get("/api/v1/sync/products/", params={**Q, "cursor": fresh["next_cursor"]}).status_code == 200
    full = client.get("/api/v1/sync/products/", params={**Q, "cursor": ""}).json()
    assert [p["id"] for p in full["products"]] == ["b"] and full["deleted_ids"] == []
    # a cursor from the future (HO's database was reset) also asks for a resync
    assert client.get("/api/v1/sync/products/", params={**Q, "cursor": "c:999"}).status_code == 410


# -- admin API --------------------------------------------------------------------------------------


def test_admin_api_and_on_change(client: httpx.Client, ho: ReferenceHO, server: ServerHandle) -> None:
    events: list[ChangeEvent] = []

    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("listener down")

    ho.on_change += [broken, events.append]
    assert ho.put("products", "p1", {"name": "Tea"}) == 1
    assert ho.put("products", "p1", {"name": "Tea 2"}) == 2
    assert ho.delete("products", "p1") == 3
    with pytest.raises(NotFoundError):
        ho.delete("products", "p1")
    push(client, change("k1", "o9", total=1))
    assert [(e.type, e.source, e.record["version"]) for e in events] == [
        ("update", "admin", 1), ("update", "admin", 2), ("delete", "admin", 3), ("update", "push", 1)]
    assert events[-1].outlet_id == "o1" and events[-1].record["total"] == 1
    with RemoteHO(server.url) as remote:
        assert remote.put("products", "p2", {"name": "x"}) == 1
        assert remote.get("products", "p2")["data"] == {"name": "x"}  # type: ignore[index]
        assert remote.get("products", "zz") is None
        assert remote.delete("products", "p2") == 2
        recs = remote.records("products")
        assert recs["p1"]["deleted"] is True and recs["p2"]["version"] == 2
        applied = remote.applied_counts(outlet_id="o1")
        assert applied["total"] == 1 and applied["max"] == 1
        stats = remote.stats()
        assert stats["tombstones"] == 2 and stats["requests"]["POST /api/v1/sync/push/"] == 1
        assert remote.purge_tombstones(0) == 2
    assert set(ho.records("products")) == set()
