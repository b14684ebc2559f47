"""Replay protection in the outlet database, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from posync.errors import ConfigurationError
from posync.models.webhook import WebhookReceipt
from posync.webhooks import (
    DEFAULT_RETENTION,
    ReceiptStore,
    StandardWebhookSigner,
    StandardWebhookVerifier,
    WebhookEvent,
    WebhookReceiver,
    WebhookRequest,
)
from posync.webhooks.testing import event_body, signed_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNER = StandardWebhookSigner([SECRET])


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = sa.create_engine(db_url, connect_args={"timeout": 30} if db_url.startswith("sqlite") else {})
    SQLModel.metadata.create_all(eng, tables=[WebhookReceipt.__table__])  # type: ignore[attr-defined]
    yield eng
    eng.dispose()


def _ids(engine: Engine) -> list[str]:
    with Session(engine) as session:
        table = WebhookReceipt.__table__  # type: ignore[attr-defined]
        return sorted(session.execute(sa.select(table.c.message_id)).scalars())


def test_record_is_insert_once(engine: Engine) -> None:
    store = ReceiptStore(engine)
    now = datetime.now(UTC)
    with store.session() as session, session.begin():
        assert not store.is_recorded(session, "m1")
        assert store.record(session, "m1", "update", now) is True
        assert store.record(session, "m1", "update", now) is False  # same transaction, still usable after
        assert store.record(session, "m2", "delete", now) is True
    with store.session() as session, session.begin():
        assert store.is_recorded(session, "m1")
        assert store.record(session, "m1", "update", now) is False
    with store.session() as session:
        row = session.get(WebhookReceipt, "m2")
        assert row is not None and row.event_type == "delete"
        stored = row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=UTC)
        assert abs(stored - now) < timedelta(seconds=1)


def test_an_uncommitted_receipt_rolls_back(engine: Engine) -> None:
    store = ReceiptStore(engine)
    with store.session() as session:
        session.begin()
        store.record(session, "m1", "update", datetime.now(UTC))
        session.rollback()
    assert _ids(engine) == []


def test_purge_removes_only_receipts_older_than_retention(engine: Engine) -> None:
    assert timedelta(days=3) <= DEFAULT_RETENTION
    store = ReceiptStore(engine)
    now = datetime.now(UTC)
    with store.session() as session, session.begin():
        store.record(session, "old", "update", now - timedelta(days=4))
        store.record(session, "edge", "update", now - timedelta(days=2, hours=23))
        store.record(session, "new", "update", now)
    assert store.purge(now=now) == 1
    assert _ids(engine) == ["edge", "new"]
    assert store.purge(now=now + timedelta(days=10)) == 2
    with pytest.raises(ConfigurationError):
        ReceiptStore(engine, retention=timedelta(0))


def test_receiver_replay_is_acknowledged_and_not_applied(engine: Engine) -> None:
    applied: list[str] = []
    receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine),
                               apply=lambda e: applied.append(e.message_id))
    body = event_body("update", id="p1", version=2)
    req = WebhookRequest("update", body, signed_headers(SIGNER, body, message_id="msg_a"), "127.0.0.1")
    # HO retries with a fresh timestamp and the same id: still a duplicate
    retry_headers = signed_headers(SIGNER, body, message_id="msg_a", timestamp=int(time.time()) + 5)
    retry = WebhookRequest("update", body, retry_headers, "127.0.0.1")
    results = [receiver.handle(r).payload for r in (req, req, retry)]
    assert [r["duplicate"] for r in results] == [False, True, True]
    assert applied == ["msg_a"] and _ids(engine) == ["msg_a"]


def test_concurrent_deliveries_of_one_id_apply_once(engine: Engine) -> None:
    """Two deliveries race; the receipt's primary key serialises them inside the apply transaction."""
    applied: list[str] = []
    lock = threading.Lock()

    def apply(event: WebhookEvent, session: Session) -> None:
        time.sleep(0.2)  # hold the transaction open so the deliveries really overlap
        with lock:
            applied.append(event.message_id)

    receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine), apply_in_session=apply)
    body = event_body("update", id="p1", version=2)
    req = WebhookRequest("update", body, signed_headers(SIGNER, body, message_id="msg_race"), "127.0.0.1")
    statuses: list[tuple[int, bool]] = []

    def deliver() -> None:
        response = receiver.handle(req)
        with lock:
            statuses.append((response.status, bool(response.payload.get("duplicate"))))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert applied == ["msg_race"]
    assert sorted(statuses) == [(200, False)] + [(200, True)] * 3
