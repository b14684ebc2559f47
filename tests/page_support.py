"""An outlet with real work for the operator page's tests: one dead letter (HO refused an order) and one
open conflict (the product changed on both sides, manual strategy), against the reference HO over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import posync
from posync.demo.models import Order, Product, pos_registry
from posync.testing import ReferenceHO, Rejection, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet

HOSTILE_NAME = "<script>alert('x')</script> Tea & \"Co\""


@dataclass
class Work:
    outlet: Outlet
    ho: ReferenceHO
    dead: int  # the dead letter's queue item id
    conflict: int  # the open conflict's id


@contextmanager
def outlet_with_work(db_url: str, tmp_path: Path) -> Iterator[Work]:
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None},
                     validators={"orders": lambda c: Rejection("NEGATIVE_TOTAL", "a total cannot be negative")
                                 if c.data["total"] < 0 else None})
    server = serve_in_thread(ho.app)
    outlet = make_outlet(db_url, server.url, registry=pos_registry(posync.ConflictStrategy.MANUAL))
    try:
        ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 100})
        with outlet.Session() as s:
            s.add(Order(id="o-bad", total=-1))
            s.commit()
        outlet.sync.sync_now()
        with outlet.Session() as s:
            s.get(Product, "p1").price = 150
            s.commit()
        ho.put("products", "p1", {"id": "p1", "name": HOSTILE_NAME, "price": 120})
        outlet.sync.sync_now()
        [dead] = outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10)
        [conflict] = outlet.sync.manager.conflicts()
        yield Work(outlet, ho, dead["id"], conflict["id"])
    finally:
        outlet.close()
        server.stop()
        ho.close()
