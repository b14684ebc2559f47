"""Property: no update is lost when HO changes while the outlet reads pages.

HO edits are injected between the outlet's page requests (an ASGI wrapper runs them before serving each
page). Afterwards one more pull, with HO quiet, must leave the outlet equal to HO: a row skipped while
paging sits behind the saved cursor and would never be read again.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import sqlmodel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posync.demo.models import Product
from posync.testing import ReferenceHO, SyncHarness, serve_in_thread
from tests.support import API_KEY, make_outlet

Edit = tuple[str, int, int]  # (put|delete, product number, price)
edits = st.lists(st.tuples(st.sampled_from(["put", "put", "delete"]), st.integers(0, 14), st.integers(0, 99)),
                 max_size=6)


class EditingHO:
    """Serves the reference HO; before each products page, applies the next batch of scripted HO edits."""

    def __init__(self, ref: ReferenceHO) -> None:
        self.ref = ref
        self.script: list[list[Edit]] = []
        self.prefix = ""

    def apply(self, batch: list[Edit]) -> None:
        for op, n, price in batch:
            pid = f"{self.prefix}{n}"
            current = self.ref.get("products", pid)
            if op == "put":
                self.ref.put("products", pid, {"id": pid, "name": "x", "price": price})
            elif current is not None and not current.deleted:
                self.ref.delete("products", pid)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/v1/sync/products/" and self.script:
            self.apply(self.script.pop(0))
        await self.ref.app(scope, receive, send)


@pytest.fixture(scope="module")
def editing_ho() -> Iterator[tuple[EditingHO, str]]:
    tmp = tempfile.mkdtemp(prefix="posync-pullprop-")
    ref = ReferenceHO(f"sqlite:///{tmp}/ho.db", api_keys={API_KEY: None})
    wrapper = EditingHO(ref)
    server = serve_in_thread(wrapper)
    yield wrapper, server.url
    server.stop()
    ref.close()
    shutil.rmtree(tmp, ignore_errors=True)


_runs = iter(range(10**6))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=edits, during=st.lists(edits, max_size=6), page_size=st.integers(1, 4))
def test_no_update_is_lost_while_pages_are_read(editing_ho: tuple[EditingHO, str], initial: list[Edit],
                                                during: list[list[Edit]], page_size: int) -> None:
    ho, url = editing_ho
    ho.prefix = f"run{next(_runs)}-p"
    ho.apply(initial)
    tmp = tempfile.mkdtemp(prefix="posync-pullprop-outlet-")
    outlet = make_outlet(f"sqlite:///{tmp}/o.db", url, pull_page_size=page_size)
    try:
        products = outlet.sync.registry["products"]
        ho.script = list(during)
        SyncHarness(outlet.sync).pull(products)  # HO changes between the pages of this pass
        ho.script = []
        SyncHarness(outlet.sync).pull(products)  # HO quiet now
        with outlet.Session() as s:
            local = {p.id: p.price for p in s.exec(sqlmodel.select(Product)).all() if p.id.startswith(ho.prefix)}
        remote = {k: r.data["price"] for k, r in ho.ref.records("products").items()
                  if k.startswith(ho.prefix) and not r.deleted}
        assert local == remote
    finally:
        outlet.close()
        shutil.rmtree(tmp, ignore_errors=True)
