"""The reference HO's seed profile (docs/seed-profile.md) over real loopback sockets, on SQLite and
PostgreSQL: JWT and DRF's 401 bodies, the seed error shape, pull parameters, offset paging over a live
set (and how it shifts), limit caps, hard deletes, the timestamp version, usage summaries, the admin API."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
    RemoteHO,
    ServerHandle,
    serve_in_thread,
)

SYNC = "/api/v1/sync"
USAGE = f"{SYNC}/usage/"
VERSION = f"{SYNC}/version/"
C = {"company_id": "c1"}
NOT_PROVIDED = {"detail": "Authentication credentials were not provided."}
NOT_VALID = {"detail": "Given token not valid for any token type", "code": "token_not_valid"}


def no_negative_discount(change: Change) -> str | None:
    amount = (change.data or {}).get("discount_amount")
    return "discount_amount < 0" if isinstance(amount, int | float) and amount < 0 else None


@pytest.fixture
def ho(db_url: str) -> Iterator[ReferenceHO]:
    with ReferenceHO(db_url, profile="seed", validators={"usage": no_negative_discount}) as ho:
        yield ho


def bearer(ho: ReferenceHO) -> dict[str, str]:
    return {"Authorization": f"Bearer {ho.issue_tokens()['access']}"}


@pytest.fixture
def client(server: ServerHandle, ho: ReferenceHO) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=bearer(ho), timeout=30) as c:
        yield c


@contextmanager
def seed_client(db_url: str, **options: Any) -> Iterator[tuple[ReferenceHO, httpx.Client]]:
    """A seed HO with ``options`` on the test's database, served, with an authenticated client."""
    with ReferenceHO(db_url, profile="seed", **options) as ho, serve_in_thread(ho.app) as s, \
            httpx.Client(base_url=s.url, headers=bearer(ho), timeout=30) as c:
        yield ho, c


def seed_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "code"} and body["code"] == code and isinstance(body["error"], str), body


