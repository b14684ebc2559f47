"""The ASGI adapter reading a body, driven at the ASGI interface with a scripted ``receive()``: a sender that
goes away mid-body, and chunked bodies (no Content-Length), bounded while they are read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from posync.models.webhook import WebhookReceipt
from posync.webhooks import ReceiptStore, StandardWebhookSigner, StandardWebhookVerifier, WebhookEvent, WebhookReceiver
from posync.webhooks.asgi import create_asgi_app
from posync.webhooks.testing import event_body, signed_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNER = StandardWebhookSigner([SECRET])
LIMIT = 2048


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    eng = sa.create_engine(sqlite_url)
    SQLModel.metadata.create_all(eng, tables=[WebhookReceipt.__table__])  # type: ignore[attr-defined]
    yield eng
    eng.dispose()


class Call:
    """One request to the ASGI app: ``messages`` are what ``receive()`` hands out, in order."""

    def __init__(self, engine: Engine, messages: list[dict[str, Any]], headers: dict[str, str]) -> None:
        self.applied: list[WebhookEvent] = []
        receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine),
                                   apply=self.applied.append, max_body_bytes=LIMIT)
        self.app = create_asgi_app(receiver)
        self.messages = messages
        self.received = 0
        self.sent: list[dict[str, Any]] = []
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                      "scheme": "http", "path": "/update", "raw_path": b"/update", "root_path": "",
                      "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
                      "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}

    async def receive(self) -> dict[str, Any]:
        if self.received >= len(self.messages):
            await asyncio.sleep(3600)  # a client that sends nothing more: the app must not wait for it
        self.received += 1
        return self.messages[self.received - 1]

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def run(self) -> int | None:
        asyncio.run(asyncio.wait_for(self.app(self.scope, self.receive, self.send), 30))
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)


def _chunks(body: bytes, size: int) -> list[dict[str, Any]]:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return [{"type": "http.request", "body": p, "more_body": n < len(parts) - 1} for n, p in enumerate(parts)]


def test_a_sender_that_disconnects_mid_body_is_no_error(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """Before: starlette's ClientDisconnect escaped the body read ("Exception in ASGI application", an
    ERROR with a traceback under uvicorn, once per such delivery)."""
    body = event_body("update", id="gone", version=1)
    headers = {**signed_headers(SIGNER, body), "content-length": str(len(body))}
    call = Call(engine, [{"type": "http.request", "body": body[:9], "more_body": True},
                         {"type": "http.disconnect"}], headers)
    with caplog.at_level(logging.DEBUG):
        call.run()  # raises before the fix
    assert call.applied == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert all(r.exc_info is None for r in caplog.records)


def test_a_chunked_body_over_the_limit_is_413_without_reading_it_all(engine: Engine) -> None:
    body = event_body("update", id="big", version=1, pad="x" * (LIMIT * 20))
    call = Call(engine, _chunks(body, 512), signed_headers(SIGNER, body))  # no Content-Length: chunked
    assert call.run() == 413
    assert call.received <= LIMIT // 512 + 1 < len(call.messages)  # stopped once past the limit
    assert call.applied == []


def test_a_chunked_body_under_the_limit_is_applied(engine: Engine) -> None:
    body = event_body("update", id="chunked", version=3, name="x" * 600)
    call = Call(engine, _chunks(body, 256), signed_headers(SIGNER, body))
    assert call.run() == 200
    assert call.received == len(call.messages) > 1
    assert [(e.entity_id, e.version, e.record["name"]) for e in call.applied] == [("chunked", 3, "x" * 600)]
