"""Build an outlet for tests: a real database, posync's migrations, the demo host tables."""

from __future__ import annotations

from typing import Any

from posync.demo.outlet import HOST_TABLES, Outlet, prepare_database
from posync.demo.outlet import make_outlet as _make_outlet

__all__ = ["API_KEY", "HOST_TABLES", "UNREACHABLE", "Outlet", "make_outlet", "prepare_database"]

API_KEY = "test-api-key-0123456789"
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens


def make_outlet(url: str, ho_url: str = UNREACHABLE, **settings: Any) -> Outlet:
    settings.setdefault("api_key", API_KEY)
    settings.setdefault("request_timeout", 5.0)
    return _make_outlet(url, ho_url, **settings)
