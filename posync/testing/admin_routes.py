"""HTTP admin surface of either reference HO, for when it runs in another process (crash tests, the demo).

Unauthenticated by design: the reference HO only binds loopback addresses.

    GET    /_admin/stats                          counts, requests seen, faults injected
    GET    /_admin/records/{resource}             {id: record}  (record: id, version, deleted, updated_at,
                                                                 change_seq, data)
    GET    /_admin/records/{resource}/{id}        record, or 404
    PUT    /_admin/records/{resource}/{id}        body: the data object -> {"version": n}
    DELETE /_admin/records/{resource}/{id}        -> {"version": n}, or 404
    GET    /_admin/applied?outlet_id=&idempotency_key=   {"total": n, "max": m, "counts": [...]}
    GET    /_admin/usages                         the appended usage records
    GET    /_admin/usage-counts?field=usage_id    {"field", "counts": [{"value", "count"}]}  (duplicates: count > 1)
    GET    /_admin/deletions/{resource}           seed profile with report_deletes: {id: deleted_at}
    POST   /_admin/purge        {"horizon": s}    purge tombstones older than s seconds -> {"purged": n}
    POST   /_admin/revoke-tokens                  every access token issued so far answers 401
    GET/POST/DELETE /_faults                      read / update / reset fault injection
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from posync.testing.changes import RESOURCE_RE
from posync.testing.json_api import ApiError, handle_errors, json_response, read_json

if TYPE_CHECKING:
    from posync.testing.head_office import ReferenceHO

__all__ = ["admin_routes", "record_json"]


def record_json(r: Any) -> dict[str, Any]:
    return {"id": r.id, "version": r.version, "deleted": r.deleted, "updated_at": r.updated_at,
            "change_seq": r.change_seq, "data": r.data}


def admin_routes(ho: ReferenceHO) -> list[Route]:
    def resource_of(request: Request) -> str:
        resource = request.path_params["resource"]
        if not RESOURCE_RE.match(resource):
            raise ApiError(404, "UNKNOWN_RESOURCE", "bad resource name")
        return str(resource)

    async def stats(request: Request) -> Response:
        return json_response(await run_in_threadpool(ho.stats))

    async def records(request: Request) -> Response:
        rows = await run_in_threadpool(ho.records, resource_of(request))
        return json_response({k: record_json(v) for k, v in rows.items()})

    async def record(request: Request) -> Response:
        resource, entity_id = resource_of(request), request.path_params["id"]
        if request.method == "GET":
            rec = await run_in_threadpool(ho.get, resource, entity_id)
            if rec is None:
                raise ApiError(404, "NOT_FOUND", "no such record")
            return json_response(record_json(rec))
        if request.method == "DELETE":
            rec = await run_in_threadpool(ho.delete_record, resource, entity_id)
            if rec is None:
                raise ApiError(404, "NOT_FOUND", "no live record to delete")
            return json_response({"version": rec.version})
        data = await read_json(request)
        if not isinstance(data, dict):
            raise ApiError(422, "VALIDATION_ERROR", "body must be the record's data object")
        return json_response({"version": await run_in_threadpool(ho.put, resource, entity_id, data)})

    async def applied(request: Request) -> Response:
        q = request.query_params
        counts = await run_in_threadpool(ho.applied_counts, q.get("outlet_id"), q.get("idempotency_key"))
        return json_response({
            "total": sum(counts.values()), "max": max(counts.values(), default=0),
            "counts": [{"outlet_id": o, "idempotency_key": k, "count": n} for (o, k), n in counts.items()],
        })

    async def usages(request: Request) -> Response:
        return json_response(await run_in_threadpool(ho.store.usages))

    async def usage_counts(request: Request) -> Response:
        name = request.query_params.get("field") or "usage_id"
        counts = await run_in_threadpool(ho.usage_counts, name)
        return json_response({"field": name, "counts": [{"value": v, "count": n} for v, n in counts.items()]})

    async def deletions(request: Request) -> Response:
        return json_response(await run_in_threadpool(ho.deletions, resource_of(request)))

    async def purge(request: Request) -> Response:
        payload = await read_json(request) if await request.body() else {}
        horizon = payload.get("horizon") if isinstance(payload, dict) else None
        if horizon is not None and (not isinstance(horizon, int | float) or isinstance(horizon, bool)):
            raise ApiError(422, "VALIDATION_ERROR", "horizon must be a number of seconds")
        return json_response({"purged": await run_in_threadpool(ho.purge_tombstones, horizon)})

    async def revoke(request: Request) -> Response:
        ho.revoke_access_tokens()
        return json_response({"status": "ok"})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            ho.faults.reset()
        elif request.method == "POST":
            payload = await read_json(request)
            if not isinstance(payload, dict):
                raise ApiError(422, "VALIDATION_ERROR", "body must be an object of fault settings")
            try:
                ho.faults.update(**payload)
            except (TypeError, ValueError) as exc:
                raise ApiError(422, "VALIDATION_ERROR", str(exc)) from exc
        return json_response(ho.faults.snapshot())

    return [
        Route("/_admin/stats", handle_errors(stats), methods=["GET"]),
        Route("/_admin/records/{resource}", handle_errors(records), methods=["GET"]),
        Route("/_admin/records/{resource}/{id:path}", handle_errors(record), methods=["GET", "PUT", "DELETE"]),
        Route("/_admin/applied", handle_errors(applied), methods=["GET"]),
        Route("/_admin/usages", handle_errors(usages), methods=["GET"]),
        Route("/_admin/usage-counts", handle_errors(usage_counts), methods=["GET"]),
        Route("/_admin/deletions/{resource}", handle_errors(deletions), methods=["GET"]),
        Route("/_admin/purge", handle_errors(purge), methods=["POST"]),
        Route("/_admin/revoke-tokens", handle_errors(revoke), methods=["POST"]),
        Route("/_faults", handle_errors(faults), methods=["GET", "POST", "DELETE"]),
    ]
