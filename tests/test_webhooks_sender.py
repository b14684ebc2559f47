"""The HO-side sender over real loopback servers: signing each attempt, backoff with jitter, Retry-After,
410, bounded retries, and an end-to-end delivery into a real receiver."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from email.utils import formatdate

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from posync.errors import ConfigurationError
from posync.models.webhook import WebhookReceipt
from posync.retry import parse_retry_after
from posync.webhooks import (
    DeliveryOutcome,
    DeliveryResult,
    ReceiptStore,
    SenderRetryPolicy,
    StandardWebhookSigner,
    StandardWebhookVerifier,
    WebhookEvent,
    WebhookReceiver,
    WebhookSender,
)
from posync.webhooks.asgi import create_asgi_app
from posync.webhooks.testing import serve_asgi

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNER = StandardWebhookSigner([SECRET])
RECORD = {"id": "p1", "version": 2, "updated_at": "2026-01-01T00:00:00+00:00", "price": 42000}


class ScriptedOutlet:
    """A real HTTP endpoint answering from a script, recording (and verifying) what it received."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.verifier = StandardWebhookVerifier([SECRET])

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        self.verifier.verify(body, headers)  # every attempt is validly signed
        self.received.append((headers, body))
        status, extra = self.script.pop(0) if self.script else (200, {})
        return Response(b"{}", status_code=status, headers=extra, media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/v1/webhooks/cloud/{kind}", self.endpoint, methods=["POST"])])


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _sender(client: httpx.Client, sleeps: list[float], **policy: float) -> WebhookSender:
    return WebhookSender(SIGNER, client=client, policy=SenderRetryPolicy(**policy),  # type: ignore[arg-type]
                         sleep=sleeps.append, rng=random.Random(7))


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def _deliver(outlet: ScriptedOutlet, client: httpx.Client, sleeps: list[float],
             **policy: float) -> DeliveryResult:
    with serve_asgi(outlet.app()) as base:
        return _sender(client, sleeps, **policy).deliver(f"{base}/api/v1/webhooks/cloud", "update",
                                                          "products", RECORD, message_id="msg_fixed")


def test_delivered_first_time(client: httpx.Client, sleeps: list[float]) -> None:
    outlet = ScriptedOutlet([])
    result = _deliver(outlet, client, sleeps)
    assert result.delivered and result.attempts == 1 and result.status == 200 and sleeps == []
    headers, body = outlet.received[0]
    assert headers["webhook-id"] == "msg_fixed"
    assert b'"type":"update"' in body and b'"price":42000' in body


def test_503_with_retry_after_is_honoured_and_retries_keep_the_message_id(client: httpx.Client,
                                                                         sleeps: list[float]) -> None:
    outlet = ScriptedOutlet([(503, {"Retry-After": "2"}), (429, {"Retry-After": "3"}), (200, {})])
    result = _deliver(outlet, client, sleeps, initial_delay=0.1)
    assert result.outcome is DeliveryOutcome.DELIVERED and result.attempts == 3
    assert sleeps[0] >= 2 and sleeps[1] >= 3
    assert {h["webhook-id"] for h, _ in outlet.received} == {"msg_fixed"}


def test_410_stops_at_once(client: httpx.Client, sleeps: list[float]) -> None:
    result = _deliver(ScriptedOutlet([(410, {})]), client, sleeps)
    assert (result.outcome, result.attempts, result.status, sleeps) == (DeliveryOutcome.GONE, 1, 410, [])


def test_other_4xx_is_rejected_without_retry(client: httpx.Client, sleeps: list[float]) -> None:
    result = _deliver(ScriptedOutlet([(422, {})]), client, sleeps)
    assert (result.outcome, result.attempts) == (DeliveryOutcome.REJECTED, 1)


def test_retries_are_bounded_with_growing_jittered_backoff(client: httpx.Client, sleeps: list[float]) -> None:
    outlet = ScriptedOutlet([(500, {})] * 10)
    result = _deliver(outlet, client, sleeps, max_attempts=4, initial_delay=1.0, max_delay=3.0)
    assert (result.outcome, result.attempts, result.status) == (DeliveryOutcome.EXHAUSTED, 4, 500)
    assert len(sleeps) == 3 and len(outlet.received) == 4
    for attempt, delay in enumerate(sleeps, start=1):
        base = min(3.0, 2.0 ** (attempt - 1))
        assert base / 2 <= delay <= base


def test_retry_after_beyond_the_cap_hands_back_to_the_caller(client: httpx.Client, sleeps: list[float]) -> None:
    result = _deliver(ScriptedOutlet([(429, {"Retry-After": "3600"})]), client, sleeps)
    assert (result.outcome, result.retry_after, sleeps) == (DeliveryOutcome.EXHAUSTED, 3600.0, [])


def test_unreachable_outlet_is_retried_then_exhausted(client: httpx.Client, sleeps: list[float]) -> None:
    with serve_asgi(ScriptedOutlet([]).app()) as base:
        dead = base  # the port is closed once the server stops
    result = _sender(client, sleeps, max_attempts=3).deliver(f"{dead}/api/v1/webhooks/cloud", "delete",
                                                             "products", {"id": "p1", "version": 3})
    assert (result.outcome, result.attempts, result.status) == (DeliveryOutcome.EXHAUSTED, 3, None)
    assert result.detail == "ConnectError"


def test_real_sleep_short_policy(client: httpx.Client) -> None:
    outlet = ScriptedOutlet([(503, {"Retry-After": "0"}), (200, {})])
    with serve_asgi(outlet.app()) as base:
        started = time.monotonic()
        result = WebhookSender(SIGNER, client=client, policy=SenderRetryPolicy(initial_delay=0.05)).deliver(
            f"{base}/api/v1/webhooks/cloud/", "update", "products", RECORD)
    assert result.delivered and result.attempts == 2 and time.monotonic() - started >= 0.025
    assert result.message_id.startswith("msg_")


def test_end_to_end_into_a_real_receiver(sqlite_url: str) -> None:
    engine: Engine = sa.create_engine(sqlite_url)
    SQLModel.metadata.create_all(engine, tables=[WebhookReceipt.__table__])  # type: ignore[attr-defined]
    applied: list[WebhookEvent] = []
    receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine), apply=applied.append)
    try:
        with serve_asgi(create_asgi_app(receiver, base_path="/api/v1/webhooks/cloud")) as base, \
                WebhookSender(SIGNER) as sender, \
                WebhookSender(StandardWebhookSigner(["whsec_" + "C" * 32])) as impostor:
            url = f"{base}/api/v1/webhooks/cloud"
            first = sender.deliver(url, "update", "products", RECORD, message_id="msg_e2e")
            retried = sender.deliver(url, "update", "products", RECORD, message_id="msg_e2e")
            wrong = impostor.deliver(url, "update", "products", RECORD)
    finally:
        engine.dispose()
    assert first.delivered and retried.delivered and wrong.outcome is DeliveryOutcome.REJECTED
    assert [(e.message_id, e.record["price"]) for e in applied] == [("msg_e2e", 42000)]


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(None, now) is None and parse_retry_after("soon", now) is None
    in_a_minute = parse_retry_after(formatdate(now + 60, usegmt=True), now)
    assert in_a_minute is not None and 58 <= in_a_minute <= 61
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now) == 0.0


