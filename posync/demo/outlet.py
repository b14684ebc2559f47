"""An outlet wired the way a host app wires posync (the demo's tables, capture on the sessionmaker).

Used by ``posync demo``, by posync's tests and benchmarks, and handy in a host app's own tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlmodel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from posync.app import Posync
from posync.db import create_engine
from posync.demo.models import Category, Order, Product, Promotion, PromotionUsage, pos_registry
from posync.migrations import upgrade
from posync.registry import Registry
from posync.settings import PosyncSettings

__all__ = ["HOST_TABLES", "Outlet", "make_outlet", "prepare_database"]

HOST_TABLES = [sqlmodel.SQLModel.metadata.tables[str(m.__tablename__)]
               for m in (Order, Product, Category, Promotion, PromotionUsage)]


@dataclass
class Outlet:
    engine: Engine
    sync: Posync
    Session: Any  # sessionmaker[sqlmodel.Session] with posync's capture attached

    def close(self) -> None:
        self.sync.close()
        self.engine.dispose()


def prepare_database(url: str) -> Engine:
    """posync's migrations plus the demo's host tables."""
    engine = create_engine(url)
    upgrade(engine)
    sqlmodel.SQLModel.metadata.create_all(engine, tables=HOST_TABLES)
    return engine


def make_outlet(url: str, ho_url: str, *, api_key: str | None, registry: Registry | None = None,
                engine: Engine | None = None, outlet_id: str = "outlet-1", clock: Callable[[], float] = time.time,
                **settings: Any) -> Outlet:
    owned = engine is None
    engine = engine or prepare_database(url)
    try:
        Session = sessionmaker(engine, class_=sqlmodel.Session, expire_on_commit=False)
        cfg = PosyncSettings(ho_url=ho_url, outlet_id=outlet_id, api_key=api_key, **settings)
        sync = Posync(engine, registry or pos_registry(), cfg, sessionmaker=Session, clock=clock)
    except BaseException:
        if owned:
            engine.dispose()
        raise
    return Outlet(engine, sync, Session)
