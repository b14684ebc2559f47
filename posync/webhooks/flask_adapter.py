"""Flask adapter: a Blueprint serving ``POST {url_prefix}/update|delete|conflict``.

    host.register_blueprint(create_blueprint(receiver))   # default prefix /api/v1/webhooks/cloud
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from posync.webhooks.events import EventType
from posync.webhooks.receiver import WebhookReceiver, WebhookResponse
from posync.webhooks.wsgi import environ_headers, serve_request

__all__ = ["create_blueprint"]


def _to_flask(result: WebhookResponse) -> Response:
    return Response(result.body(), status=result.status, mimetype="application/json")


def create_blueprint(receiver: WebhookReceiver, *, url_prefix: str = "/api/v1/webhooks/cloud",
                     name: str = "posync_webhooks") -> Blueprint:
    blueprint = Blueprint(name, __name__, url_prefix=url_prefix)

    def view(kind: str) -> Response:
        environ = request.environ
        result = serve_request(receiver, kind, request.remote_addr, environ_headers(environ),
                               environ["wsgi.input"], terminated=bool(environ.get("wsgi.input_terminated")))
        return _to_flask(result)

    for kind in EventType:
        blueprint.add_url_rule(f"/{kind.value}", endpoint=kind.value, view_func=view, methods=["POST"],
                               defaults={"kind": kind.value})
    return blueprint
