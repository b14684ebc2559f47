"""gunicorn -w 2 tests.embed.flask_app:app   (never --preload: posync's threads do not survive a fork)"""

import atexit
from typing import Any

from a2wsgi import ASGIMiddleware
from flask import Flask, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import posync.http
from posync.webhooks.flask_adapter import create_blueprint
from tests.embed.pos import build_sync, is_admin, record_order, webhook_receiver

sync = build_sync()  # gunicorn imports this module in each worker process
sync.start()
atexit.register(sync.close)  # a worker's graceful exit (SIGTERM) runs it, bounded by close_timeout

app = Flask(__name__)
app.register_blueprint(create_blueprint(webhook_receiver(sync)))  # /api/v1/webhooks/cloud/...
management = ASGIMiddleware(posync.http.management_app(sync, authorize=is_admin))  # a Starlette app, under WSGI
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/api/v1/sync": management})


@app.post("/orders")
def create_order() -> tuple[dict[str, Any], int]:
    order = request.get_json()
    record_order(order["id"], order["total"])
    return order, 201
