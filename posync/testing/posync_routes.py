"""The posync HO's HTTP surface: a Starlette app implementing docs/protocol.md.

Database work runs in Starlette's thread pool; bad client input answers 400/422 with the protocol's
error body, never 500. Routes::

    POST /api/v1/token/ (/api/token/)            {"username","password"} -> {"access","refresh"}
    POST /api/v1/token/refresh/ (/api/token/refresh/)
    POST /api/v1/sync/push/     POST /api/v1/sync/usage/
    GET  /api/v1/sync/version/  GET  /api/v1/sync/{resource}/
    /_admin/...  and  /_faults  (see posync.testing.admin_routes)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from posync.testing.auth import AuthFailure, Principal
from posync.testing.changes import RESOURCE_RE
from posync.testing.json_api import ApiError, error_response, handle_errors, json_response, parse_json, read_json
from posync.testing.schema import iso

if TYPE_CHECKING:
    from posync.testing.posync_ho import PosyncHO

__all__ = ["parse_cursor", "posync_app"]

RESERVED = frozenset({"push", "usage", "version"})
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


def _authenticate(ho: PosyncHO, request: Request) -> Principal:
    try:
        return ho.auth.check(request.headers)
    except AuthFailure as exc:
        raise ApiError(401, "UNAUTHORIZED", exc.message, {"WWW-Authenticate": "Bearer"}) from exc


def _outlet(request: Request, payload: dict[str, Any], who: Principal) -> str:
    header, body = request.headers.get("x-outlet-id"), payload.get("outlet_id")
    if body is not None and not isinstance(body, str):
        raise ApiError(422, "VALIDATION_ERROR", "outlet_id must be a string")
    if header and body and header != body:
        raise ApiError(400, "VALIDATION_ERROR", "outlet_id does not match X-Outlet-ID")
    outlet = header or body
    if not outlet or len(outlet) > 255:
        raise ApiError(400, "VALIDATION_ERROR", "X-Outlet-ID (or outlet_id) is required")
    if who.outlets is not None and outlet not in who.outlets:
        raise ApiError(403, "UNAUTHORIZED", "this API key may not act for that outlet")
    return outlet


def _object_with_list(payload: Any, name: str) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get(name), list):
        raise ApiError(422, "VALIDATION_ERROR", f'body must be an object with a "{name}" list')
    items: list[Any] = payload[name]
    return items


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        n = int(raw)
    except ValueError as exc:
        raise ApiError(400, "VALIDATION_ERROR", "limit must be an integer") from exc
    if n < 1:
        raise ApiError(400, "VALIDATION_ERROR", "limit must be >= 1")
    return min(n, MAX_LIMIT)


def parse_cursor(raw: str) -> int:
    """``c:<seq>`` (what HO hands out) or a bare ``<seq>``."""
    text = raw[2:] if raw.startswith("c:") else raw
    if not text.isdigit() or len(text) > 18:
        raise ApiError(400, "INVALID_CURSOR", "cursor is not one HO handed out")
    return int(text)


def _since(raw: str) -> str:
    try:
        dt = datetime.fromisoformat(raw.replace(" ", "+"))  # a '+' in a query string may arrive as ' '
    except ValueError as exc:
        raise ApiError(400, "INVALID_DATE_FORMAT", "updated_since must be an ISO 8601 timestamp") from exc
    return iso((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC))


class Endpoints:
    def __init__(self, ho: PosyncHO) -> None:
        self.ho = ho

    async def token(self, request: Request) -> Response:
        payload = await read_json(request)
        if not isinstance(payload, dict):
            raise ApiError(422, "VALIDATION_ERROR", "body must be an object")
        try:
            return json_response(self.ho.auth.login(payload.get("username"), payload.get("password")))
        except AuthFailure as exc:
            raise ApiError(401, "UNAUTHORIZED", exc.message) from exc

    async def refresh(self, request: Request) -> Response:
        payload = await read_json(request)
        if not isinstance(payload, dict):
            raise ApiError(422, "VALIDATION_ERROR", "body must be an object")
        try:
            return json_response(self.ho.auth.refresh(payload.get("refresh")))
        except AuthFailure as exc:
            raise ApiError(401, "UNAUTHORIZED", exc.message) from exc

    async def push(self, request: Request) -> Response:
        who = _authenticate(self.ho, request)
        body = await request.body()
        # Parsing, checking, applying and encoding 1,000 changes is all CPU work on the same objects: one
        # trip to a worker thread for all of it keeps the event loop free and the objects in one core's cache.
        return await run_in_threadpool(self._push, request, who, body)

    def _push(self, request: Request, who: Principal, body: bytes) -> Response:
        payload = parse_json(body)
        changes = _object_with_list(payload, "changes")
        outlet = _outlet(request, payload, who)
        return json_response({"results": self.ho.apply_push(outlet, changes)})

    async def usage(self, request: Request) -> Response:
        who = _authenticate(self.ho, request)
        payload = await read_json(request)
        usages = _object_with_list(payload, "usages")
        outlet = _outlet(request, payload, who)
        results = await run_in_threadpool(self.ho.apply_usage, outlet, usages)
        return json_response({"results": results})

    async def version(self, request: Request) -> Response:
        _authenticate(self.ho, request)
        if not request.query_params.get("company_id"):
            raise ApiError(400, "MISSING_COMPANY_ID", "company_id is required")
        top, per = await run_in_threadpool(self.ho.store.versions)
        for name in self.ho.resources or ():
            per.setdefault(name, 0)
        return json_response({"version": top, "resources": per, "timestamp": iso(self.ho.now())})

    async def pull(self, request: Request) -> Response:
        _authenticate(self.ho, request)
        resource = request.path_params["resource"]
        known = self.ho.resources
        if resource in RESERVED or not RESOURCE_RE.match(resource) or (known is not None and resource not in known):
            raise ApiError(404, "UNKNOWN_RESOURCE", f"HO does not serve {resource!r}")
        q = request.query_params
        if not q.get("company_id"):
            raise ApiError(400, "MISSING_COMPANY_ID", "company_id is required")
        if not q.get("store_id"):
            raise ApiError(400, "MISSING_STORE_ID", "store_id is required")
        limit = _limit(request)
        cursor = q.get("cursor")
        if cursor is None and ("updated_since" in q or "offset" in q):
            return await self._pull_legacy(request, resource, limit)
        after = parse_cursor(cursor) if cursor else 0
        rows = await run_in_threadpool(self.ho.store.page_after, resource, after, limit + 1)
        if cursor:  # checked after reading: a purge that raced the read is seen here, never missed
            purged, top = await run_in_threadpool(self.ho.store.cursor_bounds, resource)
            if after < purged or after > top:
                raise ApiError(410, "CURSOR_EXPIRED", "cursor is older than HO's tombstones; resync "
                               "the resource from an empty cursor")
        has_more = len(rows) > limit
        rows = rows[:limit]
        body = self._page(resource, rows, has_more)
        body["next_offset"] = None
        body["next_cursor"] = f"c:{rows[-1].change_seq if rows else after}"
        return json_response(body)

    async def _pull_legacy(self, request: Request, resource: str, limit: int) -> Response:
        q = request.query_params
        since = _since(q["updated_since"]) if q.get("updated_since") else None
        try:
            offset = int(q.get("offset") or 0)
        except ValueError as exc:
            raise ApiError(400, "VALIDATION_ERROR", "offset must be an integer") from exc
        if offset < 0:
            raise ApiError(400, "VALIDATION_ERROR", "offset must be >= 0")
        rows = await run_in_threadpool(self.ho.store.page_since, resource, since, offset, limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        body = self._page(resource, rows, has_more)
        body["next_offset"] = offset + limit if has_more else None
        body["next_cursor"] = None
        return json_response(body)

    def _page(self, resource: str, rows: list[Any], has_more: bool) -> dict[str, Any]:
        live = [r.as_pull() for r in rows if not r.deleted]
        gone = [r.as_tombstone() for r in rows if r.deleted]
        return {resource: live, "deleted_ids": [g["id"] for g in gone], "deleted": gone,
                "sync_timestamp": iso(self.ho.now()), "total": len(live), "has_more": has_more}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "INTERNAL_ERROR", f"{type(exc).__name__} in the reference HO")


def posync_app(ho: PosyncHO, extra_routes: list[Route] | None = None) -> Starlette:
    e = Endpoints(ho)
    token, refresh = handle_errors(e.token), handle_errors(e.refresh)
    routes = [
        Route("/api/v1/token/", token, methods=["POST"]),
        Route("/api/token/", token, methods=["POST"]),
        Route("/api/v1/token/refresh/", refresh, methods=["POST"]),
        Route("/api/token/refresh/", refresh, methods=["POST"]),
        Route("/api/v1/sync/push/", handle_errors(e.push), methods=["POST"]),
        Route("/api/v1/sync/usage/", handle_errors(e.usage), methods=["POST"]),
        Route("/api/v1/sync/version/", handle_errors(e.version), methods=["GET"]),
        Route("/api/v1/sync/{resource}/", handle_errors(e.pull), methods=["GET"]),
        *(extra_routes or []),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, 500: _server_error})
