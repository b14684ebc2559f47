"""The photo HO's routes: the token endpoint, v1 and the older photo API, and the byte answers with faults."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from posync.testing.auth import AuthFailure

if TYPE_CHECKING:
    from posync.testing.photos.ho import HOPhoto, PhotoHO

__all__ = ["photo_routes"]

DRIP_CHUNK = 16 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "code": code, "message": message}, status)


def _since(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _paging(limit: Any, offset: Any) -> tuple[int, int]:
    return max(1, min(1000, int(limit or 100))), max(0, int(offset or 0))


def photo_routes(ho: PhotoHO) -> list[Route]:
    async def token(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            return JSONResponse(ho.auth.login(body.get("username"), body.get("password")))
        except (orjson.JSONDecodeError, AttributeError):
            return _error(400, "VALIDATION_ERROR", "username and password required")
        except AuthFailure as exc:
            return _error(401, "UNAUTHORIZED", exc.message)

    async def v1_list(request: Request) -> Response:
        if (denied := ho.check_auth(request)) is not None:
            return denied
        try:
            body = orjson.loads(await request.body())
            if not isinstance(body, dict):
                raise TypeError
            limit, offset = _paging(body.get("limit"), body.get("offset"))
            since = _since(body.get("updated_since"))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return _error(400, "VALIDATION_ERROR", "bad request body")
        store_id = body.get("store_id")
        if not store_id:
            return _error(400, "MISSING_STORE_ID", "store_id is required")
        stamp = ho.now()
        rows, total, deleted = ho.listing(since, limit, offset)
        more = offset + limit < total
        return JSONResponse({
            "photos": [ho.photo_json(p) for p in rows], "deleted_ids": deleted, "sync_timestamp": stamp.isoformat(),
            "total": total, "has_more": more, "next_offset": offset + limit if more else None,
            "filter": {"company_id": body.get("company_id"), "store_id": store_id},
            "store": {"id": store_id, "code": "REF-001", "name": "reference store"}})

    async def legacy_list(request: Request) -> Response:
        if (denied := ho.check_auth(request)) is not None:
            return denied
        q = request.query_params
        if not q.get("store_id"):
            return _error(400, "MISSING_STORE_ID", "store_id is required")
        try:
            limit, offset = _paging(q.get("limit"), q.get("offset"))
            since = _since(q.get("since"))
        except ValueError:
            return _error(400, "VALIDATION_ERROR", "bad query")
        rows, total, _ = ho.listing(since, limit, offset)
        more = offset + limit < total
        return JSONResponse({"status": "success", "data": {
            "photos": [ho.photo_json(p) for p in rows], "total": total, "has_more": more,
            "next_offset": offset + limit if more else None}})

    async def legacy_status(request: Request) -> Response:
        if (denied := ho.check_auth(request)) is not None:
            return denied
        try:
            body = orjson.loads(await request.body())
            batch = body.get("sync_batch", [])
            store_id = body.get("store_id")
        except (orjson.JSONDecodeError, AttributeError):
            return _error(400, "VALIDATION_ERROR", "bad request body")
        if not store_id:
            return _error(400, "MISSING_STORE_ID", "store_id is required")
        with ho._lock:
            ho.reports.extend(b for b in batch if isinstance(b, dict))
        return JSONResponse({"status": "success", "message": f"Sync status updated for {len(batch)} photos"})

    return [
        Route("/api/v1/token/", token, methods=["POST"]),
        Route("/api/v1/sync/product-photos/", v1_list, methods=["POST"]),
        Route("/api/sync/product-photos/", legacy_list, methods=["GET"]),
        Route("/api/sync/product-photos/status/", legacy_status, methods=["POST"]),
        Route("/api/sync/product-photos/{photo_id}/download/", _Bytes(ho, download=True), methods=["GET", "HEAD"]),
        Route("/product-images/{key:path}", _Bytes(ho, download=False), methods=["GET", "HEAD"]),
    ]


class _Bytes:
    """A byte answer (object or download), honouring Range + If-Range, with the byte faults."""

    def __init__(self, ho: PhotoHO, *, download: bool) -> None:
        self.ho = ho
        self.download = download

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        photo = self._photo(request)
        if isinstance(photo, Response):
            await photo(scope, receive, send)
            return
        from posync.testing.photos.ho import http_date

        data, etag, modified = photo.data, f'"{photo.checksum}"', http_date(photo.updated_at)
        status, start = 200, 0
        headers = {"content-type": photo.content_type, "etag": etag, "last-modified": modified,
                   "accept-ranges": "bytes"}
        if self.download:
            headers.update({"content-disposition": f'attachment; filename="{photo.filename}"',
                            "x-checksum": photo.checksum, "x-version": str(photo.version)})
        rng, if_range = request.headers.get("range"), request.headers.get("if-range")
        if rng:
            self.ho.ranges.append(rng)
        if not self.download and ("authorization" in request.headers or "x-api-key" in request.headers):
            self.ho.authorized_object_gets += 1
        if rng and rng.startswith("bytes=") and (if_range is None or if_range in (etag, modified)):
            first = rng[6:].split("-", 1)[0]
            if first.isdigit():
                start = int(first)
                if start >= len(data):
                    await _send(send, 416, {"content-range": f"bytes */{len(data)}"}, b"")
                    return
                status = 206
                headers["content-range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        fault = self.ho.byte_faults.draw()
        if fault == "error":
            await _send(send, 503, {"content-type": "application/json", "retry-after": "1"},
                        b'{"status":"error","code":"UNAVAILABLE","message":"injected fault"}')
            return
        if fault == "short":
            body = body[: len(body) // 2]
        elif fault == "corrupt" and body:
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
        headers["content-length"] = str(len(body))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if fault in ("cut", "stall"):
            half = len(body) // 2
            await send({"type": "http.response.body", "body": body[:half], "more_body": True})
            if fault == "cut":
                from posync.testing.photos.ho import close_connection

                await close_connection(scope)
                return
            await asyncio.sleep(self.ho.byte_faults.stall_seconds)
            body = body[half:]
        drip = self.ho.byte_faults.drip_interval
        step = DRIP_CHUNK if drip else max(1, len(body))
        for at in range(0, len(body), step):
            more = at + step < len(body)
            await send({"type": "http.response.body", "body": body[at:at + step], "more_body": more})
            if drip and more:
                await asyncio.sleep(drip)
        if not body:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _photo(self, request: Request) -> HOPhoto | Response:
        if self.download:
            if (denied := self.ho.check_auth(request)) is not None:
                return denied
            if not request.query_params.get("store_id"):
                return _error(400, "MISSING_STORE_ID", "store_id is required")
            photo = self.ho.photos.get(request.path_params["photo_id"])
        else:
            key = request.path_params["key"]
            photo = next((p for p in list(self.ho.photos.values()) if p.object_key == key), None)
        if photo is None:
            return _error(404, "NOT_FOUND", "Photo not found")
        return photo


async def _send(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    headers = {**headers, "content-length": str(len(body))}
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
