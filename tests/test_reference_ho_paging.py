"""Cursor paging never skips a change: HO edits interleaved with page reads (hypothesis), and concurrent
writers committing while a reader pages."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posync.testing import DEFAULT_API_KEY, ReferenceHO, ServerHandle

Q = {"company_id": "c1", "store_id": "s1"}
_names = itertools.count()


@pytest.fixture
def client(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": DEFAULT_API_KEY}, timeout=30) as c:
        yield c


class Mirror:
    """What an outlet holds after applying pages: id -> (version, deleted), newer versions win."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, bool]] = {}
        self.cursor = ""

    def apply(self, resource: str, page: dict[str, Any]) -> None:
        for rec in page[resource]:
            self._put(rec["id"], rec["version"], False)
        for gone in page["deleted"]:
            self._put(gone["id"], gone["version"], True)
        assert page["deleted_ids"] == [g["id"] for g in page["deleted"]]
        self.cursor = page["next_cursor"]

    def _put(self, entity_id: str, version: int, deleted: bool) -> None:
        if version > self.rows.get(entity_id, (0, False))[0]:
            self.rows[entity_id] = (version, deleted)

    def read_page(self, client: httpx.Client, resource: str, limit: int) -> bool:
        r = client.get(f"/api/v1/sync/{resource}/", params={**Q, "limit": limit, "cursor": self.cursor})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page[resource]) + len(page["deleted"]) <= limit
        self.apply(resource, page)
        return bool(page["has_more"])


def ho_state(ho: ReferenceHO, resource: str) -> dict[str, tuple[int, bool]]:
    return {k: (r.version, r.deleted) for k, r in ho.records(resource).items()}


edit = st.tuples(st.sampled_from(["put", "delete"]), st.integers(0, 14))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.integers(0, 12), limit=st.integers(1, 5),
       edits=st.lists(st.lists(edit, max_size=4), max_size=8))
def test_paging_sees_every_final_version(ho: ReferenceHO, client: httpx.Client, initial: int, limit: int,
                                         edits: list[list[tuple[str, int]]]) -> None:
    resource = f"r{next(_names)}"  # a fresh resource per example: examples share the database
    for i in range(initial):
        ho.put(resource, f"id{i}", {"n": i})
    mirror = Mirror()
    step = 0
    while True:
        more = mirror.read_page(client, resource, limit)
        if step < len(edits):
            for op, i in edits[step]:
                if op == "put":
                    ho.put(resource, f"id{i}", {"n": step})
                else:
                    ho.delete_record(resource, f"id{i}")
            step += 1
        elif not more:
            break
    assert mirror.rows == ho_state(ho, resource)


def test_paging_while_concurrent_writers_commit(ho: ReferenceHO, client: httpx.Client) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            n = 0
            while not stop.is_set():
                ho.put("products", f"w{w}-{n % 25}", {"n": n})
                n += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    mirror = Mirror()
    try:
        for _ in range(60):
            mirror.read_page(client, "products", 7)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    while mirror.read_page(client, "products", 50):
        pass
    assert mirror.rows == ho_state(ho, "products")