@pytest.mark.parametrize("value", ["²", "1²", "٣"])
def test_a_retry_after_of_non_ascii_digits_is_ignored(value: str) -> None:
    """'²'.isdigit() is True and float('²') raises: an outlet's odd header must not crash the sender."""
    assert parse_retry_after(value, time.time()) is None


@given(attempt=st.integers(1, 50), status=st.sampled_from([None, 408, 429, 500, 502, 503, 504]),
       retry_after=st.none() | st.floats(0, 1000), seed=st.integers(0, 2**32))
def test_policy_decisions_are_bounded(attempt: int, status: int | None, retry_after: float | None,
                                      seed: int) -> None:
    policy = SenderRetryPolicy(max_attempts=6, initial_delay=0.5, max_delay=30.0, max_retry_after=300.0)
    decision = policy.decide(attempt, status, retry_after, random.Random(seed))
    if attempt >= 6 or (retry_after is not None and retry_after > 300.0):
        assert decision is None
    else:
        assert decision is not None
        assert 0.25 <= decision.delay <= max(30.0, retry_after or 0.0)
        assert decision.delay >= (retry_after or 0.0)


def test_policy_validation() -> None:
    with pytest.raises(ConfigurationError):
        SenderRetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        SenderRetryPolicy(multiplier=0.5)
    assert SenderRetryPolicy().decide(1, 410) is None and SenderRetryPolicy().decide(1, 401) is None
