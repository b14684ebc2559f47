"""HO -> outlet over signed webhooks, through the core's apply path: a change at HO becomes a signed
webhook the outlet applies; a later pull applies nothing twice; a replay is acknowledged, not applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from posync import ConflictStrategy
from posync.demo.models import Product, pos_registry
from posync.testing import ChangeEvent, ReferenceHO, SyncHarness, serve_in_thread
from posync.webhooks import StandardWebhookSigner, StandardWebhookVerifier, WebhookSender
from posync.webhooks.asgi import create_asgi_app
from posync.webhooks.testing import signed_headers
from tests.support import API_KEY, Outlet, make_outlet

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Setup:
    def __init__(self, db_url: str, tmp: Path, strategy: ConflictStrategy) -> None:
        self.ho = ReferenceHO(f"sqlite:///{tmp / 'ho.db'}", api_keys={API_KEY: None})
        self.ho_server = serve_in_thread(self.ho.app)
        self.outlet: Outlet = make_outlet(db_url, self.ho_server.url, registry=pos_registry(strategy))
        receiver = self.outlet.sync.webhook_receiver([StandardWebhookVerifier([SECRET])])
        host_app = Starlette(routes=[Mount("/api/v1/webhooks/cloud", app=create_asgi_app(receiver))])
        self.outlet_server = serve_in_thread(host_app)
        self.hook_url = self.outlet_server.url + "/api/v1/webhooks/cloud"
        self.http = httpx.Client(timeout=5.0)
        self.sender = WebhookSender(StandardWebhookSigner([SECRET]), client=self.http)
        self.deliveries: list[Any] = []
        self.ho.on_change.append(self.forward)

    def forward(self, event: ChangeEvent) -> None:
        if event.source == "admin":  # HO-side edits are announced to the outlet
            self.deliveries.append(self.sender.deliver(self.hook_url, event.type, event.resource, event.record))

    def close(self) -> None:
        self.http.close()
        self.outlet_server.stop()
        self.outlet.close()
        self.ho_server.stop()
        self.ho.close()


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[Setup]:
    s = Setup(db_url, tmp_path, ConflictStrategy.MANUAL)
    yield s
    s.close()


def test_ho_change_arrives_by_webhook_and_the_pull_applies_nothing_twice(setup: Setup) -> None:
    setup.ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 10})
    setup.ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 12})
    assert [d.delivered for d in setup.deliveries] == [True, True]
    with setup.outlet.Session() as s:
        row = s.get(Product, "p1")
        assert (row.price, row.cloud_version, row.version) == (12, 2, 2)
    stats = SyncHarness(setup.outlet.sync).pull_all()
    assert stats.applied.written == 0 and stats.applied.skipped >= 1  # already there, by version
    setup.ho.delete("products", "p1")
    with setup.outlet.Session() as s:
        assert s.get(Product, "p1") is None
    assert SyncHarness(setup.outlet.sync).pull_all().applied.deleted == 0


def test_a_replayed_webhook_is_acknowledged_and_not_applied(setup: Setup) -> None:
    signer = StandardWebhookSigner([SECRET])
    body = b'{"type":"update","resource":"products","record":{"id":"p7","version":1,"name":"A","price":1}}'
    headers = signed_headers(signer, body, message_id="msg_replay_1")
    first = httpx.post(setup.hook_url + "/update", content=body, headers=headers)
    with setup.outlet.Session() as s:  # a local edit in between...
        s.get(Product, "p7").price = 99
        s.commit()
    again = httpx.post(setup.hook_url + "/update", content=body, headers=headers)
    assert first.status_code == again.status_code == 200 and again.json()["duplicate"] is True
    with setup.outlet.Session() as s:  # ...is not undone by the replay
        assert s.get(Product, "p7").price == 99


def test_a_webhook_meeting_a_local_change_takes_the_conflict_path(setup: Setup) -> None:
    setup.ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 10})
    with setup.outlet.Session() as s:
        s.get(Product, "p1").price = 11
        s.commit()
    setup.ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 20})
    [conflict] = setup.outlet.sync.manager.conflicts()
    assert conflict["source"] == "webhook"
    assert (conflict["local_data"]["price"], conflict["remote_data"]["price"]) == (11, 20)


def test_bad_webhooks_are_refused_with_4xx(setup: Setup) -> None:
    body = b'{"type":"update","resource":"products","record":{"id":"p1","version":1}}'
    assert httpx.post(setup.hook_url + "/update", content=body).status_code == 401
    wrong = StandardWebhookSigner(["whsec_" + "A" * 32])
    assert httpx.post(setup.hook_url + "/update", content=body,
                      headers=signed_headers(wrong, body)).status_code == 401
    good = StandardWebhookSigner([SECRET])
    unknown = b'{"type":"update","resource":"orders","record":{"id":"o1","version":1}}'  # push-only here
    assert httpx.post(setup.hook_url + "/update", content=unknown,
                      headers=signed_headers(good, unknown)).status_code == 422
    no_version = b'{"type":"update","resource":"products","record":{"id":"p1"}}'
    assert httpx.post(setup.hook_url + "/update", content=no_version,
                      headers=signed_headers(good, no_version)).status_code in (400, 422)
    with setup.outlet.Session() as s:
        assert s.get(Product, "p1") is None
