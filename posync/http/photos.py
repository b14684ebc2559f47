"""Serving photos on the edge.

* :class:`PhotoURLs` - a product's (or photo's) URL for the POS screen: the local copy with the
  cache-busting ``?v=<checksum[:8]>`` (seed 001 step 6); HO's ``image_url`` while the photo is not local yet
  (seed 000's rollback plan); a placeholder when there is neither.
* :func:`asgi_app` / :func:`wsgi_app` - ``GET|HEAD /<object_key>`` from the filesystem or database store
  (or any store) with ``Content-Type``, ``Content-Length``, ``ETag`` (the MD5), ``Cache-Control`` and
  ``304 Not Modified``. Only bytes the metadata says are synced are served: never a stray or partial file.
  A request whose ``v`` matches the bytes may be cached for a year (the URL changes with the photo).

    app.mount("/photos", asgi_app(engine, store))                     # Starlette / FastAPI
    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app, {"/photos": wsgi_app(engine, store)})
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from sqlalchemy.engine import Engine

from posync.errors import PhotoStoreError
from posync.repositories import photos as repo
from posync.stores.base import PhotoStore

__all__ = ["PhotoURLs", "asgi_app", "wsgi_app"]

SHORT_CACHE = "public, max-age=86400"  # seed 000's day
LONG_CACHE = "public, max-age=31536000, immutable"


class PhotoURLs:
    def __init__(self, engine: Engine, base_url: str = "/photos", *,
                 placeholder: str = "/static/images/no-image.png", ho_fallback: bool = True) -> None:
        self.engine = engine
        self.base_url = base_url.rstrip("/")
        self.placeholder = placeholder
        self.ho_fallback = ho_fallback

    def for_product(self, product_id: str) -> str:
        """The primary photo (else the first by ``sort_order``) of a product."""
        with self.engine.connect() as conn:
            return self._url(repo.product_link(conn, product_id))

    def for_photo(self, photo_id: str) -> str:
        with self.engine.connect() as conn:
            return self._url(repo.photo_link(conn, photo_id))

    def _url(self, row: repo.PhotoLink | None) -> str:
        if row is None:
            return self.placeholder
        if row.stored_key and row.stored_checksum:
            return f"{self.base_url}/{quote(row.stored_key)}?v={row.stored_checksum[:8]}"
        if self.ho_fallback and row.image_url:
            return str(row.image_url)
        return self.placeholder


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: list[tuple[str, str]]
    body: Iterable[bytes]


def _lookup(engine: Engine, key: str) -> repo.ServedPhoto | None:
    with engine.connect() as conn:
        return repo.servable(conn, key)


def answer(engine: Engine, store: PhotoStore, method: str, path: str, query: str, if_none_match: str | None) -> _Answer:
    """The whole decision for one request, shared by the ASGI and WSGI endpoints."""
    if method not in ("GET", "HEAD"):
        return _Answer(405, [("allow", "GET, HEAD"), ("content-length", "0")], [])
    key = unquote(path.lstrip("/"))
    row = _lookup(engine, key) if key else None
    if row is None:
        return _Answer(404, [("content-type", "text/plain"), ("content-length", "9")], [b"not found"])
    etag = f'"{row.stored_checksum}"'
    version = parse_qs(query).get("v", [""])[0]
    cache = LONG_CACHE if version and row.stored_checksum.startswith(version) else SHORT_CACHE
    headers = [("etag", etag), ("cache-control", cache)]
    if if_none_match and (if_none_match.strip() == "*" or etag in [t.strip() for t in if_none_match.split(",")]):
        return _Answer(304, headers, [])
    try:
        stat = store.stat(key)
        if stat is None:
            raise PhotoStoreError(store.kind, "read", key, "gone")
        body: Iterable[bytes] = [] if method == "HEAD" else store.read(key)
    except PhotoStoreError:
        return _Answer(404, [("content-type", "text/plain"), ("content-length", "9")], [b"not found"])
    headers += [("content-type", row.content_type), ("content-length", str(stat.size)),
                ("content-disposition", f'inline; filename="{quote(row.filename or key.rsplit("/", 1)[-1])}"')]
    return _Answer(200, headers, body)


def asgi_app(engine: Engine, store: PhotoStore) -> Any:
    """An ASGI app serving ``/<object_key>``; the database and store work run in a thread."""
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        a = await run_in_threadpool(answer, engine, store, scope["method"], scope.get("path", ""),
                                    scope.get("query_string", b"").decode("latin-1"), headers.get("if-none-match"))
        await send({"type": "http.response.start", "status": a.status,
                    "headers": [(k.encode(), v.encode("latin-1")) for k, v in a.headers]})
        async for chunk in iterate_in_threadpool(iter(a.body)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


_REASONS = {200: "OK", 304: "Not Modified", 404: "Not Found", 405: "Method Not Allowed"}


def wsgi_app(engine: Engine, store: PhotoStore) -> Any:
    """A WSGI app serving ``/<object_key>`` (mount it under a prefix; PATH_INFO is the key)."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        a = answer(engine, store, environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""),
                   environ.get("QUERY_STRING", ""), environ.get("HTTP_IF_NONE_MATCH"))
        start_response(f"{a.status} {_REASONS.get(a.status, '')}", a.headers)
        return iter(a.body)

    return app


