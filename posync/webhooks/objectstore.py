"""Object-store (MinIO / S3) bucket notifications: typed events routed to a callback.

MinIO's webhook target POSTs ``{"EventName": "s3:ObjectCreated:Put", "Key": "bucket/key", "Records":
[...S3 event records...]}``. Only ``s3:ObjectCreated:*`` and ``s3:ObjectRemoved:*`` records become
:class:`ObjectStoreEvent`; others are ignored. Object keys in records are URL-encoded (``+`` for a space)
and are decoded here. If MinIO is configured with an ``auth_token``, it arrives as ``Authorization:
Bearer <token>`` and is compared in constant time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus

from posync.errors import InvalidPayloadError, SignatureError
from posync.webhooks.signing import Secret

__all__ = ["ObjectEventKind", "ObjectEventRouter", "ObjectStoreEvent", "parse_minio_notification"]


class ObjectEventKind(StrEnum):
    CREATED = "created"
    REMOVED = "removed"


_PREFIXES = {"s3:ObjectCreated:": ObjectEventKind.CREATED, "s3:ObjectRemoved:": ObjectEventKind.REMOVED}


@dataclass(frozen=True, slots=True)
class ObjectStoreEvent:
    kind: ObjectEventKind
    event_name: str  # e.g. s3:ObjectCreated:Put
    bucket: str
    key: str  # decoded object key, without the bucket
    size: int | None = None
    etag: str | None = None
    event_time: datetime | None = None
    sequencer: str | None = None  # orders events of one key


def _kind(name: object) -> ObjectEventKind | None:
    if isinstance(name, str):
        for prefix, kind in _PREFIXES.items():
            if name.startswith(prefix):
                return kind
    return None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _record(raw: object) -> ObjectStoreEvent | None:
    if not isinstance(raw, dict):
        raise InvalidPayloadError("each record must be an object", status=422)
    kind = _kind(raw.get("eventName"))
    if kind is None:
        return None
    s3 = raw.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise InvalidPayloadError("record.s3 needs bucket and object", status=422)
    name, key = bucket.get("name"), obj.get("key")
    if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
        raise InvalidPayloadError("record.s3 needs bucket.name and object.key", status=422)
    size = obj.get("size")
    etag = obj.get("eTag")
    sequencer = obj.get("sequencer")
    return ObjectStoreEvent(
        kind=kind, event_name=str(raw["eventName"]), bucket=name, key=unquote_plus(key),
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        etag=etag if isinstance(etag, str) else None, event_time=_time(raw.get("eventTime")),
        sequencer=sequencer if isinstance(sequencer, str) else None,
    )


def parse_minio_notification(body: bytes | Mapping[str, Any]) -> list[ObjectStoreEvent]:
    """Created/removed events in a MinIO notification, in record order."""
    if isinstance(body, bytes | bytearray):
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise InvalidPayloadError("notification is not UTF-8 JSON") from None
    else:
        data = body
    if not isinstance(data, Mapping):
        raise InvalidPayloadError("notification must be a JSON object")
    records = data.get("Records")
    if not isinstance(records, list):
        raise InvalidPayloadError("notification has no Records list", status=422)
    return [event for event in map(_record, records) if event is not None]


class ObjectEventRouter:
    """Route created/removed object events (e.g. to photo reconciliation), optionally one bucket/prefix."""

    def __init__(self, on_event: Callable[[ObjectStoreEvent], None], *, bucket: str | None = None,
                 prefix: str = "", auth_token: Secret | None = None) -> None:
        self._on_event = on_event
        self._bucket = bucket
        self._prefix = prefix
        self._token = auth_token

    def check_auth(self, headers: Mapping[str, str]) -> None:
        if self._token is None:
            return
        given = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        given = given.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode("utf-8", "backslashreplace"), self._token.reveal()):
            raise SignatureError("missing or wrong object-store notification token")

    def handle(self, body: bytes, headers: Mapping[str, str] | None = None) -> int:
        """Check the token, parse, and call ``on_event`` for each matching event. Returns how many."""
        self.check_auth(headers or {})
        routed = 0
        for event in parse_minio_notification(body):
            if self._bucket is not None and event.bucket != self._bucket:
                continue
            if not event.key.startswith(self._prefix):
                continue
            self._on_event(event)
            routed += 1
        return routed
