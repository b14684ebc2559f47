"""Django adapter: URL patterns for the three webhook paths, CSRF-exempt (the signature is the auth).

    urlpatterns = [path("api/v1/webhooks/cloud/", include(webhook_urlpatterns(receiver)))]
"""

from __future__ import annotations

from typing import IO, Any, cast

from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
from django.urls import URLPattern, path  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

from posync.webhooks.events import EventType
from posync.webhooks.receiver import WebhookReceiver, WebhookResponse, error_response
from posync.webhooks.wsgi import environ_headers, serve_request

__all__ = ["webhook_urlpatterns"]


def _to_django(result: WebhookResponse) -> HttpResponse:
    return HttpResponse(result.body(), status=result.status, content_type="application/json")


def webhook_urlpatterns(receiver: WebhookReceiver) -> list[URLPattern]:
    def make_view(kind: str) -> Any:
        @csrf_exempt  # type: ignore[untyped-decorator]
        def view(request: HttpRequest) -> HttpResponse:
            if request.method != "POST":
                response = _to_django(error_response(405, "METHOD_NOT_ALLOWED", "use POST"))
                response["Allow"] = "POST"
                return response
            # request.read() streams from Django's LimitedStream (bounded by Content-Length, so reading to
            # its end is safe); request.body would buffer everything first, which the size cap must prevent.
            meta = request.META
            result = serve_request(receiver, kind, meta.get("REMOTE_ADDR"), environ_headers(meta),
                                   cast(IO[bytes], request), terminated=True)
            return _to_django(result)

        return view

    return [path(kind.value, make_view(kind.value), name=f"posync_webhook_{kind.value}")
            for kind in EventType]
