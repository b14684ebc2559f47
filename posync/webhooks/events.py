"""The webhook event HO sends, parsed from already-verified raw bytes.

Body: ``{"type": "update"|"delete"|"conflict", "resource": "products",
"record": {"id": "...", "version": 3, "updated_at": "...", ...fields}}``. A delete record needs only
``id`` and ``version``. Anything else is an :class:`~posync.errors.InvalidPayloadError`: 400 when the bytes
are not a JSON object, 422 when the JSON is well formed but not an event posync accepts.

An HO whose records carry no version (the seed HO, ``versioned=False``) sends a record as its pull pages
do: ``updated_at`` is required (a delete may give ``deleted_at`` instead), from which the apply path derives
the version as the pull does; a ``version`` in the record is dropped (that HO's versions are derived, and
another counter would not compare with them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NoReturn

from posync.errors import InvalidPayloadError

__all__ = ["EventType", "WebhookEvent", "parse_event"]

MAX_ID_LENGTH = 200  # posync_outbox.entity_id is 200 wide
MAX_VERSION = 2**63 - 1  # fits a BIGINT column
_RESOURCE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,99}")


class EventType(StrEnum):
    UPDATE = "update"
    DELETE = "delete"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One verified, parsed webhook. ``record`` is read-only; ``received_at`` is the outlet's UTC clock."""

    message_id: str
    type: EventType
    resource: str
    record: Mapping[str, Any]
    received_at: datetime

    @property
    def entity_id(self) -> str:
        return str(self.record["id"])

    @property
    def version(self) -> int | None:
        """HO's version; None for an HO whose records carry none (parsed with ``versioned=False``)."""
        return None if "version" not in self.record else int(self.record["version"])


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _invalid(message: str) -> NoReturn:
    raise InvalidPayloadError(message, status=422)


def parse_event(body: bytes, *, message_id: str, received_at: datetime,
                expected_type: EventType | None = None, versioned: bool = True) -> WebhookEvent:
    """Parse a verified body. ``expected_type`` is the path's event type; the body must agree with it.
    ``versioned=False``: HO's records carry no version (see the module docstring)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayloadError("body is not UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise InvalidPayloadError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidPayloadError("body must be a JSON object")

    raw_type = data.get("type")
    if not isinstance(raw_type, str) or raw_type not in EventType._value2member_map_:
        _invalid("type must be one of update, delete, conflict")
    event_type = EventType(raw_type)
    if expected_type is not None and event_type is not expected_type:
        _invalid(f"body type {event_type.value!r} does not match the path's {expected_type.value!r}")

    resource = data.get("resource")
    if not isinstance(resource, str) or not _RESOURCE_RE.fullmatch(resource):
        _invalid("resource must be a name such as 'products'")

    record = data.get("record")
    if not isinstance(record, dict):
        _invalid("record must be an object")
    entity_id = record.get("id")
    if not isinstance(entity_id, str) or not entity_id or len(entity_id) > MAX_ID_LENGTH:
        _invalid(f"record.id must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    if versioned:
        version = record.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
            _invalid("record.version must be a non-negative 64-bit integer")
    stamps = ("updated_at",) if versioned or event_type is not EventType.DELETE else ("updated_at", "deleted_at")
    if not versioned and all(record.get(stamp) is None for stamp in stamps):
        _invalid("record.updated_at is required: this HO's records carry no version, and posync derives one "
                 "from updated_at")
    for stamp in stamps:
        if record.get(stamp) is not None:
            try:
                datetime.fromisoformat(record[stamp])
            except (TypeError, ValueError):
                _invalid(f"record.{stamp} must be an ISO 8601 timestamp")
    if not versioned:
        record.pop("version", None)

    return WebhookEvent(message_id=message_id, type=event_type, resource=resource,
                        record=MappingProxyType(record), received_at=received_at)
