"""The webhook receiver's pure core: request in, response out. The ASGI/WSGI/Django adapters are thin shells.

Order of checks, cheapest and least trusting first: source address (403) -> declared and actual body size
(413) -> path (404) -> signature and timestamp over the raw bytes (401) -> JSON and event shape (400/422) ->
replay (a known message id answers 200 and applies nothing) -> apply.

Two ways to plug the apply path in (give exactly one):

* ``apply_in_session(event, session)``: the receipt is inserted in ``session`` and the apply runs in the
  same transaction, committed together. If apply raises, both roll back and HO's retry applies it again.
  Two concurrent deliveries of one id serialise on the receipt's primary key; the second is a duplicate.
* ``apply(event)``: check the receipt, apply, then record the receipt in a transaction of its own. A crash
  between the two, or two concurrent deliveries, can apply a message twice, which is harmless because
  posync's apply path is idempotent by version.

Errors from apply: a :class:`~posync.errors.WebhookError` answers its own status. A database error
(SQLAlchemy's, the driver's, :class:`~posync.errors.StorageError`) or an ``OverflowError``/``TypeError``/
``ValueError`` (what drivers raise binding a value the column cannot hold) answers 422 ``APPLY_REJECTED``
naming the record and the problem, never the SQL or the values bound: a correctly signed record the
outlet's columns refuse is the message's fault, and a 5xx would have HO redeliver it for ever. The receipt
rolls back with the apply, so a redelivery is refused again. Another :class:`~posync.errors.PosyncError`
answers 422 ``APPLY_REJECTED`` with its message; anything else answers 500 ``INTERNAL_ERROR`` (logged with
its traceback, never with a secret: the receiver holds none in scope).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from posync.errors import (
    ConfigurationError,
    InvalidPayloadError,
    PayloadTooLargeError,
    PosyncError,
    SignatureError,
    StorageError,
    WebhookError,
)
from posync.webhooks.events import EventType, WebhookEvent, parse_event
from posync.webhooks.replay import ReceiptStore
from posync.webhooks.signing import Verifier
from posync.webhooks.source import SourcePolicy

__all__ = [
    "DEFAULT_MAX_BODY",
    "ApplyFn",
    "SessionApplyFn",
    "WebhookReceiver",
    "WebhookRequest",
    "WebhookResponse",
    "aread_limited",
    "read_limited",
]

logger = logging.getLogger("posync.webhooks")

DEFAULT_MAX_BODY = 1024 * 1024
ApplyFn = Callable[[WebhookEvent], None]
SessionApplyFn = Callable[[WebhookEvent, Session], None]


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What an adapter hands the core. ``kind`` is the last path segment (update/delete/conflict)."""

    kind: str
    body: bytes
    headers: Mapping[str, str]
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int
    payload: dict[str, Any] = field(default_factory=dict)

    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode("utf-8")

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def error_response(status: int, code: str, message: str) -> WebhookResponse:
    return WebhookResponse(status, {"status": "error", "code": code, "message": message})


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def check_content_length(value: str | None, limit: int) -> int | None:
    """The declared body size (None when there is none): 400 unless plain ASCII digits, 413 above ``limit``."""
    if value is None or value == "":
        return None
    # str.isdigit() alone also takes "²" (which int() then refuses: a 500) and other scripts' digits
    if not (value.isascii() and value.isdigit()):
        raise InvalidPayloadError("malformed Content-Length")
    significant = value.lstrip("0")
    if len(significant) > 18 or int(significant or "0") > limit:  # never int() a huge string
        raise PayloadTooLargeError(f"body larger than {limit} bytes")
    return int(significant or "0")


