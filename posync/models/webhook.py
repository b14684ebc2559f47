"""Receipts of webhook messages already handled: the durable half of replay protection.

One row per message id. A message id seen again is acknowledged (2xx) and not applied again. Rows older
than the retention window (default 3 days: Standard Webhooks senders retry for one to two days) are purged
by :meth:`posync.webhooks.ReceiptStore.purge`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime
from sqlmodel import Field

from posync.models.base import PosyncModel

__all__ = ["WebhookReceipt"]


class WebhookReceipt(PosyncModel, table=True):
    __tablename__ = "posync_webhook_receipt"

    message_id: str = Field(primary_key=True, max_length=255)
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    event_type: str = Field(max_length=16, nullable=False)
