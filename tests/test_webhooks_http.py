"""The adapters in their real frameworks over real sockets: Starlette and FastAPI under uvicorn, a Flask
Blueprint under werkzeug's server, the plain WSGI app mounted with DispatcherMiddleware and Django, both
under wsgiref (Django also under werkzeug and, through its ASGI handler, uvicorn, for chunked bodies). Every
server is bound to 127.0.0.1:0 in a thread and stopped at the end of its test."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import types
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from posync.models.webhook import WebhookReceipt
from posync.webhooks import (
    CloudSignatureVerifier,
    CloudSigner,
    ReceiptStore,
    SourcePolicy,
    StandardWebhookSigner,
    StandardWebhookVerifier,
    WebhookEvent,
    WebhookReceiver,
)
from posync.webhooks.testing import event_body, serve_asgi, serve_wsgi, signed_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNER = StandardWebhookSigner([SECRET])
PREFIX = "/api/v1/webhooks/cloud"
HO = {"x-forwarded-for": "203.0.113.10"}
FRAMEWORKS = ["starlette", "fastapi", "flask", "wsgi-dispatcher", "django"]


@dataclass
class Served:
    framework: str
    client: httpx.Client
    applied: list[WebhookEvent]

    def post(self, kind: str, body: bytes, headers: dict[str, str], **kw: Any) -> httpx.Response:
        return self.client.post(f"{PREFIX}/{kind}", content=body, headers={**HO, **headers}, **kw)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    eng = sa.create_engine(sqlite_url)
    SQLModel.metadata.create_all(eng, tables=[WebhookReceipt.__table__])  # type: ignore[attr-defined]
    yield eng
    eng.dispose()


def _starlette(receiver: WebhookReceiver) -> AbstractContextManager[str]:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from posync.webhooks.asgi import create_asgi_app

    return serve_asgi(Starlette(routes=[Mount(PREFIX, app=create_asgi_app(receiver))]))


def _fastapi(receiver: WebhookReceiver) -> AbstractContextManager[str]:
    from fastapi import FastAPI

    from posync.webhooks.asgi import create_asgi_app

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"ok": "yes"}

    app.mount(PREFIX, create_asgi_app(receiver))
    return serve_asgi(app)


def _flask(receiver: WebhookReceiver) -> AbstractContextManager[str]:
    from flask import Flask

    from posync.webhooks.flask_adapter import create_blueprint

    app = Flask("posync_test_host")
    app.register_blueprint(create_blueprint(receiver, url_prefix=PREFIX))
    return serve_wsgi(app, server="werkzeug")


def _wsgi_dispatcher(receiver: WebhookReceiver) -> AbstractContextManager[str]:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from posync.webhooks.wsgi import create_wsgi_app

    app = Flask("posync_test_host")
    mounted = DispatcherMiddleware(app.wsgi_app, {PREFIX: create_wsgi_app(receiver)})
    app.wsgi_app = mounted  # type: ignore[method-assign]
    return serve_wsgi(app, server="wsgiref")


@contextmanager
def _django(receiver: WebhookReceiver, server: str = "wsgiref") -> Iterator[str]:
    """``server``: "wsgiref" or "werkzeug" (Django's WSGI handler), or "asgi" (its ASGI handler, uvicorn)."""
    import django  # type: ignore[import-untyped]
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.handlers.asgi import ASGIHandler  # type: ignore[import-untyped]
    from django.core.handlers.wsgi import WSGIHandler  # type: ignore[import-untyped]
    from django.test.utils import override_settings  # type: ignore[import-untyped]
    from django.urls import include, path  # type: ignore[import-untyped]

    from posync.webhooks.django_adapter import webhook_urlpatterns

    site = {"ALLOWED_HOSTS": ["127.0.0.1"], "MIDDLEWARE": ["django.middleware.csrf.CsrfViewMiddleware"]}
    if not settings.configured:
        settings.configure(SECRET_KEY="posync-webhook-tests", DEBUG=False, INSTALLED_APPS=[], USE_TZ=True,
                           ROOT_URLCONF="posync_unused_urls", **site)
        django.setup()
    urls = types.ModuleType(f"posync_test_urls_{uuid.uuid4().hex}")
    patterns = [path(f"{PREFIX.lstrip('/')}/", include(webhook_urlpatterns(receiver)))]
    urls.urlpatterns = patterns  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    try:
        with override_settings(ROOT_URLCONF=urls.__name__, **site), \
                (serve_asgi(ASGIHandler()) if server == "asgi" else serve_wsgi(WSGIHandler(), server=server)) as url:
            yield url
    finally:
        del sys.modules[urls.__name__]


SERVERS = {"starlette": _starlette, "fastapi": _fastapi, "flask": _flask, "wsgi-dispatcher": _wsgi_dispatcher,
           "django": _django}


@pytest.fixture(params=FRAMEWORKS)
def served(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Served]:
    applied: list[WebhookEvent] = []
    receiver = WebhookReceiver(
        [StandardWebhookVerifier([SECRET]), CloudSignatureVerifier(["cloud-secret"])], ReceiptStore(engine),
        apply=applied.append, max_body_bytes=2048,
        sources=SourcePolicy(["203.0.113.0/24"], trusted_proxies=["127.0.0.1"]),
    )
    with SERVERS[request.param](receiver) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield Served(request.param, client, applied)


def test_signed_events_are_applied_once_per_message_id(served: Served) -> None:
    for kind in ("update", "delete", "conflict"):
        body = event_body(kind, id=f"p-{kind}", version=4)
        headers = signed_headers(SIGNER, body, message_id=f"msg_{kind}")
        first = served.post(kind, body, headers)
        assert first.status_code == 200, first.text
        assert first.json() == {"status": "ok", "message_id": f"msg_{kind}", "duplicate": False}
        again = served.post(kind, body, signed_headers(SIGNER, body, message_id=f"msg_{kind}"))
        assert again.status_code == 200 and again.json()["duplicate"] is True
    body = event_body("update", id="legacy", version=1)
    assert served.post("update", body, signed_headers(CloudSigner("cloud-secret"), body)).status_code == 200
    assert [(e.type.value, e.entity_id) for e in served.applied] == [
        ("update", "p-update"), ("delete", "p-delete"), ("conflict", "p-conflict"), ("update", "legacy")]


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    payload = response.json()
    assert payload["status"] == "error" and payload["message"]
    return str(payload["code"])


def test_refusals_over_http(served: Served) -> None:
    body = event_body("update")
    now = int(time.time())
    assert _error(served.post("update", body, {}), 401) == "INVALID_SIGNATURE"
    wrong = StandardWebhookSigner(["whsec_" + "B" * 32])
    assert _error(served.post("update", body, signed_headers(wrong, body)), 401) == "INVALID_SIGNATURE"
    stale = signed_headers(SIGNER, body, timestamp=now - 600)
    assert _error(served.post("update", body, stale), 401) == "INVALID_SIGNATURE"
    tampered = signed_headers(SIGNER, body)
    assert _error(served.post("update", body + b" ", tampered), 401) == "INVALID_SIGNATURE"

    ok = signed_headers(SIGNER, body)
    forged = served.post("update", body, {**ok, "x-forwarded-for": "198.51.100.7"})
    assert _error(forged, 403) == "FORBIDDEN_SOURCE"
    spoofed = served.post("update", body, {**ok, "x-forwarded-for": "203.0.113.10, 198.51.100.7"})
    assert _error(spoofed, 403) == "FORBIDDEN_SOURCE"

    big = event_body("update", pad="x" * 4000)
    assert _error(served.post("update", big, signed_headers(SIGNER, big)), 413) == "PAYLOAD_TOO_LARGE"

    for bad, status in ((b"{nope", 400), (b"\xff\xfe", 400),
                        (b'{"type": "upsert", "resource": "p", "record": {"id": "1", "version": 1}}', 422),
                        (b'{"type": "update", "resource": "products", "record": {"version": 1}}', 422)):
        assert _error(served.post("update", bad, signed_headers(SIGNER, bad)), status) == "INVALID_PAYLOAD"
    mismatch = served.post("delete", body, signed_headers(SIGNER, body))
    assert _error(mismatch, 422) == "INVALID_PAYLOAD"
    assert served.applied == []


def test_streamed_oversize_body_is_cut_off(served: Served) -> None:
    """No Content-Length (chunked): the cap is enforced while reading. Where the body's end is unknown
    (wsgiref does not say ``wsgi.input_terminated``) the request is refused with 411, never read as empty."""
    body = event_body("update", pad="y" * 8000)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start:start + 512]

    response = served.client.post(f"{PREFIX}/update", content=chunks(),
                                  headers={**HO, **signed_headers(SIGNER, body)})
    if served.framework in ("starlette", "fastapi", "flask"):
        assert _error(response, 413) == "PAYLOAD_TOO_LARGE"
    else:
        assert _error(response, 411) == "INVALID_PAYLOAD"
    assert served.applied == []


