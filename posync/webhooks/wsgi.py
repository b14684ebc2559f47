"""WSGI adapters: a framework-free WSGI app, and the body/header helpers the Flask and Django views share.

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    host.wsgi_app = DispatcherMiddleware(host.wsgi_app, {"/api/v1/webhooks/cloud": create_wsgi_app(receiver)})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from posync.errors import InvalidPayloadError, WebhookError
from posync.webhooks.events import EventType
from posync.webhooks.receiver import (
    WebhookReceiver,
    WebhookRequest,
    WebhookResponse,
    check_content_length,
    error_response,
    read_limited,
)

__all__ = ["create_wsgi_app", "environ_headers", "read_stream", "serve_request"]

CHUNK = 64 * 1024
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
                422: "Unprocessable Content", 500: "Internal Server Error"}


def environ_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """Request headers from a WSGI environ, lower-cased, dashes restored."""
    headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_LENGTH", "CONTENT_TYPE"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers


def _chunks(stream: IO[bytes], remaining: int | None) -> Iterator[bytes]:
    while remaining is None or remaining > 0:
        chunk = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def read_stream(stream: IO[bytes], content_length: str | None, limit: int, *, terminated: bool) -> bytes:
    """Read at most ``limit`` bytes (+1 to detect overflow). Without a Content-Length the stream must be
    terminated (``wsgi.input_terminated``); otherwise reading could block, so 411. A Content-Length that is
    not plain ASCII digits is a 400, one above ``limit`` a 413."""
    declared = check_content_length(content_length, limit)
    if declared is not None:
        return read_limited(_chunks(stream, declared), limit)
    if not terminated:
        raise InvalidPayloadError("Content-Length required", status=411)
    return read_limited(_chunks(stream, limit + 1), limit)


def serve_request(receiver: WebhookReceiver, kind: str, peer: str | None, headers: dict[str, str],
                  stream: IO[bytes], *, terminated: bool) -> WebhookResponse:
    """The whole WSGI-side flow for one request: precheck, bounded read, core."""
    try:
        receiver.precheck(peer, headers)
        body = read_stream(stream, headers.get("content-length"), receiver.max_body_bytes,
                           terminated=terminated)
    except WebhookError as exc:
        return receiver.refuse(exc, peer)
    return receiver.handle(WebhookRequest(kind, body, headers, peer))


def create_wsgi_app(receiver: WebhookReceiver) -> WSGIApp:
    """A WSGI app answering ``POST /update|delete|conflict`` (relative to where it is mounted)."""
    kinds = {f"/{k.value}": k.value for k in EventType}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        kind = kinds.get(environ.get("PATH_INFO", ""))
        if kind is None:
            result = error_response(404, "NOT_FOUND", "no such webhook path")
        elif environ.get("REQUEST_METHOD") != "POST":
            result = error_response(405, "METHOD_NOT_ALLOWED", "use POST")
        else:
            terminated = bool(environ.get("wsgi.input_terminated"))
            result = serve_request(receiver, kind, environ.get("REMOTE_ADDR"), environ_headers(environ),
                                   environ["wsgi.input"], terminated=terminated)
        body = result.body()
        start_response(f"{result.status} {_STATUS_TEXT.get(result.status, 'Error')}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app
