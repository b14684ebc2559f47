"""The seed HO's HTTP surface: the head office of seeds 004 (sync API) and 001 (JWT) as outlets have
it, naive parts included. The contract is docs/seed-profile.md; the rules are :mod:`posync.testing.seed_rules`
and the storage :mod:`posync.testing.seed_store`. Routes::

    POST /api/v1/token/ (/api/token/)                 SimpleJWT: {"username","password"} -> {"access","refresh"}
    POST /api/v1/token/refresh/ (/api/token/refresh/) {"refresh"} -> {"access"}
    GET  /api/v1/sync/{resource}/                     offset paging over the live query, no versions
    GET  /api/v1/sync/version/?company_id=            {"version": epoch second of MAX(updated_at), "timestamp"}
    POST /api/v1/sync/usage/                          {"usages": [...]} -> {"received","processed","failed","errors"}
    /api/v1/sync/push/                                404: the seed HO has no push
    /_admin/... and /_faults                          as in the posync HO (posync.testing.admin_routes)

Errors are ``{"error", "code"}`` (seed 004, "Error Handling"), except 401s, which are DRF/SimpleJWT's
``{"detail": ...}`` bodies with ``WWW-Authenticate: Bearer realm="api"``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from posync.testing.auth import AuthFailure, Principal
from posync.testing.changes import RESOURCE_RE, loads_json
from posync.testing.json_api import json_response
from posync.testing.schema import iso
from posync.testing.seed_rules import (
    SeedError,
    check_known,
    error_body,
    page_of,
    parse_pull,
    seed_record,
    usage_error,
    usage_summary,
    usages_of,
    version_of,
)
from posync.testing.transactions import StoreBusyError

if TYPE_CHECKING:
    from posync.testing.seed_ho import SeedHO

__all__ = ["seed_app", "seed_error_response"]

log = logging.getLogger("posync.testing")

# DRF / SimpleJWT's own 401 bodies (docs/seed-profile.md, "Authentication")
NOT_PROVIDED = {"detail": "Authentication credentials were not provided."}
TOKEN_NOT_VALID = {"detail": "Given token not valid for any token type", "code": "token_not_valid"}
NO_ACCOUNT = {"detail": "No active account found with the given credentials"}
REFRESH_NOT_VALID = {"detail": "Token is invalid or expired", "code": "token_not_valid"}
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}
_EVERY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # Starlette's default is GET only
_NOT_PULLED = frozenset({"usage", "version", "push"})  # sync paths that are not a resource


class Unauthorized(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        super().__init__(body["detail"])


def seed_error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(error_body(code, message), status, headers)


def _parse_json(body: bytes) -> Any:
    try:
        return loads_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SeedError(400, "VALIDATION_ERROR", "request body is not valid JSON") from exc


def _authenticate(ho: SeedHO, request: Request) -> Principal:
    try:
        who = ho.auth.bearer(request.headers)
    except AuthFailure as exc:
        raise Unauthorized(TOKEN_NOT_VALID) from exc
    if who is not None:
        return who
    if ho.auth.required:
        raise Unauthorized(NOT_PROVIDED)
    return Principal("anonymous", "", None)


def seed_errors(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except SeedError as exc:
            return seed_error_response(exc.status, exc.code, exc.message, exc.headers)
        except Unauthorized as exc:
            return json_response(exc.body, 401, _CHALLENGE)
        except StoreBusyError as exc:
            return seed_error_response(503, "UNAVAILABLE", str(exc), {"Retry-After": "1"})
        except ClientDisconnect:  # the client gave up: nobody is left to answer
            return Response(status_code=499)
        except Exception as exc:  # the seed view's catch-all: logged, answered INTERNAL_ERROR
            log.exception("reference HO (seed profile) failed on %s %s", request.method, request.url.path)
            return seed_error_response(500, "INTERNAL_ERROR", f"{type(exc).__name__} in the reference HO")

    return endpoint


class SeedEndpoints:
    def __init__(self, ho: SeedHO) -> None:
        self.ho = ho

    async def _credentials(self, request: Request, *names: str) -> list[str]:
        payload = _parse_json(await request.body())
        values = [payload.get(n) if isinstance(payload, dict) else None for n in names]
        if not all(isinstance(v, str) and v for v in values):
            raise SeedError(400, "VALIDATION_ERROR", f"{' and '.join(names)} required")
        return values  # type: ignore[return-value]

    async def token(self, request: Request) -> Response:
        username, password = await self._credentials(request, "username", "password")
        try:
            return json_response(self.ho.auth.login(username, password))
        except AuthFailure as exc:
            raise Unauthorized(NO_ACCOUNT) from exc

    async def refresh(self, request: Request) -> Response:
        (token,) = await self._credentials(request, "refresh")
        try:
            return json_response(self.ho.auth.refresh(token))
        except AuthFailure as exc:
            raise Unauthorized(REFRESH_NOT_VALID) from exc

    async def pull(self, request: Request) -> Response:
        resource = request.path_params["resource"]
        known = self.ho.resources
        if resource in _NOT_PULLED or not RESOURCE_RE.match(resource) or (known is not None and resource not in known):
            if resource == "usage":  # the path exists, for POST
                raise SeedError(405, "METHOD_NOT_ALLOWED", f'Method "{request.method}" not allowed.')
            raise SeedError(404, "NOT_FOUND", "Not found.")
        _authenticate(self.ho, request)
        ho, options, store = self.ho, self.ho.seed, self.ho.seed_store
        q = parse_pull(resource, request.query_params, stores=options.stores, companies=options.companies)
        # A naive HO answers everything at once (and so ignores offset too); else it may cap the limit.
        limit = options.page_limit(q.limit)
        offset = 0 if limit is None else q.offset
        rows, total = await run_in_threadpool(store.page, resource, q.scope, q.since, offset, limit)
        page = page_of(offset, limit, total) if limit is not None else None
        deleted = await run_in_threadpool(store.deleted_since, resource, q.since) \
            if options.report_deletes and offset == 0 else []
        return json_response({
            resource: [seed_record(r) for r in rows], "deleted_ids": deleted,
            "sync_timestamp": iso(ho.now()), "total": total,
            "has_more": page.has_more if page else False, "next_offset": page.next_offset if page else None,
        })

    async def version(self, request: Request) -> Response:
        _authenticate(self.ho, request)
        company = request.query_params.get("company_id")
        if not company:
            raise SeedError(400, "MISSING_COMPANY_ID", "company_id is required")
        check_known({"company_id": company}, stores=None, companies=self.ho.seed.companies)
        latest = await run_in_threadpool(self.ho.seed_store.latest_save, {"company_id": company})
        return json_response({"version": version_of(latest), "timestamp": iso(self.ho.now())})

    async def usage(self, request: Request) -> Response:
        _authenticate(self.ho, request)
        usages = usages_of(_parse_json(await request.body()))
        outlet = request.headers.get("x-outlet-id", "")[:255]  # not needed by the seed; kept when sent
        return json_response(await run_in_threadpool(self._usage, outlet, usages))

    def _usage(self, outlet: str, usages: list[Any]) -> dict[str, Any]:
        errors: list[tuple[int, str]] = []
        processed: list[dict[str, Any]] = []
        for i, raw in enumerate(usages):  # "error handling per usage record"; no deduplication
            problem = usage_error(raw, self.ho.validators, stores=self.ho.seed.stores)
            if problem is None:
                processed.append(raw)
            else:
                errors.append((i, problem))
        self.ho.seed_store.append_usages(outlet, processed)
        return usage_summary(len(usages), errors)

    async def no_push(self, request: Request) -> Response:
        raise SeedError(404, "NOT_FOUND", "Not found.")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return seed_error_response(405, "METHOD_NOT_ALLOWED", f'Method "{request.method}" not allowed.',
                                   dict(exc.headers or {}))
    code = "NOT_FOUND" if exc.status_code == 404 else "HTTP_ERROR"
    return seed_error_response(exc.status_code, code, "Not found." if exc.status_code == 404 else str(exc.detail),
                               dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    return seed_error_response(500, "INTERNAL_ERROR", f"{type(exc).__name__} in the reference HO")


def seed_app(ho: SeedHO, extra_routes: list[Route] | None = None) -> Starlette:
    e = SeedEndpoints(ho)
    token, refresh = seed_errors(e.token), seed_errors(e.refresh)
    routes = [
        Route("/api/v1/token/", token, methods=["POST"]),
        Route("/api/token/", token, methods=["POST"]),
        Route("/api/v1/token/refresh/", refresh, methods=["POST"]),
        Route("/api/token/refresh/", refresh, methods=["POST"]),
        Route("/api/v1/sync/push/", seed_errors(e.no_push), methods=_EVERY_METHOD),  # the path does not exist
        Route("/api/v1/sync/usage/", seed_errors(e.usage), methods=["POST"]),
        Route("/api/v1/sync/version/", seed_errors(e.version), methods=["GET"]),
        # GET only, so a route appended later (extra_routes) may take other methods on a sync path
        Route("/api/v1/sync/{resource}/", seed_errors(e.pull), methods=["GET"]),
        *(extra_routes or []),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, 500: _server_error})
