"""The reference HO's photo side: both photo APIs, the objects, and faults on the API and on the bytes.

    ho = PhotoHO()                                   # objects on its own HTTP (GET /product-images/<key>)
    ho = PhotoHO(s3=S3Target("127.0.0.1:PORT"))      # objects on an S3 endpoint (moto's ThreadedMotoServer)
    with serve_in_thread(ho.app) as server:
        ho.base_url = server.url                     # image_url points here (own-HTTP objects)
        pid = ho.put_photo("prod-1", b"...jpeg...")  # HO-side edits: put_photo / update_photo / delete_photo
        ho.byte_faults.update(corrupt_rate=0.2)      # wrong bytes, short bodies, cuts, stalls, 5xx, drip
        ho.faults.error_rate = 0.1                   # the API (posync.testing.faults)
        ho.tamper(pid, size=-1)                      # list a photo malformed or hostile (issue 15); untamper()

Routes: ``POST /api/v1/token/`` (JWT, as the core HO), v1 ``POST /api/v1/sync/product-photos/`` (seed
001), older ``GET /api/sync/product-photos/``, ``GET /api/sync/product-photos/<id>/download/`` (``X-Checksum``,
``X-Version``) and ``POST /api/sync/product-photos/status/`` (seed 000), and ``GET /product-images/<key>``.
Byte answers honour ``Range`` + ``If-Range`` and carry ``ETag``/``Last-Modified``. :meth:`PhotoHO.routes`
gives the same routes for ``ReferenceHO(extra_routes=...)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from posync.testing.auth import Authenticator, AuthFailure
from posync.testing.fault_middleware import FaultMiddleware
from posync.testing.faults import Faults

__all__ = ["ABSENT", "ByteFaults", "HOPhoto", "PhotoHO", "S3Target"]

BUCKET = "product-images"
ABSENT: Any = object()  # PhotoHO.tamper(id, field=ABSENT): the listed photo lacks that field


@dataclass
class HOPhoto:
    id: str
    product_id: str
    object_key: str
    filename: str
    content_type: str
    data: bytes
    version: int
    is_primary: bool
    sort_order: int
    created_at: datetime
    updated_at: datetime
    checksum: str = field(init=False)  # a column at a real HO: computed once, not per listed row

    def __post_init__(self) -> None:
        self.checksum = hashlib.md5(self.data, usedforsecurity=False).hexdigest()


@dataclass
class S3Target:
    """Where HO's MinIO is: an S3 endpoint (``host:port``) reachable over plain HTTP."""

    endpoint: str
    bucket: str = BUCKET
    access_key: str = "testing"
    secret_key: str = "testing"


@dataclass
class ByteFaults:
    """Faults on byte answers (objects and the older download endpoint). Rates are per answer."""

    error_rate: float = 0.0  # 503 before any byte
    stall_rate: float = 0.0  # half the body, then ``stall_seconds`` of silence, then the rest
    cut_rate: float = 0.0  # half the body, then the connection closes (Content-Length was the full size)
    short_rate: float = 0.0  # half the body with a matching Content-Length
    corrupt_rate: float = 0.0  # the full length, one byte wrong
    drip_interval: float = 0.0  # pause between 16 KB chunks (slow transfers)
    stall_seconds: float = 3.0
    seed: int | None = None
    injected: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def update(self, **knobs: Any) -> None:
        with self._lock:
            for name, value in knobs.items():
                if name not in ("error_rate", "stall_rate", "cut_rate", "short_rate", "corrupt_rate",
                                "drip_interval", "stall_seconds", "seed"):
                    raise ValueError(f"unknown byte fault {name!r}")
                setattr(self, name, value)
                if name == "seed":
                    self._rng.seed(value)

    def reset(self) -> None:
        self.update(error_rate=0.0, stall_rate=0.0, cut_rate=0.0, short_rate=0.0, corrupt_rate=0.0,
                    drip_interval=0.0)

    def draw(self) -> str | None:
        with self._lock:
            for kind in ("error", "stall", "cut", "short", "corrupt"):
                rate = getattr(self, f"{kind}_rate")
                if rate and self._rng.random() < rate:
                    self.injected[kind] += 1
                    return kind
        return None


