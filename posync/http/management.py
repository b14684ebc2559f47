"""Seed 003's management endpoints as a Starlette app the host mounts (FastAPI: ``app.mount``):

    GET  /status[?check_ho=1]    POST /trigger    GET /logs[?kind=]    GET /queue    GET /metrics (Prometheus)
    POST /retry/{id}    POST /retry (all dead)    GET /conflicts    POST /resolve/{id}
    POST /checkpoints/reset[?resource=]    POST /reconcile[?resource=&force=1]

Locked by default: without ``authorize(request) -> bool`` (plain or ``async``; seed 003: admin only) every
route answers 401, unless the host opts out with ``allow_anonymous=True`` (a demo on loopback). A caller
``authorize`` refuses, or one it fails on, gets 403. ``sync`` is the ``Posync`` or a function returning it,
for hosts that build it later (a FastAPI lifespan) than they mount the router. Errors are JSON
``{"status": "error", "code", "message"}``: 400/401/403/404/409, never a 500 for a caller's mistake.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from posync.app import Posync
from posync.errors import ClosedError, ConfigurationError, ConflictStateError, NotFoundError, PosyncError
from posync.http.guard import Authorize, Guard, LazyPosync
from posync.http.metrics import metrics_registry, render
from posync.models.enums import ItemStatus, log_kind

__all__ = ["management_app"]

Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "code": code, "message": message}, status_code=status)


def _int(request: Request, name: str, default: int, maximum: int = 1000) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= maximum:
        raise ValueError(f"{name} must be a whole number from 1 to {maximum}")
    return int(raw)


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "0").lower()
    if raw not in ("0", "1", "true", "false", "yes", "no", ""):
        raise ValueError(f"{name} must be 1 or 0")
    return raw in ("1", "true", "yes")


def management_app(sync: Posync | Callable[[], Posync], authorize: Authorize | None = None, *,
                   allow_anonymous: bool = False) -> Starlette:
    guard = Guard("management", authorize, allow_anonymous)
    outlet = LazyPosync(sync)

    def guarded(fn: Callable[[Request], Any]) -> Handler:
        async def endpoint(request: Request) -> Response:
            refusal = await guard.refusal(request)
            if refusal is not None:
                return _error(refusal.status, refusal.code, refusal.message)
            try:
                answer = await fn(request)
                return answer if isinstance(answer, Response) else JSONResponse(answer)
            except NotFoundError as exc:
                return _error(404, "NOT_FOUND", str(exc))
            except ConflictStateError as exc:
                return _error(409, "CONFLICT_STATE", str(exc))
            except ConfigurationError as exc:  # e.g. a resource that is not registered
                return _error(404, "NOT_FOUND", str(exc))
            except ClosedError as exc:
                return _error(409, "CLOSED", str(exc))
            except PosyncError as exc:  # HO or the outlet database failed: nothing was changed
                return _error(503, "UNAVAILABLE", str(exc))
            except ValueError as exc:
                return _error(400, "BAD_REQUEST", str(exc))

        return endpoint

    async def status(request: Request) -> Any:
        check_ho = _flag(request, "check_ho")
        return (await run_in_threadpool(lambda: outlet().status(check_ho=check_ho))).as_dict()

    registries: list[Any] = []  # this router's own CollectorRegistry, built at the first scrape

    def scrape() -> tuple[bytes, str]:
        if not registries:
            registries.append(metrics_registry(outlet))
        return render(registries[0])

    async def metrics(request: Request) -> Any:
        try:
            body, content_type = await run_in_threadpool(scrape)
        except ConfigurationError as exc:  # prometheus_client is not installed
            return _error(501, "NOT_IMPLEMENTED", str(exc))
        return Response(body, media_type=content_type)

    async def trigger(request: Request) -> Any:
        report = await run_in_threadpool(outlet().sync_here_or_ask)
        if report is None:  # another worker process is the outlet's syncer: it was asked, and runs one soon
            return JSONResponse({"asked": True}, status_code=202)
        return {"pushed": report.push.applied, "pulled": report.pull.applied.written, "error": report.error}

    async def logs(request: Request) -> Any:
        raw = request.query_params.get("kind")
        kind = log_kind(raw).value if raw else None  # an unknown kind: 400 naming the valid ones
        return await run_in_threadpool(outlet().manager.logs, _int(request, "limit", 100), kind)

    async def queue(request: Request) -> Any:
        raw = request.query_params.get("status")
        try:
            status_ = ItemStatus(raw) if raw else None
        except ValueError:
            raise ValueError(f"status must be one of {[s.value for s in ItemStatus]}") from None
        return await run_in_threadpool(outlet().manager.queue, status_, _int(request, "limit", 100))

    async def retry_one(request: Request) -> Any:
        item_id = request.path_params["item_id"]
        await run_in_threadpool(outlet().manager.retry, item_id)
        return {"retried": 1}

    async def retry_all(request: Request) -> Any:
        return {"retried": await run_in_threadpool(outlet().manager.retry_all)}

    async def reset(request: Request) -> Any:
        resource = request.query_params.get("resource")
        return {"reset": await run_in_threadpool(outlet().reset_checkpoint, resource)}

    async def reconcile(request: Request) -> Any:
        resource = request.query_params.get("resource")
        force = request.query_params.get("force") in ("1", "true", "yes")
        reports = await run_in_threadpool(lambda: outlet().reconcile(resource, force=force))
        return [{"resource": r.resource, "skipped": r.skipped, "ho_ids": r.ho_ids, "removed": r.removed,
                 "error": r.error} for r in reports]

    async def conflicts(request: Request) -> Any:
        return await run_in_threadpool(outlet().manager.conflicts)

    async def resolve(request: Request) -> Any:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise ValueError("body must be JSON: {\"choice\": \"local\"|\"remote\"} or {\"merged\": {...}}") from None
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        choice = body.get("merged") if isinstance(body.get("merged"), dict) else body.get("choice")
        if not (isinstance(choice, dict) or choice in ("local", "remote")):
            raise ValueError("choice must be 'local' or 'remote', or give a 'merged' record")
        await run_in_threadpool(outlet().manager.resolve, request.path_params["conflict_id"], choice)
        return {"resolved": request.path_params["conflict_id"]}

    return Starlette(routes=[
        Route("/status", guarded(status), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/trigger", guarded(trigger), methods=["POST"]),
        Route("/logs", guarded(logs), methods=["GET"]),
        Route("/queue", guarded(queue), methods=["GET"]),
        Route("/retry/{item_id:int}", guarded(retry_one), methods=["POST"]),
        Route("/retry", guarded(retry_all), methods=["POST"]),
        Route("/conflicts", guarded(conflicts), methods=["GET"]),
        Route("/checkpoints/reset", guarded(reset), methods=["POST"]),
        Route("/reconcile", guarded(reconcile), methods=["POST"]),
        Route("/resolve/{conflict_id:int}", guarded(resolve), methods=["POST"]),
    ])
