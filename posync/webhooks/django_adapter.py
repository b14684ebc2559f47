"""Django adapter: URL patterns for the three webhook paths, CSRF-exempt (the signature is the auth).

    urlpatterns = [path("api/v1/webhooks/cloud/", include(webhook_urlpatterns(receiver)))]
"""

from __future__ import annotations

from typing import IO, Any, cast

from django.core.handlers.wsgi import WSGIRequest  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
from django.urls import URLPattern, path  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

from posync.webhooks.events import EventType
from posync.webhooks.receiver import WebhookReceiver, WebhookResponse, error_response
from posync.webhooks.wsgi import environ_headers, serve_request

__all__ = ["webhook_urlpatterns"]


def _to_django(result: WebhookResponse) -> HttpResponse:
    return HttpResponse(result.body(), status=result.status, content_type="application/json")


def _body(request: HttpRequest) -> tuple[IO[bytes], bool]:
    """Where the body is read from, and whether that stream is known to end (``serve_request``'s
    ``terminated``).

    request.read() streams (request.body would buffer everything first, which the size cap must prevent).
    Under WSGI, Django bounds it by Content-Length, so reading it to its end is safe; but without one (a
    chunked request) Django reads the body as empty (its LimitedStream stops at 0 bytes), which would be
    refused as "no matching signature". Django cannot tell where such a body ends; only the server can:
    when it says so (``wsgi.input_terminated``, as gunicorn and werkzeug do) the server's stream is read to
    its end, otherwise 411 Length Required, as the WSGI adapter answers. Under ASGI, Django has received
    the whole body before the view runs, so reading the request to its end is safe with or without
    Content-Length."""
    meta = request.META
    if isinstance(request, WSGIRequest) and not meta.get("CONTENT_LENGTH"):
        return cast(IO[bytes], meta["wsgi.input"]), bool(meta.get("wsgi.input_terminated"))
    return cast(IO[bytes], request), True


def webhook_urlpatterns(receiver: WebhookReceiver) -> list[URLPattern]:
    def make_view(kind: str) -> Any:
        @csrf_exempt  # type: ignore[untyped-decorator]
        def view(request: HttpRequest) -> HttpResponse:
            if request.method != "POST":
                response = _to_django(error_response(405, "METHOD_NOT_ALLOWED", "use POST"))
                response["Allow"] = "POST"
                return response
            meta = request.META
            stream, terminated = _body(request)
            result = serve_request(receiver, kind, meta.get("REMOTE_ADDR"), environ_headers(meta), stream,
                                   terminated=terminated)
            return _to_django(result)

        return view

    return [path(kind.value, make_view(kind.value), name=f"posync_webhook_{kind.value}")
            for kind in EventType]