class PhotoHO:
    def __init__(self, *, auth: Authenticator | None = None, users: dict[str, str] | None = None,
                 s3: S3Target | None = None, base_url: str = "", faults: Faults | None = None,
                 store_id: str | None = None) -> None:
        self.auth = auth or Authenticator(api_keys={}, users=users or {"posync": "posync-password"})
        self.s3 = s3
        self.base_url = base_url  # where own-HTTP objects are served (set once the server is up)
        self.faults = faults or Faults(paths=("/api/sync/", "/api/v1/sync/"))
        self.byte_faults = ByteFaults()
        self.store_id = store_id
        self.photos: dict[str, HOPhoto] = {}
        self.deleted: dict[str, datetime] = {}
        self.reports: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.clock_skew = 0.0
        self.ranges: list[str] = []  # Range headers of byte requests, as received
        self.authorized_object_gets = 0  # object GETs that carried credentials (they should not)
        self.on_list: Any = None  # fn(offset) after each listing page: lets a test edit HO mid-pass
        self.tampered: dict[str, Callable[[dict[str, Any]], Any]] = {}  # photo id -> how it is listed instead
        self._lock = threading.RLock()
        self._last = datetime.now(UTC)
        self._minio: Any = None
        self._app: ASGIApp | None = None

    # -- HO-side edits -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        """HO's clock, strictly increasing (so ``updated_at`` orders edits)."""
        with self._lock:
            t = datetime.now(UTC) + timedelta(seconds=self.clock_skew)
            self._last = t if t > self._last else self._last + timedelta(microseconds=1)
            return self._last

    def put_photo(self, product_id: str, data: bytes, *, photo_id: str | None = None, object_key: str | None = None,
                  content_type: str = "image/jpeg", is_primary: bool = True, sort_order: int = 0,
                  filename: str | None = None) -> str:
        with self._lock:
            pid = photo_id or str(uuid.uuid4())
            old = self.photos.get(pid)
            now = self.now()
            ext = {"image/webp": "webp", "image/png": "png"}.get(content_type, "jpg")
            key = object_key or (old.object_key if old else f"products/{product_id}/{pid[:8]}.{ext}")
            photo = HOPhoto(pid, product_id, key, filename or f"{pid[:8]}.{ext}", content_type, bytes(data),
                            (old.version + 1) if old else 1, is_primary, sort_order,
                            old.created_at if old else now, now)
            self._upload(photo)
            if old is not None and old.object_key != key and not self._key_used(old.object_key, pid):
                self._remove_object(old.object_key)
            self.photos[pid] = photo
            self.deleted.pop(pid, None)
            return pid

    def update_photo(self, photo_id: str, data: bytes | None = None, **fields: Any) -> None:
        with self._lock:
            old = self.photos[photo_id]
            self.put_photo(fields.pop("product_id", old.product_id), old.data if data is None else data,
                           photo_id=photo_id, object_key=fields.pop("object_key", old.object_key),
                           content_type=fields.pop("content_type", old.content_type),
                           is_primary=fields.pop("is_primary", old.is_primary),
                           sort_order=fields.pop("sort_order", old.sort_order), filename=old.filename)

    def delete_photo(self, photo_id: str) -> None:
        with self._lock:
            photo = self.photos.pop(photo_id)
            self.deleted[photo_id] = self.now()
            if not self._key_used(photo.object_key, photo_id):
                self._remove_object(photo.object_key)

    def tamper(self, photo_id: str, **fields: Any) -> None:
        """List this photo with ``fields`` over its JSON (``ABSENT`` drops one): a malformed or hostile row
        as a broken HO would send it. Its stored bytes, ``updated_at`` and place in the order stay as they are."""
        self.tampered[photo_id] = lambda row: {k: v for k, v in {**row, **fields}.items() if v is not ABSENT}

    def tamper_raw(self, photo_id: str, element: Any) -> None:
        """List ``element`` (any JSON value) in this photo's place."""
        self.tampered[photo_id] = lambda row: element

    def untamper(self, photo_id: str) -> None:
        """HO fixes the row in place (its ``updated_at`` does not move): it is listed as it is again."""
        self.tampered.pop(photo_id, None)

    def expected(self) -> dict[str, tuple[str, bytes]]:
        """object_key -> (checksum, bytes) of every live photo: what a replica must equal."""
        with self._lock:
            return {p.object_key: (p.checksum, p.data) for p in self.photos.values()}

    def _key_used(self, key: str, but: str) -> bool:
        return any(p.object_key == key and p.id != but for p in self.photos.values())

    # -- objects on S3 -----------------------------------------------------------------------------------

    @property
    def minio(self) -> Any:
        if self._minio is None:
            assert self.s3 is not None
            from minio import Minio

            self._minio = Minio(self.s3.endpoint, access_key=self.s3.access_key, secret_key=self.s3.secret_key,
                                secure=False, region="us-east-1")
            if not self._minio.bucket_exists(self.s3.bucket):
                from posync.stores.s3 import public_read_policy

                self._minio.make_bucket(self.s3.bucket)
                # seed 001: HO MinIO's product-images bucket is public-read; image_url needs no credentials
                self._minio.set_bucket_policy(self.s3.bucket, public_read_policy(self.s3.bucket))
        return self._minio

    def _upload(self, photo: HOPhoto) -> None:
        if self.s3 is not None:
            self.minio.put_object(self.s3.bucket, photo.object_key, io.BytesIO(photo.data), len(photo.data),
                                  content_type=photo.content_type)

    def _remove_object(self, key: str) -> None:
        if self.s3 is not None:
            self.minio.remove_object(self.s3.bucket, key)

    def image_url(self, photo: HOPhoto) -> str:
        base = f"http://{self.s3.endpoint}/{self.s3.bucket}" if self.s3 is not None else f"{self.base_url}/{BUCKET}"
        return f"{base}/{photo.object_key}?v={photo.checksum[:8]}"

    # -- the HTTP surface --------------------------------------------------------------------------------

    @property
    def app(self) -> ASGIApp:
        if self._app is None:
            self._app = _RawSend(_Count(FaultMiddleware(Starlette(routes=self.routes()), self.faults),
                                        self.requests))
        return self._app

    def routes(self) -> list[Route]:
        from posync.testing.photos.routes import photo_routes

        return photo_routes(self)

    def check_auth(self, request: Request) -> JSONResponse | None:
        try:
            self.auth.check(request.headers)
        except AuthFailure as exc:
            return JSONResponse({"status": "error", "code": "UNAUTHORIZED", "message": exc.message}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        return None

    def photo_json(self, p: HOPhoto) -> Any:
        row = {"id": p.id, "product_id": p.product_id, "product_sku": p.product_id[:8],
                "product_name": f"product {p.product_id[:8]}", "object_key": p.object_key, "filename": p.filename,
                "size": len(p.data), "content_type": p.content_type, "checksum": p.checksum,
                "version": p.version, "is_primary": p.is_primary, "sort_order": p.sort_order,
                "created_at": p.created_at.isoformat(), "updated_at": p.updated_at.isoformat(),
                "image_url": self.image_url(p)}
        tampered = self.tampered.get(p.id)
        return row if tampered is None else tampered(row)

    def listing(self, since: datetime | None, limit: int, offset: int) -> tuple[list[HOPhoto], int, list[str]]:
        """Seed 000's query: ``updated_at >= since``, ordered by it, sliced by offset/limit."""
        with self._lock:
            rows = sorted((p for p in self.photos.values() if since is None or p.updated_at >= since),
                          key=lambda p: (p.updated_at, p.id))
            deleted = sorted(i for i, at in self.deleted.items() if since is None or at >= since)
        if self.on_list is not None:
            self.on_list(offset)
        return rows[offset:offset + limit], len(rows), deleted


def http_date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC), usegmt=True)


class _Count:
    def __init__(self, app: ASGIApp, counter: Counter[str]) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.counter[f"{scope['method']} {scope['path']}"] += 1
            self.counter["total"] += 1
        await self.app(scope, receive, send)


class _RawSend:
    """Outermost: keeps the server's own ``send`` so a fault can close the connection mid-body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["posync.raw_send"] = send
        await self.app(scope, receive, send)


async def close_connection(scope: Scope) -> None:
    """Close the client connection without finishing the answer (uvicorn: through its transport)."""
    cycle: Any = getattr(scope.get("posync.raw_send"), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.close()
        await asyncio.sleep(0)
        return
    raise ConnectionAbortedError("reference HO fault: connection cut mid-body")


