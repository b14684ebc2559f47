"""The one place a :class:`~posync.services.photos.service.PhotoSync` is built from :class:`PosyncSettings`
(HO and credentials; the photo options in ``settings.photos``).

    sync = build_photo_sync(PosyncSettings(), engine=engine)    # the host's engine; never disposed here
    report = sync.sync()                                        # or Posync(..., photos=sync), or photo_jobs
    sync.close()                                                # the HTTP clients and the byte engine
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from posync.db import WriteGate
from posync.errors import PhotoConfigError
from posync.ho import ApiKeyAuth, HttpCore, JwtAuth
from posync.ho.photos.sources import LegacySource, PhotoSource, V1Source
from posync.services.photos.listing import ProductLookup
from posync.services.photos.service import PhotoSync
from posync.settings import PosyncSettings
from posync.stores import PhotoStore, open_store
from posync.transfer.engine import TransferPolicy, make_engine

__all__ = ["build_photo_sync", "build_store", "table_products"]


def _auth(settings: PosyncSettings) -> httpx.Auth:
    if settings.username and settings.password:
        return JwtAuth(settings.ho_url.rstrip("/") + settings.token_path, settings.username, settings.password,
                       settings.outlet_id)
    assert settings.api_key is not None  # checked by PosyncSettings
    return ApiKeyAuth(settings.api_key, settings.outlet_id)


def build_store(settings: PosyncSettings, engine: Engine | None) -> PhotoStore:
    options = settings.photos
    s3: dict[str, Any] = {}
    if options.store.startswith("s3://"):
        s3 = {"endpoint": options.s3_endpoint, "access_key": options.s3_access_key,
              "secret_key": options.s3_secret_key, "secure": options.s3_secure, "region": options.s3_region,
              "public_read": options.s3_public_read, "timeout": settings.request_timeout}
    return open_store(options.store, engine=engine, staging=options.staging_dir, **s3)


def table_products(table: str, column: str = "id") -> ProductLookup:
    """Products the outlet has, from the host's own table (``SELECT column FROM table WHERE column IN ...``)."""
    t = sa.table(table, sa.column(column))

    def lookup(conn: Connection, ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        values = list(ids)
        for start in range(0, len(values), 500):
            rows = conn.execute(sa.select(t.c[column]).where(t.c[column].in_(values[start:start + 500])))
            found.update(str(v) for v in rows.scalars())
        return found

    return lookup


def build_photo_sync(settings: PosyncSettings, *, engine: Engine, store: PhotoStore | None = None,
                     products: ProductLookup | None = None, transport: httpx.BaseTransport | None = None,
                     gate: WriteGate | None = None) -> PhotoSync:
    """Everything a pass needs, wired. ``engine`` is the outlet database's (posync's tables migrated);
    ``products`` overrides ``photo_product_table``; ``gate``: the write gate the photo write transactions
    enter (``Posync(..., photos=...)`` hands over its own when none is given); ``transport`` is for tests
    (httpx's MockTransport)."""
    options = settings.photos
    if products is None and options.product_table:
        products = table_products(options.product_table, options.product_id_column)
    # one client and one auth for the JSON calls; the byte engine takes its headers from the same auth
    core = HttpCore(settings.ho_url, _auth(settings), timeout=settings.request_timeout, transport=transport,
                    connect_timeout=min(10.0, settings.request_timeout), headers={"User-Agent": "posync-photos/0.1"})
    store_id = settings.effective_store_id
    auth_headers = core.auth_headers("/api/sync/product-photos/")
    source: PhotoSource
    if options.api == "v1":
        source = V1Source(core, company_id=settings.company_id, store_id=store_id)
    elif options.api == "legacy":
        source = LegacySource(core, company_id=settings.company_id, store_id=store_id)
    else:  # pragma: no cover - the Literal type refuses it first
        raise PhotoConfigError(f"unknown photo API {options.api!r}")
    policy = TransferPolicy(workers=options.workers, attempts=options.attempts,
                            connect_timeout=min(10.0, settings.request_timeout), stall_timeout=options.stall_timeout,
                            transfer_timeout=options.transfer_timeout)
    byte_engine = make_engine(options.engine, policy)
    edge = store if store is not None else build_store(settings, engine)
    key = f"{options.api}:{settings.company_id}:{store_id}"
    return PhotoSync(engine, source, edge, byte_engine, auth_headers, checkpoint_key=key[:200],
                     page_size=options.page_size, max_deletes=options.max_deletes,
                     deadline_seconds=options.deadline_seconds, products=products, closers=[core],
                     incremental_minute=options.incremental_minute, full_hour=options.full_hour, gate=gate)
