"""The receiver's pure core: every refusal, the apply contract, replay, logs without secrets, and a fuzz of
thousands of malformed requests (plus a smaller one over real HTTP) that must never be accepted or 5xx."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from posync.errors import ConfigurationError, InvalidPayloadError, PayloadTooLargeError, StaleWriteError, StorageError
from posync.models.webhook import WebhookReceipt
from posync.webhooks import (
    CloudSignatureVerifier,
    CloudSigner,
    EventType,
    ReceiptStore,
    SourcePolicy,
    StandardWebhookSigner,
    StandardWebhookVerifier,
    Verifier,
    WebhookEvent,
    WebhookReceiver,
    WebhookRequest,
)
from posync.webhooks.asgi import create_asgi_app
from posync.webhooks.receiver import check_content_length
from posync.webhooks.testing import event_body, serve_asgi, signed_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B64 = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CLOUD_SECRET = "cloud-shared-secret-value"
WRONG = "whsec_" + "A" * 32
HO_IP = "203.0.113.10"
SIGNER = StandardWebhookSigner([SECRET])


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    eng = sa.create_engine(sqlite_url)
    SQLModel.metadata.create_all(eng, tables=[WebhookReceipt.__table__])  # type: ignore[attr-defined]
    yield eng
    eng.dispose()


class Recorder:
    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []
        self.fail_with: Exception | None = None

    def __call__(self, event: WebhookEvent) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.events.append(event)


def make_receiver(engine: Engine, apply: Any, sources: SourcePolicy | None = None) -> WebhookReceiver:
    verifiers: list[Verifier] = [StandardWebhookVerifier([SECRET]), CloudSignatureVerifier([CLOUD_SECRET])]
    return WebhookReceiver(verifiers, ReceiptStore(engine), apply=apply,
                           sources=sources or SourcePolicy(["203.0.113.0/24"]), max_body_bytes=4096)


def request(body: bytes, *, kind: str = "update", peer: str = HO_IP, **header_kw: Any) -> WebhookRequest:
    return WebhookRequest(kind, body, signed_headers(SIGNER, body, **header_kw), peer)


def test_valid_update_is_parsed_and_applied_once(engine: Engine) -> None:
    applied = Recorder()
    receiver = make_receiver(engine, applied)
    body = event_body("update", id="p1", version=3, updated_at="2026-01-01T00:00:00+00:00", name="SALMON BOWL")
    req = request(body, message_id="msg_1")
    response = receiver.handle(req)
    assert response.status == 200 and response.payload == {"status": "ok", "message_id": "msg_1",
                                                           "duplicate": False}
    (event,) = applied.events
    assert (event.message_id, event.type, event.resource, event.entity_id, event.version) == (
        "msg_1", EventType.UPDATE, "products", "p1", 3)
    assert event.record["name"] == "SALMON BOWL" and event.received_at.tzinfo is not None
    with pytest.raises(TypeError):
        event.record["name"] = "x"  # type: ignore[index]

    again = receiver.handle(req)  # the same delivery replayed (inside the tolerance)
    assert again.status == 200 and again.payload["duplicate"] is True
    assert len(applied.events) == 1


def test_cloud_signature_scheme_and_delete_with_only_id_and_version(engine: Engine) -> None:
    applied = Recorder()
    receiver = make_receiver(engine, applied)
    body = json.dumps({"type": "delete", "resource": "products", "record": {"id": "p9", "version": 7}}).encode()
    req = WebhookRequest("delete", body, signed_headers(CloudSigner(CLOUD_SECRET), body), HO_IP)
    assert receiver.handle(req).status == 200
    assert receiver.handle(req).payload["duplicate"] is True  # replayed capture: same derived id
    assert [e.type for e in applied.events] == [EventType.DELETE]


@pytest.mark.parametrize(("case", "status", "code"), [
    ("no signature", 401, "INVALID_SIGNATURE"),
    ("wrong secret", 401, "INVALID_SIGNATURE"),
    ("stale", 401, "INVALID_SIGNATURE"),
    ("from the future", 401, "INVALID_SIGNATURE"),
    ("forbidden ip", 403, "FORBIDDEN_SOURCE"),
    ("oversize body", 413, "PAYLOAD_TOO_LARGE"),
    ("oversize content-length", 413, "PAYLOAD_TOO_LARGE"),
    ("bad content-length", 400, "INVALID_PAYLOAD"),
    ("unknown path", 404, "INVALID_PAYLOAD"),
    ("path/body mismatch", 422, "INVALID_PAYLOAD"),
])
def test_refusals(engine: Engine, case: str, status: int, code: str) -> None:
    applied = Recorder()
    receiver = make_receiver(engine, applied)
    body = event_body("update")
    req = request(body)
    now = int(time.time())
    if case == "no signature":
        req = WebhookRequest("update", body, {"content-type": "application/json"}, HO_IP)
    elif case == "wrong secret":
        req = WebhookRequest("update", body, signed_headers(StandardWebhookSigner([WRONG]), body), HO_IP)
    elif case == "stale":
        req = request(body, timestamp=now - 301)
    elif case == "from the future":
        req = request(body, timestamp=now + 301)
    elif case == "forbidden ip":
        req = request(body, peer="198.51.100.1")
    elif case == "oversize body":
        big = event_body("update", pad="x" * 5000)
        req = request(big)
    elif case in ("oversize content-length", "bad content-length"):
        value = "999999" if case.startswith("oversize") else "12abc"
        req = WebhookRequest("update", body, {**signed_headers(SIGNER, body), "Content-Length": value}, HO_IP)
    elif case == "unknown path":
        req = request(body, kind="upsert")
    elif case == "path/body mismatch":
        req = request(body, kind="delete")
    response = receiver.handle(req)
    assert (response.status, response.payload["code"]) == (status, code)
    assert response.payload["status"] == "error" and response.payload["message"]
    assert applied.events == []


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400),
    (b"\xff\xfe{}", 400),
    (b"[1, 2]", 400),
    (b'{"type": "update", "resource": "products", "record": {"id": "p", "version": NaN}}', 400),
    (b"[" * 3000 + b"]" * 3000, 400),
    (json.dumps({"type": "upsert", "resource": "products", "record": {"id": "p", "version": 1}}).encode(), 422),
    (json.dumps({"type": "update", "record": {"id": "p", "version": 1}}).encode(), 422),
    (json.dumps({"type": "update", "resource": "products"}).encode(), 422),
    (json.dumps({"type": "update", "resource": "products", "record": {"version": 1}}).encode(), 422),
    (json.dumps({"type": "update", "resource": "products", "record": {"id": "p"}}).encode(), 422),
    (json.dumps({"type": "update", "resource": "products", "record": {"id": 5, "version": 1}}).encode(), 422),
    (json.dumps({"type": "update", "resource": "products", "record": {"id": "p", "version": True}}).encode(),
     422),
    (json.dumps({"type": "update", "resource": "products", "record": {"id": "p", "version": 2**64}}).encode(),
     422),
    (json.dumps({"type": "update", "resource": "products",
                 "record": {"id": "p", "version": 1, "updated_at": "yesterday"}}).encode(), 422),
])
def test_signed_but_malformed_bodies_are_refused(engine: Engine, body: bytes, status: int) -> None:
    applied = Recorder()
    receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine), apply=applied,
                               max_body_bytes=10_000)
    response = receiver.handle(request(body))
    assert response.status == status and response.payload["code"] == "INVALID_PAYLOAD"
    assert applied.events == []


def test_apply_errors_map_to_422_or_500_and_leave_no_receipt(engine: Engine,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    applied = Recorder()
    receiver = make_receiver(engine, applied)
    req = request(event_body("update"), message_id="msg_err")
    applied.fail_with = StaleWriteError("products", "p1")
    rejected = receiver.handle(req)
    assert (rejected.status, rejected.payload["code"]) == (422, "APPLY_REJECTED")
    assert "products:p1" in rejected.payload["message"]
    applied.fail_with = RuntimeError("boom")
    with caplog.at_level(logging.ERROR, logger="posync.webhooks"):
        crashed = receiver.handle(req)
    assert (crashed.status, crashed.payload["code"]) == (500, "INTERNAL_ERROR")
    assert "boom" not in crashed.payload["message"]
    assert any("failed in apply" in r.getMessage() for r in caplog.records)
    applied.fail_with = None
    assert receiver.handle(req).payload == {"status": "ok", "message_id": "msg_err", "duplicate": False}
    assert len(applied.events) == 1


def test_configuration_is_checked(engine: Engine) -> None:
    verifiers = [StandardWebhookVerifier([SECRET])]
    with pytest.raises(ConfigurationError):
        WebhookReceiver(verifiers, ReceiptStore(engine))
    with pytest.raises(ConfigurationError):
        WebhookReceiver(verifiers, ReceiptStore(engine), apply=Recorder(), apply_in_session=lambda e, s: None)
    with pytest.raises(ConfigurationError):
        WebhookReceiver([], ReceiptStore(engine), apply=Recorder())
    with pytest.raises(ConfigurationError, match="retention"):
        WebhookReceiver(verifiers, ReceiptStore(engine, retention=timedelta(minutes=5)), apply=Recorder())


def test_no_secret_reaches_the_logs(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    applied = Recorder()
    receiver = make_receiver(engine, applied)
    body = event_body("update")
    requests = [
        request(body), request(body, peer="198.51.100.1"), request(body, timestamp=1),
        WebhookRequest("update", body, signed_headers(StandardWebhookSigner([WRONG]), body), HO_IP),
        WebhookRequest("update", b"\xff", signed_headers(CloudSigner(CLOUD_SECRET), b"\xff"), HO_IP),
    ]
    with caplog.at_level(logging.DEBUG):
        for req in requests:
            receiver.handle(req)
        applied.fail_with = RuntimeError("apply crashed")
        receiver.handle(request(body))
    text = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    assert caplog.records
    for secret in (SECRET, SECRET_B64, CLOUD_SECRET):
        assert secret not in text
    assert repr(receiver).count(SECRET_B64) == 0


# ---- fuzz: thousands of malformed requests --------------------------------------------------------------

TYPES = {t.value for t in EventType}
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
valid_record = {"id": "p1", "version": 3, "updated_at": "2026-01-01T00:00:00+00:00", "name": "x"}


@st.composite
def broken_events(draw: st.DrawFn) -> bytes:
    event: dict[str, Any] = {"type": "update", "resource": "products", "record": dict(valid_record)}
    breaker = draw(st.sampled_from(["drop", "type", "resource", "record", "id", "version", "updated_at",
                                    "truncate", "non-utf8", "nan"]))
    junk = draw(json_values)
    if breaker == "drop":
        key = draw(st.sampled_from(["type", "resource", "record", "record.id", "record.version"]))
        (event["record"] if key.startswith("record.") else event).pop(key.removeprefix("record."))
    elif breaker == "type":
        event["type"] = None if isinstance(junk, str) and junk in TYPES else junk
    elif breaker == "resource":
        event["resource"] = draw(st.sampled_from(["", "1abc", "a b", "x" * 200])) if isinstance(junk, str) else junk
    elif breaker == "record":
        event["record"] = junk if not isinstance(junk, dict) else []
    elif breaker == "id":
        event["record"]["id"] = junk if not (isinstance(junk, str) and junk) else ""
    elif breaker == "version":
        event["record"]["version"] = draw(st.sampled_from([-1, 2**63, True, 1.5, "3", None]))
    elif breaker == "updated_at":
        event["record"]["updated_at"] = draw(st.sampled_from(["soon", 12, [], "2026-13-01"]))
    raw = json.dumps(event).encode()
    if breaker == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif breaker == "non-utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + raw[at:]
    elif breaker == "nan":
        raw = raw.replace(b'"version": 3', b'"version": NaN')
    return raw


def _maybe_valid(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("type"), str) and data["type"] in TYPES


@st.composite
def malformed_requests(draw: st.DrawFn) -> WebhookRequest:
    kind = draw(st.sampled_from([*sorted(TYPES) * 6, "", "upsert", "UPDATE", "update/"]))
    mode = draw(st.sampled_from(["none", "garbage", "wrong-secret", "other-body", "stale", "forbidden-ip",
                                 "signed-malformed", "signed-cloud-malformed"]))
    body = draw(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | broken_events())
    peer = HO_IP
    now = int(time.time())
    if mode == "none":
        headers: dict[str, str] = {}
    elif mode == "garbage":
        headers = draw(st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature",
                                                        "x-cloud-signature", "x-cloud-timestamp",
                                                        "content-length", "x-forwarded-for"]), header_text))
    elif mode == "wrong-secret":
        headers = signed_headers(StandardWebhookSigner([WRONG]), body)
    elif mode == "other-body":
        headers = signed_headers(SIGNER, body + b" ")
    elif mode == "stale":
        headers = signed_headers(SIGNER, body, timestamp=now + draw(st.sampled_from([-1, 1])) * 400)
    elif mode == "forbidden-ip":
        headers = signed_headers(SIGNER, event_body("update"))
        body, peer = event_body("update"), draw(st.sampled_from(["198.51.100.1", "::1", "", "junk"]))
    else:  # correctly signed, so the body itself must be what is wrong
        body = draw(broken_events()) if _maybe_valid(body) else body
        signer = SIGNER if mode == "signed-malformed" else CloudSigner(CLOUD_SECRET)
        headers = signed_headers(signer, body)
    return WebhookRequest(kind, body, headers, peer)


def test_fuzz_core_never_accepts_and_never_5xx(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    applied = Recorder()
    receiver = make_receiver(engine, applied)
    statuses: Counter[int] = Counter()

    @settings(max_examples=4000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(req=malformed_requests())
    def run(req: WebhookRequest) -> None:
        response = receiver.handle(req)
        statuses[response.status] += 1
        assert 400 <= response.status < 500, (response, req)
        assert response.payload["status"] == "error"

    run()
    assert applied.events == []
    total = sum(statuses.values())
    assert total >= 3000
    with capsys.disabled():
        print(f"\n[webhook fuzz, core] {total} malformed requests: {dict(sorted(statuses.items()))}; "
              f"accepted 0, 5xx 0")


def test_fuzz_over_real_http_never_accepts_and_never_5xx(engine: Engine,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    applied = Recorder()
    # Over loopback the direct peer is always 127.0.0.1: make it a trusted proxy and carry the fuzzed
    # source address in X-Forwarded-For, so the allowlist is exercised through the real adapter.
    receiver = make_receiver(engine, applied, SourcePolicy(["203.0.113.0/24"], trusted_proxies=["127.0.0.1"]))
    statuses: Counter[int] = Counter()
    with serve_asgi(create_asgi_app(receiver, base_path="/api/v1/webhooks/cloud")) as base, \
            httpx.Client(base_url=base, timeout=10) as client:

        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(req=malformed_requests())
        def run(req: WebhookRequest) -> None:
            # HTTP drops a value's surrounding whitespace (and h11 refuses to send it): strip it client-side
            headers = {k: v.strip() for k, v in req.headers.items()
                       if k not in ("content-length", "x-forwarded-for")}
            headers["x-forwarded-for"] = req.peer or ""
            response = client.post(f"/api/v1/webhooks/cloud/{req.kind}", content=req.body, headers=headers)
            statuses[response.status_code] += 1
            assert 400 <= response.status_code < 500, (response.status_code, response.text)
            assert response.json()["status"] == "error"

        run()
    assert applied.events == []
    total = sum(statuses.values())
    with capsys.disabled():
        print(f"\n[webhook fuzz, HTTP/uvicorn] {total} malformed requests: {dict(sorted(statuses.items()))}; "
              f"accepted 0, 5xx 0")


def test_apply_in_session_commits_receipt_and_apply_together(engine: Engine) -> None:
    marks = sa.Table("t_marks", sa.MetaData(), sa.Column("id", sa.String(50), primary_key=True))
    marks.create(engine)
    calls: list[str] = []

    def apply(event: WebhookEvent, session: Session) -> None:
        calls.append(event.message_id)
        session.execute(marks.insert().values(id=event.entity_id))
        if event.record.get("fail"):
            raise StaleWriteError(event.resource, event.entity_id)

    receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine), apply_in_session=apply)
    assert receiver.handle(request(event_body("update", id="ok"), message_id="m1")).status == 200
    assert receiver.handle(request(event_body("update", id="ok"), message_id="m1")).payload["duplicate"] is True
    failed = receiver.handle(request(event_body("update", id="bad", fail=True), message_id="m2"))
    assert failed.status == 422
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(sa.select(marks.c.id))] == ["ok"]
        table = WebhookReceipt.__table__  # type: ignore[attr-defined]
        receipts = [r[0] for r in conn.execute(sa.select(table.c.message_id))]
    assert receipts == ["m1"] and calls == ["m1", "m2"]


# a database error as SQLAlchemy raises it: its text carries the SQL and the values bound
_SQL = "INSERT INTO t_marks (id, note) VALUES (?, ?)"
_BOUND = "bound-value-4711"
DATABASE_ERRORS: dict[str, Exception] = {
    "sqlalchemy": sa.exc.IntegrityError(_SQL, ("bad", _BOUND), sqlite3.IntegrityError("NOT NULL constraint failed")),
    "sqlalchemy-statement": sa.exc.StatementError("bind failed", _SQL, ("bad", _BOUND),
                                                  TypeError("an object is not an integer")),
    "driver": sqlite3.OperationalError("table t_marks has no column named note"),
    "storage": StorageError("entity.write_remote", "IntegrityError: NOT NULL constraint failed"),
    "overflow": OverflowError("Python int too large to convert to SQLite INTEGER"),
    "type": TypeError("an object is not an integer"),
    "value": ValueError("invalid literal for a column"),
}


@pytest.mark.parametrize("kind", list(DATABASE_ERRORS))
def test_database_and_binding_errors_in_apply_are_422_and_roll_the_receipt_back(
        engine: Engine, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A signed record the outlet's columns cannot hold is the message's fault: 422, never 500 (HO would
    resend it for ever), whatever layer raises it; the receipt rolls back with the apply."""
    marks = sa.Table("t_marks", sa.MetaData(), sa.Column("id", sa.String(50), primary_key=True))
    marks.create(engine)

    def apply(event: WebhookEvent, session: Session) -> None:
        session.execute(marks.insert().values(id=event.entity_id))  # half the work, then the failure
        raise DATABASE_ERRORS[kind]

    receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine), apply_in_session=apply)
    req = request(event_body("update", id="bad"), message_id="m_poison")
    with caplog.at_level(logging.DEBUG, logger="posync.webhooks"):
        first, again = receiver.handle(req), receiver.handle(req)
    for response in (first, again):  # a redelivery is refused the same way
        assert (response.status, response.payload["code"]) == (422, "APPLY_REJECTED")
        message = response.payload["message"]
        assert message.startswith("products:bad could not be stored: ") and len(message) <= 400
        assert "INSERT" not in message and _BOUND not in message and "\n" not in message
    assert SECRET_B64 not in caplog.text
    with engine.connect() as conn:
        assert list(conn.execute(sa.select(marks.c.id))) == []
        table = WebhookReceipt.__table__  # type: ignore[attr-defined]
        assert list(conn.execute(sa.select(table.c.message_id))) == []

    plain = Recorder()  # the apply= mode maps them the same way
    plain.fail_with = DATABASE_ERRORS[kind]
    response = make_receiver(engine, plain).handle(request(event_body("update", id="bad")))
    assert (response.status, response.payload["code"]) == (422, "APPLY_REJECTED")


@pytest.mark.parametrize("value", ["²", "¹²", "1²", "٣", "१२", "\uff11\uff12", "+5", "-1", " 5", "1_0", "0x10", "5, 5"])
def test_content_length_is_plain_ascii_digits_or_400(engine: Engine, value: str) -> None:
    """str.isdigit() is True for "²" (int() then raises) and for other scripts' digits (int() reads "٣" as 3)."""
    with pytest.raises(InvalidPayloadError) as refused:
        check_content_length(value, 4096)
    assert refused.value.status == 400
    body = event_body("update")
    req = WebhookRequest("update", body, {**signed_headers(SIGNER, body), "Content-Length": value}, HO_IP)
    response = make_receiver(engine, Recorder()).handle(req)
    assert (response.status, response.payload["code"]) == (400, "INVALID_PAYLOAD")


def test_content_length_sizes() -> None:
    assert check_content_length(None, 4096) is None and check_content_length("", 4096) is None
    assert check_content_length("0", 4096) == 0 and check_content_length("0004096", 4096) == 4096
    for absurd in ("4097", "9" * 18, "9" * 19, "1" + "0" * 5000):  # never int() a huge string
        with pytest.raises(PayloadTooLargeError):
            check_content_length(absurd, 4096)
