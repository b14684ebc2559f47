"""A correctly signed webhook whose record the outlet's columns cannot hold (a poison message) is refused
with 422 APPLY_REJECTED, on SQLite and PostgreSQL, through the real wiring (``Posync.webhook_receiver``)
over real HTTP: nothing half-written (no row, no receipt, no row change), a redelivery is refused again,
and the outlet goes on applying good webhooks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.routing import Mount

from posync.demo.models import Product
from posync.models.webhook import WebhookReceipt
from posync.webhooks import (
    DeliveryOutcome,
    SenderRetryPolicy,
    StandardWebhookSigner,
    StandardWebhookVerifier,
    WebhookSender,
)
from posync.webhooks.asgi import create_asgi_app
from posync.webhooks.testing import event_body, serve_asgi, signed_headers
from tests.support import Outlet, make_outlet

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B64 = SECRET.removeprefix("whsec_")
SIGNER = StandardWebhookSigner([SECRET])

# field -> a value pos_product cannot hold; each is refused by the database or the driver today
POISON: dict[str, tuple[str, Any]] = {
    "null-in-not-null": ("name", None),
    "object-for-integer": ("price", {"amount": 12}),
    "list-for-integer": ("price", [1, 2]),
    "integer-beyond-64-bits": ("price", 2**70),
}


class Hooks:
    def __init__(self, outlet: Outlet, client: httpx.Client, base: str) -> None:
        self.outlet = outlet
        self.client = client
        self.url = f"{base}/api/v1/webhooks/cloud"

    def post(self, body: bytes, message_id: str) -> httpx.Response:
        return self.client.post("/api/v1/webhooks/cloud/update", content=body,
                                headers=signed_headers(SIGNER, body, message_id=message_id))

    def product(self, entity_id: str) -> tuple[Any, ...] | None:
        with self.outlet.Session() as s:
            row = s.get(Product, entity_id)
            return None if row is None else (row.name, row.price, row.version, row.cloud_version)

    def receipts(self) -> list[str]:
        table = WebhookReceipt.__table__  # type: ignore[attr-defined]
        with self.outlet.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(table.c.message_id)))


@pytest.fixture
def hooks(db_url: str) -> Iterator[Hooks]:
    outlet = make_outlet(db_url)
    receiver = outlet.sync.webhook_receiver([StandardWebhookVerifier([SECRET])])
    app = Starlette(routes=[Mount("/api/v1/webhooks/cloud", app=create_asgi_app(receiver))])
    try:
        with serve_asgi(app) as base, httpx.Client(base_url=base, timeout=10) as client:
            yield Hooks(outlet, client, base)
    finally:
        outlet.close()


def _rejected(response: httpx.Response, entity_id: str) -> str:
    assert response.status_code == 422, (response.status_code, response.text)
    payload = response.json()
    assert (payload["status"], payload["code"]) == ("error", "APPLY_REJECTED")
    message = str(payload["message"])
    # names the record and the problem (in the receiver's words or the apply path's own), and echoes no
    # secret and no SQL
    assert "products" in message and entity_id in message and len(message) > len(f"products:{entity_id} ")
    assert SECRET_B64 not in response.text
    assert "[SQL" not in message and "INSERT INTO" not in message.upper() and "UPDATE POS_" not in message.upper()
    return message


@pytest.mark.parametrize("case", list(POISON))
def test_a_poison_record_is_refused_with_422_and_leaves_nothing(hooks: Hooks, case: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    field, value = POISON[case]
    assert hooks.post(event_body("update", id="p2", version=1, name="Tea", price=10), "msg_good_1").status_code \
        == 200
    before = hooks.product("p2")
    assert before is not None and before[:2] == ("Tea", 10)
    new = event_body("update", id="p1", version=1, **{"name": "Coffee", "price": 5, field: value})
    changed = event_body("update", id="p2", version=2, **{"name": "Tea", "price": 11, field: value})
    with caplog.at_level(logging.DEBUG):
        for body, entity_id, message_id in ((new, "p1", "msg_poison_new"), (changed, "p2", "msg_poison_changed")):
            message = _rejected(hooks.post(body, message_id), entity_id)
            if case == "null-in-not-null":
                assert "name" in message
            assert _rejected(hooks.post(body, message_id), entity_id) == message  # HO's redelivery: refused again
    # HO's own sender takes the 422 as final: one attempt, no retry storm
    with WebhookSender(SIGNER, client=hooks.client, policy=SenderRetryPolicy(max_attempts=3),
                       sleep=lambda _: None) as sender:
        result = sender.deliver(hooks.url, "update", "products", {"id": "p3", "version": 1, field: value})
    assert (result.outcome, result.attempts, result.status) == (DeliveryOutcome.REJECTED, 1, 422)
    assert SECRET_B64 not in caplog.text
    # the receipt rolled back with the apply: no new row, the existing row untouched
    assert hooks.product("p1") is None and hooks.product("p3") is None
    assert hooks.product("p2") == before
    assert hooks.receipts() == ["msg_good_1"]
    # the connection and the entities are fine: the corrected records apply (the refused id left no
    # receipt, so it is not taken for a replay)
    assert hooks.post(event_body("update", id="p1", version=1, name="Coffee", price=5), "msg_fixed").status_code \
        == 200
    assert hooks.post(event_body("update", id="p2", version=2, name="Tea", price=11), "msg_poison_changed") \
        .status_code == 200
    assert [(row or ())[:2] for row in (hooks.product("p1"), hooks.product("p2"))] == [("Coffee", 5), ("Tea", 11)]
