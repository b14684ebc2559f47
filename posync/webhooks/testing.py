"""Test helpers for host apps (and posync's own tests): signed requests and real loopback servers.

``serve_asgi`` runs uvicorn and ``serve_wsgi`` a threaded werkzeug (or wsgiref) server on 127.0.0.1 with
an OS-chosen port, in a thread; both yield the base URL and always stop the server on exit.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from posync.webhooks.signing import Signer

__all__ = ["event_body", "serve_asgi", "serve_wsgi", "signed_headers"]


def event_body(event_type: str = "update", resource: str = "products", **record: Any) -> bytes:
    record.setdefault("id", "p1")
    record.setdefault("version", 1)
    return json.dumps({"type": event_type, "resource": resource, "record": record}).encode()


def signed_headers(signer: Signer, body: bytes, *, message_id: str | None = None,
                   timestamp: int | None = None) -> dict[str, str]:
    return {"content-type": "application/json",
            **signer.headers(message_id or f"msg_{uuid.uuid4().hex}",
                             int(time.time()) if timestamp is None else timestamp, body)}


@contextmanager
def serve_asgi(app: Any, *, timeout: float = 10.0) -> Iterator[str]:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="posync-test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout)
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@contextmanager
def serve_wsgi(app: WSGIApp, *, server: str = "werkzeug") -> Iterator[str]:
    """``server``: "werkzeug" (threaded ``make_server``) or "wsgiref" (the standard library's)."""
    if server == "werkzeug":
        from werkzeug.serving import make_server

        httpd: Any = make_server("127.0.0.1", 0, app, threaded=True)
    else:
        from wsgiref.simple_server import WSGIRequestHandler
        from wsgiref.simple_server import make_server as wsgiref_server

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = wsgiref_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"posync-test-{server}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
