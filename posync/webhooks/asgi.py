"""ASGI adapter: a Starlette app to mount in a Starlette or FastAPI host.

    app.mount("/api/v1/webhooks/cloud", create_asgi_app(receiver))

serves ``POST /api/v1/webhooks/cloud/{update,delete,conflict}``. ``receiver`` may be a function returning it,
for hosts that build posync later (a FastAPI lifespan) than they mount: until it returns a receiver, the
routes answer 503. Source and declared size are checked before
the body is read; the body is streamed with a size cap; the core (which may touch the database) runs in a
worker thread so the event loop never blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from posync.errors import WebhookError
from posync.webhooks.events import EventType
from posync.webhooks.receiver import (
    WebhookReceiver,
    WebhookRequest,
    WebhookResponse,
    aread_limited,
    error_response,
)

__all__ = ["create_asgi_app"]

logger = logging.getLogger("posync.webhooks")


def _headers(request: Request) -> dict[str, str]:
    merged: dict[str, str] = {}
    for raw_key, raw_value in request.headers.raw:
        key, value = raw_key.decode("latin-1").lower(), raw_value.decode("latin-1")
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _to_starlette(result: WebhookResponse) -> Response:
    return Response(result.body(), status_code=result.status, media_type="application/json")


def create_asgi_app(receiver: WebhookReceiver | Callable[[], WebhookReceiver | None], *,
                    base_path: str = "") -> Starlette:
    """Routes ``{base_path}/update|delete|conflict``; leave ``base_path`` empty when mounting."""

    async def endpoint(request: Request) -> Response:
        current = receiver if isinstance(receiver, WebhookReceiver) else receiver()
        if current is None:  # the host's lifespan has not built it yet: HO retries later
            return _to_starlette(error_response(503, "UNAVAILABLE", "the webhook receiver is not started yet"))
        peer = request.client.host if request.client else None
        headers = _headers(request)
        try:
            current.precheck(peer, headers)
            body = await aread_limited(request.stream(), current.max_body_bytes)
        except WebhookError as exc:
            return _to_starlette(current.refuse(exc, peer))
        except ClientDisconnect:  # the sender went away mid-body: nothing to apply, and no one to answer
            logger.debug("webhook from %s: the sender disconnected before the body was read", peer)
            return _to_starlette(error_response(400, "CLIENT_DISCONNECTED", "the body was not received"))
        kind = request.url.path.rsplit("/", 1)[-1]
        result = await run_in_threadpool(current.handle, WebhookRequest(kind, body, headers, peer))
        return _to_starlette(result)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "BAD_REQUEST")
        response = _to_starlette(error_response(exc.status_code, code, str(exc.detail)))
        response.headers.update(exc.headers or {})
        return response

    routes = [Route(f"{base_path}/{kind.value}", endpoint, methods=["POST"]) for kind in EventType]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.router.redirect_slashes = False  # ".../update/" is a 404, not a redirect a sender might follow
    return app
