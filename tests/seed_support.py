"""The seed-profile outlet and HO the seed tests share (tests/test_seed_profile.py, tests/test_webhook_seed.py):
a module of its own, because a test module imported by another is imported twice (its SQLModel tables too)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlmodel

import posync
from posync.demo.models import Product, seed_registry
from posync.testing import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    ReferenceHO,
    ServerHandle,
    serve_in_thread,
)
from tests.support import Outlet, make_outlet

SEED = {"ho_profile": "seed", "api_key": None, "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD,
        "company_id": "company-1", "store_id": "store-1", "brand_id": "brand-1", "request_timeout": 5.0,
        "initial_backoff_seconds": 0.0, "max_backoff_seconds": 0.0, "since_overlap_seconds": 1.0}


class BetweenPages:
    """Runs a callback before HO answers a page past the first: HO's edits *between* page reads."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.before_page: Callable[[str, int], None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and self.before_page is not None:
            query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
            offset = int(query.get("offset") or 0)
            if offset and scope["path"].startswith("/api/v1/sync/"):
                self.before_page(scope["path"].split("/")[-2], offset)
        await self.app(scope, receive, send)


class SeedEnv:
    def __init__(self, db_url: str, path: Path, *, registry: posync.Registry | None = None,
                 ho_kwargs: dict[str, Any] | None = None, engine: Any | None = None, **settings: Any) -> None:
        self.ho = ReferenceHO(f"sqlite:///{path / 'seed-ho.db'}", profile="seed", **(ho_kwargs or {}))
        self.hook = BetweenPages(self.ho.app)
        self.server: ServerHandle = serve_in_thread(self.hook)
        try:
            self.outlet: Outlet = make_outlet(db_url, self.server.url, registry=registry or seed_registry(),
                                              engine=engine, **{**SEED, **settings})
        except BaseException:
            self.server.stop()
            self.ho.close()
            raise

    def close(self) -> None:
        self.outlet.close()
        self.server.stop()
        self.ho.close()

    def products(self, n: int, prefix: str = "p", price: int = 100) -> None:
        for i in range(n):
            self.ho.put("products", f"{prefix}{i:03d}", {"name": f"P{i}", "sku": f"S{i}", "price": price + i})

    def local(self, model: Any) -> dict[str, dict[str, Any]]:
        with self.outlet.Session() as s:
            return {str(r.id): r for r in s.exec(sqlmodel.select(model)).all()}

    def local_prices(self) -> dict[str, int]:
        return {k: r.price for k, r in self.local(Product).items()}

    def ho_prices(self) -> dict[str, int]:
        return {k: r.data["price"] for k, r in self.ho.records("products").items() if not r.deleted}

    def requests(self) -> int:
        return sum(n for route, n in self.ho.requests.items() if route.split(" ", 1)[1].startswith("/api/"))