def test_a_chunked_body_under_the_limit_is_applied_where_its_end_is_known(served: Served) -> None:
    """The README's promise: chunked is read up to the limit; 411 only under a WSGI server that does not
    say where the body ends (wsgiref, here under the plain WSGI app and Django)."""
    body = event_body("update", id="chunked", version=2)

    def chunks() -> Iterator[bytes]:
        yield body[:16]
        yield body[16:]

    response = served.client.post(f"{PREFIX}/update", content=chunks(),
                                  headers={**HO, **signed_headers(SIGNER, body)})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    if served.framework in ("starlette", "fastapi", "flask"):
        assert response.status_code == 200, response.text
        assert [e.entity_id for e in served.applied] == ["chunked"]
    else:
        assert _error(response, 411) == "INVALID_PAYLOAD"
        assert served.applied == []


def test_wrong_method_and_unknown_path_are_client_errors(served: Served) -> None:
    assert 400 <= served.client.get(f"{PREFIX}/update", headers=HO).status_code < 500
    body = event_body("update")
    response = served.post("upsert", body, signed_headers(SIGNER, body))
    assert response.status_code == 404


def _raw_post(base: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST with the header bytes as given (latin-1, as HTTP/1.1 carries them) and no body: httpx and h11
    refuse to send a malformed Content-Length."""
    url = httpx.URL(base)
    assert url.port is not None
    head = f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("value", ["²", "1²", "¹"])
def test_content_length_of_non_ascii_digits_is_400(served: Served, value: str) -> None:
    """'²'.isdigit() is True in Python, and int('²') raises: that was a 500 in the WSGI adapters."""
    body = event_body("update")
    headers = {**HO, **signed_headers(SIGNER, body), "content-length": value}
    status, payload = _raw_post(str(served.client.base_url), f"{PREFIX}/update", headers)
    assert status == 400, (status, payload)
    if served.framework not in ("starlette", "fastapi"):  # uvicorn's parser refuses it before the app
        assert httpx.Response(status, content=payload).json()["code"] == "INVALID_PAYLOAD"
    assert served.applied == []


@pytest.mark.parametrize("value", [b"\xb2", b"1\xb2", b"\xb9", b"99999999999999999999999"])
def test_the_asgi_adapter_itself_refuses_a_malformed_or_absurd_content_length(engine: Engine,
                                                                               value: bytes) -> None:
    """uvicorn's parser refuses a non-digit Content-Length before the app; a server that passes it on
    still gets a 400 (an absurd one a 413), never a 500."""
    from posync.webhooks.asgi import create_asgi_app

    receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine), apply=lambda e: None)
    body = event_body("update")

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_asgi_app(receiver))
        async with httpx.AsyncClient(transport=transport, base_url="http://outlet") as client:
            return await client.post("/update", content=body,
                                     headers={**signed_headers(SIGNER, body), "content-length": value})

    response = asyncio.run(post())
    if value.isdigit():
        assert _error(response, 413) == "PAYLOAD_TOO_LARGE"
    else:
        assert _error(response, 400) == "INVALID_PAYLOAD"


@pytest.mark.parametrize(("server", "status"), [("wsgiref", 411), ("werkzeug", 200), ("asgi", 200)])
def test_django_reads_a_chunked_body_only_where_its_end_is_known(engine: Engine, server: str, status: int) -> None:
    """No Content-Length: Django's WSGI request reads the body as empty (it was refused as "no matching
    signature"). Under a server that says where the body ends (werkzeug: ``wsgi.input_terminated``) and
    under Django's ASGI handler (which receives the whole body first) it is read and applied; under wsgiref,
    which does not, it is 411 Length Required."""
    applied: list[WebhookEvent] = []
    receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine), apply=applied.append)
    body = event_body("update", id="chunked", version=2)

    def chunks() -> Iterator[bytes]:
        yield body[:16]
        yield body[16:]

    with _django(receiver, server=server) as base, httpx.Client(base_url=base, timeout=10) as client:
        response = client.post(f"{PREFIX}/update", content=chunks(), headers=signed_headers(SIGNER, body))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    if status == 200:
        assert response.status_code == 200, response.text
        assert [e.entity_id for e in applied] == ["chunked"]
    else:
        assert _error(response, 411) == "INVALID_PAYLOAD"
        assert applied == []
