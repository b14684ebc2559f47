"""Build an outlet for tests: a real database, posync's migrations, the demo host tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlmodel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

import posync
from posync.demo.models import Category, Order, Product, Promotion, PromotionUsage, pos_registry
from posync.migrations import upgrade

HOST_TABLES = [m.__table__ for m in (Order, Product, Category, Promotion, PromotionUsage)]  # type: ignore[attr-defined]
API_KEY = "test-api-key-0123456789"
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens


@dataclass
class Outlet:
    engine: Engine
    sync: posync.Posync
    Session: Any  # sessionmaker[sqlmodel.Session]

    def close(self) -> None:
        self.sync.close()
        self.engine.dispose()


def prepare_database(url: str) -> Engine:
    engine = posync.create_engine(url)
    upgrade(engine)
    sqlmodel.SQLModel.metadata.create_all(engine, tables=HOST_TABLES)
    return engine


def make_outlet(url: str, ho_url: str = UNREACHABLE, *, registry: posync.Registry | None = None,
                engine: Engine | None = None, outlet_id: str = "outlet-1", **settings: Any) -> Outlet:
    engine = engine or prepare_database(url)
    Session = sessionmaker(engine, class_=sqlmodel.Session, expire_on_commit=False)
    settings.setdefault("api_key", API_KEY)
    settings.setdefault("request_timeout", 5.0)
    cfg = posync.PosyncSettings(ho_url=ho_url, outlet_id=outlet_id, **settings)
    sync = posync.Posync(engine, registry or pos_registry(), cfg, sessionmaker=Session)
    return Outlet(engine, sync, Session)