def read_limited(chunks: Iterable[bytes], limit: int) -> bytes:
    """Buffer a streamed body, refusing it as soon as it grows past ``limit``."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def aread_limited(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


# What a driver raises binding a value its column cannot hold (an int beyond 64 bits, an object).
_BINDING_ERRORS: tuple[type[Exception], ...] = (OverflowError, TypeError, ValueError)


def _driver_errors(dialect: Dialect) -> tuple[type[Exception], ...]:
    """The DBAPI's root error (``sqlite3.Error``, ``psycopg.Error``), which code on the driver's cursor
    (``posync.repositories.driver``) raises untranslated."""
    error = getattr(getattr(dialect, "dbapi", None), "Error", None)
    return (error,) if isinstance(error, type) and issubclass(error, Exception) else ()


def _reason(exc: Exception) -> str:
    """What the database said, without the SQL or the values bound (SQLAlchemy appends both to its
    messages; the driver's own error, ``orig``, has neither). First line only: PostgreSQL's DETAIL echoes the
    row."""
    if isinstance(exc, StorageError):  # posync's own wording, already without SQL
        text = str(exc)
    else:
        orig = getattr(exc, "orig", None)
        source = orig if isinstance(orig, BaseException) else exc
        text = f"{type(source).__name__}: {source}"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:300]


class WebhookReceiver:
    """Verifies, parses, de-duplicates and applies HO webhooks. Framework-free; see the module docstring."""

    def __init__(self, verifiers: Sequence[Verifier], receipts: ReceiptStore, *,
                 apply: ApplyFn | None = None, apply_in_session: SessionApplyFn | None = None,
                 sources: SourcePolicy | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
                 clock: Callable[[], float] = time.time, versioned: bool = True) -> None:
        """``versioned=False``: HO's records carry no version (the seed HO); each event's record needs an
        ``updated_at`` instead (``posync.webhooks.events``)."""
        if (apply is None) == (apply_in_session is None):
            raise ConfigurationError("WebhookReceiver needs exactly one of apply= or apply_in_session=")
        if not verifiers:
            raise ConfigurationError("WebhookReceiver needs at least one signature verifier")
        if max_body_bytes <= 0:
            raise ConfigurationError("max_body_bytes must be positive")
        widest = max(v.tolerance for v in verifiers)
        if receipts.retention.total_seconds() <= 2 * widest:
            raise ConfigurationError("receipt retention must exceed the signature tolerance window")
        self._verifiers = tuple(verifiers)
        self._receipts = receipts
        self._apply = apply
        self._apply_in_session = apply_in_session
        self._rejected: tuple[type[Exception], ...] = (StorageError, SQLAlchemyError,
                                                       *_driver_errors(receipts.engine.dialect), *_BINDING_ERRORS)
        self._sources = sources
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._versioned = versioned

    # -- the two halves adapters call -------------------------------------------------------------------

    def precheck(self, peer: str | None, headers: Mapping[str, str]) -> None:
        """Checks that need no body: source address and declared size. Raises a WebhookError."""
        h = _lower(headers)
        if self._sources is not None:
            self._sources.check(peer, h.get("x-forwarded-for"))
        check_content_length(h.get("content-length"), self.max_body_bytes)

    def handle(self, request: WebhookRequest) -> WebhookResponse:
        """Everything, body included. Never raises; a client's mistake is never a 5xx."""
        message_id: str | None = None
        try:
            self.precheck(request.peer, request.headers)
            if len(request.body) > self.max_body_bytes:
                raise PayloadTooLargeError(f"body larger than {self.max_body_bytes} bytes")
            if request.kind not in EventType._value2member_map_:
                raise InvalidPayloadError("unknown webhook path", status=404)
            h = _lower(request.headers)
            verified = self._select(h).verify(request.body, h)
            message_id = verified.message_id
            event = parse_event(request.body, message_id=message_id, expected_type=EventType(request.kind),
                                received_at=datetime.fromtimestamp(self._clock(), UTC),
                                versioned=self._versioned)
        except WebhookError as exc:
            return self.refuse(exc, request.peer, message_id)
        return self._dispatch(event, request.peer)

    def refuse(self, exc: WebhookError, peer: str | None, message_id: str | None = None) -> WebhookResponse:
        logger.info("webhook %s refused from %s: %d %s: %s", message_id or "-", peer, exc.status, exc.code,
                    exc.message)
        return error_response(exc.status, exc.code, exc.message)

    # -- internals --------------------------------------------------------------------------------------

    def _select(self, headers: Mapping[str, str]) -> Verifier:
        for verifier in self._verifiers:
            if verifier.signature_header in headers:
                return verifier
        raise SignatureError("missing webhook signature")

    def _dispatch(self, event: WebhookEvent, peer: str | None) -> WebhookResponse:
        try:
            duplicate = self._apply_once(event)
        except WebhookError as exc:
            return self.refuse(exc, peer, event.message_id)
        except self._rejected as exc:  # the record does not fit the outlet's columns: a 5xx would be resent
            message = f"{event.resource}:{event.entity_id} could not be stored: {_reason(exc)}"
            logger.warning("webhook %s (%s) rejected by apply: %s", event.message_id, event.type.value,
                           message, exc_info=logger.isEnabledFor(logging.DEBUG))
            return error_response(422, "APPLY_REJECTED", message)
        except PosyncError as exc:
            logger.warning("webhook %s (%s %s) rejected by apply: %s", event.message_id, event.type.value,
                           event.resource, exc)
            return error_response(422, "APPLY_REJECTED", str(exc))
        except Exception:
            logger.exception("webhook %s (%s %s) failed in apply", event.message_id, event.type.value,
                             event.resource)
            return error_response(500, "INTERNAL_ERROR", "the outlet could not apply this webhook")
        if duplicate:
            logger.info("webhook %s is a replay; acknowledged, not applied again", event.message_id)
        return WebhookResponse(200, {"status": "ok", "message_id": event.message_id, "duplicate": duplicate})

    def _apply_once(self, event: WebhookEvent) -> bool:
        """Apply unless already received. Returns True for a duplicate."""
        receipts = self._receipts
        if self._apply_in_session is not None:
            with receipts.session() as session, session.begin():
                if not receipts.record(session, event.message_id, event.type.value, event.received_at):
                    return True
                self._apply_in_session(event, session)
            return False
        assert self._apply is not None
        with receipts.session() as session:
            if receipts.is_recorded(session, event.message_id):
                return True
        self._apply(event)
        with receipts.session() as session, session.begin():
            receipts.record(session, event.message_id, event.type.value, event.received_at)
        return False