def pull(client: httpx.Client, resource: str = "categories", **params: Any) -> dict[str, Any]:
    r = client.get(f"{SYNC}/{resource}/", params={**C, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def ids(page: dict[str, Any], resource: str = "categories") -> list[str]:
    return [rec["id"] for rec in page[resource]]


def put_rows(ho: ReferenceHO, n: int, resource: str = "categories", prefix: str = "r") -> list[str]:
    names = [f"{prefix}{i}" for i in range(n)]
    for i, name in enumerate(names):  # one save each: updated_at grows in this order
        ho.put(resource, name, {"name": name.upper(), "n": i})
    return names


# -- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/api/v1", "/api"])
def test_token_and_refresh_simplejwt_style(server: ServerHandle, prefix: str) -> None:
    with httpx.Client(base_url=server.url) as c:
        r = c.post(f"{prefix}/token/", json={"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD})
        assert r.status_code == 200 and set(r.json()) == {"access", "refresh"}
        tokens = r.json()
        auth = {"Authorization": f"Bearer {tokens['access']}"}
        assert c.get(VERSION, params=C, headers=auth).status_code == 200
        fresh = c.post(f"{prefix}/token/refresh/", json={"refresh": tokens["refresh"]})
        assert fresh.status_code == 200 and set(fresh.json()) == {"access"}
        renewed = {"Authorization": f"Bearer {fresh.json()['access']}"}
        assert c.get(VERSION, params=C, headers=renewed).status_code == 200


def test_login_and_refresh_failures(server: ServerHandle, ho: ReferenceHO) -> None:
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/api/v1/token/", json={"username": DEFAULT_USERNAME, "password": "wrong"})
        assert r.status_code == 401 and r.json() == {"detail": "No active account found with the given credentials"}
        assert r.headers["www-authenticate"] == 'Bearer realm="api"'
        r = c.post("/api/token/", json={"username": "nobody", "password": DEFAULT_PASSWORD})
        assert r.status_code == 401 and "detail" in r.json()
        invalid = {"detail": "Token is invalid or expired", "code": "token_not_valid"}
        for token in ("x.y.z", ho.issue_tokens()["access"]):  # garbage, and an access token as a refresh one
            r = c.post("/api/v1/token/refresh/", json={"refresh": token})
            assert r.status_code == 401 and r.json() == invalid
        # not credentials at all: a 400 in the seed's shape (a 401 is only for credentials that fail)
        seed_error(c.post("/api/v1/token/", json={"username": DEFAULT_USERNAME}), 400, "VALIDATION_ERROR")
        seed_error(c.post("/api/v1/token/refresh/", json={}), 400, "VALIDATION_ERROR")
        seed_error(c.post("/api/v1/token/", content=b"{nope"), 400, "VALIDATION_ERROR")


def test_401_bodies_are_drf_ones(server: ServerHandle, ho: ReferenceHO) -> None:
    valid = ho.issue_tokens()["access"]
    ho.auth.access_ttl = -1.0
    expired = ho.issue_tokens()["access"]
    ho.auth.access_ttl = 300.0
    cases: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, NOT_PROVIDED),
        ({"X-API-Key": DEFAULT_API_KEY, "X-Outlet-ID": "o1"}, NOT_PROVIDED),  # API keys are not in the seed
        ({"Authorization": f"Token {valid}"}, NOT_PROVIDED),  # another scheme is no credential
        ({"Authorization": "Bearer garbage"}, NOT_VALID),
        ({"Authorization": "Bearer"}, NOT_VALID),  # no token after the scheme
        ({"Authorization": f"Bearer {expired}"}, NOT_VALID),
    ]
    calls = [("GET", f"{SYNC}/categories/", C), ("GET", f"{SYNC}/products/", {**C, "brand_id": "b"}),
             ("GET", VERSION, C)]
    with httpx.Client(base_url=server.url) as c:
        for headers, body in cases:
            for method, path, params in calls:
                r = c.request(method, path, params=params, headers=headers)
                assert r.status_code == 401 and r.json() == body, (headers, path, r.text)
                assert r.headers["www-authenticate"] == 'Bearer realm="api"'
            r = c.post(USAGE, json={"usages": []}, headers=headers)
            assert r.status_code == 401 and r.json() == body
        assert c.get(VERSION, params=C, headers={"Authorization": f"Bearer {valid}"}).status_code == 200
        ho.revoke_access_tokens()
        r = c.get(VERSION, params=C, headers={"Authorization": f"Bearer {valid}"})
        assert r.status_code == 401 and r.json() == NOT_VALID
    assert ho.usages() == []


def test_anonymous_when_auth_is_not_required(db_url: str) -> None:
    with ReferenceHO(db_url, profile="seed", require_auth=False) as ho, serve_in_thread(ho.app) as s, \
            httpx.Client(base_url=s.url) as c:
        assert c.get(VERSION, params=C).status_code == 200
        r = c.get(VERSION, params=C, headers={"Authorization": "Bearer garbage"})  # a bad token still fails
        assert r.status_code == 401 and r.json() == NOT_VALID


# -- pull: parameters and errors --------------------------------------------------------------------


@pytest.mark.parametrize(("resource", "params", "code"), [
    ("categories", {}, "MISSING_COMPANY_ID"),
    ("categories", {"store_id": "s1", "brand_id": "b1"}, "MISSING_COMPANY_ID"),
    ("categories", {"company_id": "c1"}, None),
    ("products", {"company_id": "c1"}, "MISSING_BRAND_ID"),
    ("products", {"company_id": "c1", "store_id": "s1"}, "MISSING_BRAND_ID"),
    ("products", {"brand_id": "b1"}, "MISSING_COMPANY_ID"),
    ("products", {"company_id": "c1", "brand_id": "b1"}, None),
    ("promotions", {"company_id": "c1"}, "MISSING_STORE_ID"),
    ("promotions", {"company_id": "c1", "brand_id": "b1"}, "MISSING_STORE_ID"),
    ("promotions", {"store_id": "s1"}, "MISSING_COMPANY_ID"),
    ("promotions", {"company_id": "c1", "store_id": "s1"}, None),
    ("modifiers", {}, "MISSING_COMPANY_ID"),  # any other resource: like categories
    ("modifiers", {"company_id": "c1"}, None),
    ("categories", {"company_id": "c1", "updated_since": "yesterday"}, "INVALID_DATE_FORMAT"),
    ("products", {"company_id": "c1", "brand_id": "b1", "updated_since": "2026-13-45"}, "INVALID_DATE_FORMAT"),
])
def test_pull_parameters(client: httpx.Client, resource: str, params: dict[str, str], code: str | None) -> None:
    r = client.get(f"{SYNC}/{resource}/", params=params)
    if code is None:
        assert r.status_code == 200 and r.json()[resource] == [] and r.json()["total"] == 0
    else:
        seed_error(r, 400, code)


def test_bad_limit_or_offset_is_the_views_500(client: httpx.Client) -> None:
    for params in ({"limit": "ten"}, {"offset": "x"}, {"limit": "-1"}, {"offset": "-1"}):
        seed_error(client.get(f"{SYNC}/categories/", params={**C, **params}), 500, "INTERNAL_ERROR")


def test_unknown_store_and_company_answer_404(db_url: str) -> None:
    with seed_client(db_url, stores={"s1"}, companies={"c1"}) as (_, c):
        seed_error(c.get(f"{SYNC}/promotions/", params={"company_id": "c1", "store_id": "s9"}), 404, "STORE_NOT_FOUND")
        seed_error(c.get(f"{SYNC}/categories/", params={"company_id": "c9"}), 404, "COMPANY_NOT_FOUND")
        seed_error(c.get(f"{SYNC}/categories/", params={"company_id": "c1", "store_id": "s9"}), 404,
                   "STORE_NOT_FOUND")  # optional, but checked when given
        seed_error(c.get(VERSION, params={"company_id": "c9"}), 404, "COMPANY_NOT_FOUND")
        assert c.get(f"{SYNC}/promotions/", params={"company_id": "c1", "store_id": "s1"}).status_code == 200
        assert c.get(VERSION, params={"company_id": "c1"}).status_code == 200


def test_any_id_is_known_when_ho_is_not_told_its_ids(client: httpx.Client) -> None:
    assert client.get(f"{SYNC}/promotions/", params={"company_id": "any", "store_id": "any"}).status_code == 200


def test_paths_that_do_not_exist_and_wrong_methods(client: httpx.Client, db_url: str) -> None:
    for method in ("GET", "POST", "PUT"):
        seed_error(client.request(method, f"{SYNC}/push/", json={"changes": []}), 404, "NOT_FOUND")
    seed_error(client.post(f"{SYNC}/categories/", json={}), 405, "METHOD_NOT_ALLOWED")
    seed_error(client.get(USAGE), 405, "METHOD_NOT_ALLOWED")
    seed_error(client.post(VERSION, params=C), 405, "METHOD_NOT_ALLOWED")
    seed_error(client.get("/api/v1/nothing/"), 404, "NOT_FOUND")
    seed_error(client.get(f"{SYNC}/BAD NAME/", params=C), 404, "NOT_FOUND")
    with seed_client(db_url, resources=["products"]) as (_, c):
        assert c.get(f"{SYNC}/products/", params={**C, "brand_id": "b"}).status_code == 200
        seed_error(c.get(f"{SYNC}/categories/", params=C), 404, "NOT_FOUND")


# -- pull: answers ----------------------------------------------------------------------------------


def test_pull_answer_carries_no_version(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.put("products", "p1", {"name": "ASAHI SALMON BOWL", "price": 42000})
    ho.put("products", "p1", {"name": "ASAHI SALMON BOWL", "price": 43000})  # internal version 2
    before = datetime.now(UTC)
    body = pull(client, "products", brand_id="b1")
    assert list(body) == ["products", "deleted_ids", "sync_timestamp", "total", "has_more", "next_offset"]
    (rec,) = body["products"]
    assert set(rec) == {"id", "name", "price", "updated_at"} and rec["price"] == 43000
    stored = ho.get("products", "p1")
    assert stored is not None and stored.version == 2 and rec["updated_at"] == stored.updated_at
    updated = datetime.fromisoformat(rec["updated_at"])
    stamp = datetime.fromisoformat(body["sync_timestamp"])
    assert updated.utcoffset() == timedelta(0) and stamp.utcoffset() == timedelta(0)
    assert updated <= before <= stamp  # HO's clock when it answered, after the save
    assert (body["deleted_ids"], body["total"], body["has_more"], body["next_offset"]) == ([], 1, False, None)


def test_default_limit_is_100_and_pages_follow_offset(client: httpx.Client, ho: ReferenceHO) -> None:
    names = put_rows(ho, 101)
    first = pull(client)
    assert len(first["categories"]) == 100 and first["total"] == 101
    assert (first["has_more"], first["next_offset"]) == (True, 100)
    rest = pull(client, offset=100)
    assert ids(rest) == [names[100]] and (rest["has_more"], rest["next_offset"], rest["total"]) == (False, None, 101)
    exact = pull(client, offset=1, limit=100)  # offset + limit == total: nothing more
    assert len(exact["categories"]) == 100 and (exact["has_more"], exact["next_offset"]) == (False, None)
    mid = pull(client, offset=10, limit=5)
    assert ids(mid) == names[10:15] and (mid["has_more"], mid["next_offset"]) == (True, 15)
    assert ids(first) == sorted(names[:100], key=names.index)  # ordered by updated_at, then id
    past = pull(client, offset=500)
    assert past["categories"] == [] and (past["has_more"], past["next_offset"], past["total"]) == (False, None, 101)
    # limit=0, as the formula has it: an empty page that says there is more, at the same offset
    zero = pull(client, limit=0, offset=3)
    assert zero["categories"] == [] and (zero["has_more"], zero["next_offset"]) == (True, 3)


def test_order_is_updated_at_then_id(client: httpx.Client, ho: ReferenceHO) -> None:
    put_rows(ho, 3, prefix="z")
    ho.put("categories", "a", {"name": "A"})  # saved last: last, although its id sorts first
    ho.put("categories", "z0", {"name": "Z0 again"})  # a re-save moves a row to the end
    assert ids(pull(client)) == ["z1", "z2", "a", "z0"]


def test_updated_since_is_inclusive_iso_8601(client: httpx.Client, ho: ReferenceHO) -> None:
    names = put_rows(ho, 4)
    since = ho.get("categories", names[1]).updated_at  # type: ignore[union-attr]
    assert ids(pull(client, updated_since=since)) == names[1:]  # >=: the row saved at that instant is in
    assert pull(client, updated_since=since)["total"] == 3
    as_sent = client.get(f"{SYNC}/categories/?company_id=c1&updated_since={since}")  # '+' unescaped -> ' '
    assert ids(as_sent.json()) == names[1:]
    zulu = since.replace("+00:00", "Z")
    assert ids(pull(client, updated_since=zulu)) == names[1:]
    jakarta = datetime.fromisoformat(since).astimezone(datetime.fromisoformat("2026-01-01T00:00+07:00").tzinfo)
    assert ids(pull(client, updated_since=jakarta.isoformat())) == names[1:]
    naive = since.removesuffix("+00:00")  # no offset: taken as UTC
    assert ids(pull(client, updated_since=naive)) == names[1:]
    later = (datetime.fromisoformat(since) + timedelta(microseconds=1)).isoformat()
    assert ids(pull(client, updated_since=later)) == names[2:]
    future = pull(client, updated_since="2999-01-01T00:00:00+00:00")
    assert future["categories"] == [] and future["total"] == 0
    assert ids(pull(client, updated_since="")) == names  # empty: absent


def test_offset_paging_over_a_live_set_skips_a_row_after_a_delete(client: httpx.Client, ho: ReferenceHO) -> None:
    names = put_rows(ho, 6)
    first = pull(client, limit=3)
    assert ids(first) == names[:3] and first["total"] == 6 and first["next_offset"] == 3
    ho.delete("categories", names[1])  # between two page reads
    second = pull(client, limit=3, offset=first["next_offset"])
    assert ids(second) == names[4:] and second["total"] == 5 and second["has_more"] is False
    seen = set(ids(first)) | set(ids(second))
    assert names[3] not in seen and ho.get("categories", names[3]) is not None  # live at HO, never served


def test_offset_paging_repeats_and_skips_after_an_update(client: httpx.Client, ho: ReferenceHO) -> None:
    names = put_rows(ho, 6)
    first = pull(client, limit=3)
    ho.put("categories", names[0], {"name": "edited"})  # moves to the end of (updated_at, id)
    ho.put("categories", "new", {"name": "NEW"})  # an insert: the set grows under the reader
    second = pull(client, limit=3, offset=3)
    assert ids(second) == [names[4], names[5], names[0]]
    assert second["total"] == 7 and (second["has_more"], second["next_offset"]) == (True, 6)
    third = pull(client, limit=3, offset=6)
    assert ids(third) == ["new"] and third["has_more"] is False
    served = ids(first) + ids(second) + ids(third)
    assert served.count(names[0]) == 2 and names[3] not in served


def test_max_limit_caps_the_page(db_url: str) -> None:
    with seed_client(db_url, max_limit=2) as (ho, c):
        names = put_rows(ho, 5)
        body = pull(c, limit=50)
        assert ids(body) == names[:2] and (body["has_more"], body["next_offset"], body["total"]) == (True, 2, 5)
        assert ids(pull(c)) == names[:2]  # the default limit is capped too
        small = pull(c, limit=1, offset=1)
        assert ids(small) == names[1:2] and small["next_offset"] == 2
        last = pull(c, limit=50, offset=4)
        assert ids(last) == names[4:] and (last["has_more"], last["next_offset"]) == (False, None)


def test_ignore_limit_answers_every_row_in_one_page(db_url: str) -> None:
    with seed_client(db_url, ignore_limit=True) as (ho, c):
        names = put_rows(ho, 5)
        body = pull(c, limit=2, offset=3)
        assert ids(body) == names and (body["has_more"], body["next_offset"], body["total"]) == (False, None, 5)
        since = ho.get("categories", names[2]).updated_at  # type: ignore[union-attr]
        assert ids(pull(c, limit=1, updated_since=since)) == names[2:]


def test_scope_parameters_filter_records_that_carry_them(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.put("categories", "k1", {"name": "b1 only", "brand_id": "b1"})
    ho.put("categories", "k2", {"name": "b2 only", "brand_id": "b2"})
    ho.put("categories", "k3", {"name": "every brand"})
    body = pull(client, brand_id="b1")
    assert ids(body) == ["k1", "k3"] and body["total"] == 2
    assert ids(pull(client)) == ["k1", "k2", "k3"]
    ho.put("products", "p1", {"name": "x", "brand_id": "b2", "company_id": "c1"})
    ho.put("products", "p2", {"name": "y", "company_id": "c2"})
    assert ids(pull(client, "products", brand_id="b2"), "products") == ["p1"]
    assert ids(pull(client, "products", brand_id="b1"), "products") == []


# -- hard deletes -----------------------------------------------------------------------------------


def test_deletes_are_hard(client: httpx.Client, ho: ReferenceHO) -> None:
    names = put_rows(ho, 3)
    assert ho.delete("categories", names[0]) == 1  # the version the row had
    assert ho.get("categories", names[0]) is None
    assert set(ho.records("categories")) == set(names[1:])
    body = pull(client)
    assert ids(body) == names[1:] and body["deleted_ids"] == [] and body["total"] == 2
    with pytest.raises(NotFoundError):
        ho.delete("categories", names[0])
    assert ho.delete_record("categories", "never") is None
    assert ho.stats()["tombstones"] == 0 and ho.stats()["records"] == 2
    assert ho.put("categories", names[0], {"name": "back"}) == 1  # a new row, from version 1
    assert ids(pull(client))[-1] == names[0]
    assert ho.deletions("categories") == {}  # no delete tracking unless report_deletes


def test_report_deletes_lists_ids_deleted_since_on_the_first_page(db_url: str) -> None:
    with seed_client(db_url, report_deletes=True) as (ho, c):
        names = put_rows(ho, 5)
        ho.delete("categories", names[0])
        since = pull(c)["sync_timestamp"]
        ho.delete("categories", names[1])
        ho.delete("categories", names[2])
        assert pull(c)["deleted_ids"] == names[:3]  # no updated_since: every deleted id
        assert pull(c, updated_since=since)["deleted_ids"] == names[1:3]
        assert pull(c, limit=1)["deleted_ids"] == names[:3]
        assert pull(c, limit=1, offset=1)["deleted_ids"] == []  # first page only
        later = pull(c, updated_since="2999-01-01T00:00:00Z")
        assert later["deleted_ids"] == [] and later["categories"] == []
        deletions = ho.deletions("categories")
        assert list(deletions) == names[:3] and all(datetime.fromisoformat(t).tzinfo for t in deletions.values())
        ho.put("categories", names[1], {"name": "re-created"})  # live again: no longer reported
        assert pull(c)["deleted_ids"] == [names[0], names[2]]
        assert ids(pull(c)) == [*names[3:], names[1]]


# -- version ----------------------------------------------------------------------------------------


def _epoch(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp())


def _early_in_a_second() -> None:
    frac = datetime.now(UTC).microsecond / 1e6
    if frac > 0.3:
        time.sleep(1.02 - frac)


def test_version_is_the_epoch_second_of_the_latest_save(client: httpx.Client, ho: ReferenceHO) -> None:
    def version() -> int:
        r = client.get(VERSION, params=C)
        assert r.status_code == 200 and set(r.json()) == {"version", "timestamp"}
        assert datetime.fromisoformat(r.json()["timestamp"]).tzinfo is not None
        v = r.json()["version"]
        assert isinstance(v, int)
        return v

    assert version() == 0  # no record
    ho.put("products", "a", {"n": 1})
    a = ho.get("products", "a").updated_at  # type: ignore[union-attr]
    assert version() == _epoch(a)
    time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)  # the next second
    _early_in_a_second()
    ho.put("categories", "b", {"n": 2})  # any resource of the company moves it
    v_b = version()
    assert v_b > _epoch(a)
    ho.put("promotions", "c", {"n": 3})  # a second save within the same second: the same number
    c = ho.get("promotions", "c").updated_at  # type: ignore[union-attr]
    assert _epoch(c) == v_b and version() == v_b
    ho.delete("products", "a")  # a hard delete of an older row does not move it
    assert version() == v_b
    time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)
    ho.put("categories", "b", {"n": 4})  # a re-save does
    v_resaved = version()
    assert v_resaved > v_b
    ho.delete("categories", "b")  # MAX(updated_at) of what is left: deleting the latest row lowers it
    assert version() == _epoch(c)


def test_version_needs_a_company_and_follows_its_records(client: httpx.Client, ho: ReferenceHO) -> None:
    seed_error(client.get(VERSION), 400, "MISSING_COMPANY_ID")
    ho.put("products", "p", {"n": 1, "company_id": "c2"})
    assert client.get(VERSION, params={"company_id": "c1"}).json()["version"] == 0
    assert client.get(VERSION, params={"company_id": "c2"}).json()["version"] > 0


# -- usage upload -----------------------------------------------------------------------------------


def usage(usage_id: str, **extra: Any) -> dict[str, Any]:
    return {"usage_id": usage_id, "promotion_id": "pr1", "bill_id": f"B-{usage_id}", "discount_amount": 15000.0,
            "used_at": "2026-01-27T10:00:00Z", "store_id": "s1", **extra}


def test_usage_summary_with_per_index_errors_and_no_deduplication(client: httpx.Client, ho: ReferenceHO) -> None:
    batch: list[Any] = [usage("u1"), usage("u2", discount_amount=-1), 7, usage("u3"), usage("u1")]
    r = client.post(USAGE, json={"usages": batch})
    assert r.status_code == 200
    assert r.json() == {"received": 5, "processed": 3, "failed": 2, "errors": [
        {"index": 1, "error": "discount_amount < 0"}, {"index": 2, "error": "usage must be an object"}]}
    stored = ho.usages()
    assert [u["data"] for u in stored] == [batch[0], batch[3], batch[4]]  # as sent, extra fields included
    assert [u["idempotency_key"] for u in stored] == ["u1", "u3", "u1"]
    assert ho.usage_counts() == {"u1": 2, "u3": 1} and ho.duplicate_usages() == {"u1": 2}
    # the same batch again (a lost answer, retried): everything processed is stored again
    assert client.post(USAGE, json={"usages": batch}).json()["processed"] == 3
    assert ho.duplicate_usages() == {"u1": 4, "u3": 2}
    assert ho.usage_counts("bill_id") == {"B-u1": 4, "B-u3": 2}
    assert ho.usage_counts("nothing") == {}


def test_usage_empty_list_and_bad_bodies(client: httpx.Client, ho: ReferenceHO) -> None:
    r = client.post(USAGE, json={"usages": []})
    assert r.status_code == 200 and r.json() == {"received": 0, "processed": 0, "failed": 0, "errors": []}
    for body in (b"{nope", b"\xff", b"[]", b"{}", b'{"usages": {}}', b'{"usages": "u1"}', b"null"):
        seed_error(client.post(USAGE, content=body, headers={"Content-Type": "application/json"}), 400,
                   "VALIDATION_ERROR")
    assert ho.usages() == []


def test_usage_of_an_unknown_store_is_a_per_index_error(db_url: str) -> None:
    with seed_client(db_url, stores={"s1"}) as (ho, c):
        r = c.post(USAGE, json={"usages": [usage("u1"), usage("u2", store_id="s9")]},
                   headers={"X-Outlet-ID": "outlet-7"})
        assert r.json() == {"received": 2, "processed": 1, "failed": 1,
                            "errors": [{"index": 1, "error": "Store s9 not found"}]}
        assert [(u["outlet_id"], u["data"]["usage_id"]) for u in ho.usages()] == [("outlet-7", "u1")]


# -- faults, admin, Python API ----------------------------------------------------------------------


def test_injected_errors_answer_in_the_seed_shape(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.faults.update(error_rate=1.0)
    r = client.get(VERSION, params=C)
    assert r.status_code == 500 and r.json() == {"error": "injected fault", "code": "INTERNAL_ERROR"}
    ho.faults.reset()
    ho.faults.burst = {"status": 429, "count": 1, "retry_after": 2}  # type: ignore[assignment]
    r = client.post(USAGE, json={"usages": [usage("u1")]})
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json() == {"error": "injected fault", "code": "RATE_LIMITED"}
    assert ho.usages() == []


def test_on_change_events_carry_the_seed_record(ho: ReferenceHO) -> None:
    events: list[ChangeEvent] = []
    ho.on_change.append(events.append)
    ho.put("products", "p1", {"name": "Tea"})
    ho.delete("products", "p1")
    assert [(e.type, e.source) for e in events] == [("update", "admin"), ("delete", "admin")]
    assert set(events[0].record) == {"id", "name", "updated_at"}
    assert events[1].record["updated_at"] > events[0].record["updated_at"]  # the deletion time


def test_admin_api_and_remote_ho(db_url: str) -> None:
    with seed_client(db_url, report_deletes=True) as (ho, c), RemoteHO(str(c.base_url)) as remote:
        assert remote.put("products", "p1", {"name": "x"}) == 1
        assert remote.put("products", "p1", {"name": "y"}) == 2
        assert remote.get("products", "p1")["data"] == {"name": "y"}  # type: ignore[index]
        assert remote.delete("products", "p1") == 2
        assert remote.get("products", "p1") is None and remote.records("products") == {}
        assert list(remote.deletions("products")) == ["p1"]
        c.post(USAGE, json={"usages": [usage("u1"), usage("u1"), usage("u2")]})
        assert [u["data"]["usage_id"] for u in remote.usages()] == ["u1", "u1", "u2"]
        assert remote.usage_counts() == {"u1": 2, "u2": 1} and remote.duplicate_usages() == {"u1": 2}
        stats = remote.stats()
        assert stats["usages"] == 3 and stats["tombstones"] == 0
        assert stats["requests"]["POST /api/v1/sync/usage/"] == 1
        assert remote.set_faults(cut_rate=0.5)["cut_rate"] == 0.5
        assert ho.faults.cut_rate == 0.5


def test_options_are_checked(db_url: str) -> None:
    for bad in ({"report_deletes": True}, {"max_limit": 10}, {"ignore_limit": True}, {"stores": ["s"]},
                {"companies": ["c"]}):  # seed options the posync profile would silently ignore
        with pytest.raises(ValueError, match="seed-profile options"):
            ReferenceHO(db_url, **bad)
    with pytest.raises(ValueError, match="profile"):
        ReferenceHO(db_url, profile="django")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tombstones"):
        ReferenceHO(db_url, profile="seed", tombstone_horizon=60)
    with pytest.raises(ValueError, match="max_limit"):
        ReferenceHO(db_url, profile="seed", max_limit=0)
    with ReferenceHO(db_url, profile="seed") as ho:
        with pytest.raises(RuntimeError, match="no push"):
            ho.apply_push("o1", [])
        with pytest.raises(RuntimeError, match="usage"):
            ho.apply_usage("o1", [])
        assert "seed" in repr(ho)


def test_runs_as_a_seed_subprocess(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ho.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "posync.testing", "--db", url, "--port", "0", "--profile", "seed",
         "--max-limit", "1", "--report-deletes", "--company", "c1", "--user", "edge:secret"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), (line, proc.stderr.read() if proc.stderr else "")
        base = line.removeprefix("listening on ")
        with RemoteHO(base) as remote, httpx.Client(base_url=base) as c:
            remote.put("categories", "k1", {"name": "a"})
            remote.put("categories", "k2", {"name": "b"})
            remote.delete("categories", "k1")
            remote.put("categories", "k3", {"name": "c"})
            access = c.post("/api/token/", json={"username": "edge", "password": "secret"}).json()["access"]
            c.headers["Authorization"] = f"Bearer {access}"
            body = c.get(f"{SYNC}/categories/", params=C).json()
            assert ids(body) == ["k2"] and body["next_offset"] == 1 and body["deleted_ids"] == ["k1"]
            seed_error(c.get(f"{SYNC}/categories/", params={"company_id": "c9"}), 404, "COMPANY_NOT_FOUND")
            seed_error(c.post(f"{SYNC}/push/", json={}), 404, "NOT_FOUND")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
