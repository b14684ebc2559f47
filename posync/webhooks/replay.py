"""Replay protection: which webhook message ids the outlet has already handled, in its own database.

Rows live in ``posync_webhook_receipt`` (:class:`posync.models.webhook.WebhookReceipt`). ``record`` is an
``INSERT ... ON CONFLICT DO NOTHING`` in the caller's session, so it can share a transaction with the apply:
two deliveries of one id racing each other serialise on the primary key, and the loser sees "already
recorded". posync takes the host's engine and never disposes of it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from posync.errors import ConfigurationError
from posync.models.webhook import WebhookReceipt

__all__ = ["DEFAULT_RETENTION", "ReceiptStore"]

# Standard Webhooks senders retry over one to two days; keep receipts comfortably longer than that.
DEFAULT_RETENTION = timedelta(days=3)

_TABLE = cast(sa.Table, WebhookReceipt.__table__)  # type: ignore[attr-defined]


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("receipt timestamps must be timezone-aware")
    return moment.astimezone(UTC)


class ReceiptStore:
    """Receipts of handled webhook messages in the outlet database (the host's ``engine``)."""

    def __init__(self, engine: Engine, *, retention: timedelta = DEFAULT_RETENTION) -> None:
        if retention <= timedelta(0):
            raise ConfigurationError("webhook receipt retention must be positive")
        self.engine = engine
        self.retention = retention
        # Built once: constructing a statement costs more than executing it on SQLite.
        self._exists = sa.select(_TABLE.c.message_id).where(_TABLE.c.message_id == sa.bindparam("message_id"))
        self._insert: sa.Executable | None = None
        dialect = engine.dialect.name
        if dialect in ("postgresql", "sqlite"):
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            # RETURNING rather than rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING
            self._insert = (insert(_TABLE).on_conflict_do_nothing(index_elements=["message_id"])
                            .returning(_TABLE.c.message_id))

    def session(self) -> Session:
        return Session(self.engine)

    def is_recorded(self, session: Session, message_id: str) -> bool:
        return session.execute(self._exists, {"message_id": message_id}).first() is not None

    def record(self, session: Session, message_id: str, event_type: str, received_at: datetime) -> bool:
        """Record a receipt in ``session``'s transaction, uncommitted. False if the id was already there."""
        values: dict[str, Any] = {"message_id": message_id, "event_type": event_type,
                                  "received_at": _utc(received_at)}
        if self._insert is not None:
            return session.execute(self._insert, values).first() is not None
        try:  # any other backend: a savepoint keeps the outer transaction usable after a duplicate
            with session.begin_nested():
                session.execute(sa.insert(_TABLE), values)
        except IntegrityError:
            return False
        return True

    def purge(self, *, now: datetime | None = None) -> int:
        """Delete receipts older than the retention window, in a transaction of its own. Returns the count."""
        cutoff = _utc(now or datetime.now(UTC)) - self.retention
        with Session(self.engine) as session, session.begin():
            result = cast(CursorResult[Any],
                          session.execute(sa.delete(_TABLE).where(_TABLE.c.received_at < cutoff)))
            return result.rowcount

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"ReceiptStore({url}, retention={self.retention})"
