"""The ASGI webhook receiver mounted before posync is built (a FastAPI lifespan builds it): the mount takes a
function returning the receiver; until it returns one, deliveries answer 503 (HO retries) and change
nothing; then they are applied as usual. Issue 18, item 10."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from posync.demo.models import Product
from posync.testing import serve_in_thread
from posync.webhooks import StandardWebhookSigner, StandardWebhookVerifier, WebhookReceiver
from posync.webhooks.asgi import create_asgi_app
from posync.webhooks.testing import event_body, signed_headers
from tests.support import make_outlet

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_receiver_mounted_before_it_is_built_answers_503_then_applies(tmp_path: Path) -> None:
    outlet = make_outlet(f"sqlite:///{tmp_path / 'outlet.db'}")
    built: dict[str, Any] = {}

    def current() -> WebhookReceiver | None:
        return built.get("receiver")

    host = Starlette(routes=[Mount("/hooks", app=create_asgi_app(current))])
    server = serve_in_thread(host)
    body = event_body("update", "products", id="p1", version=1, name="Tea", price=12)
    signer = StandardWebhookSigner([SECRET])
    try:
        early = httpx.post(f"{server.url}/hooks/update", content=body, headers=signed_headers(signer, body))
        assert early.status_code == 503 and early.json()["code"] == "UNAVAILABLE"
        with outlet.Session() as s:
            assert s.get(Product, "p1") is None

        built["receiver"] = outlet.sync.webhook_receiver([StandardWebhookVerifier([SECRET])])
        late = httpx.post(f"{server.url}/hooks/update", content=body, headers=signed_headers(signer, body))
        assert late.status_code == 200, late.text
        with outlet.Session() as s:
            assert s.get(Product, "p1").price == 12
        unsigned = httpx.post(f"{server.url}/hooks/update", content=body)
        assert unsigned.status_code == 401
    finally:
        server.stop()
        outlet.close()
