"""The reference HO's push rules as pure functions: parse one pushed change, then decide its outcome.

``parse_change`` turns one JSON item into a :class:`Change` or a :class:`Rejection` (bad shape). ``decide``
takes a change and HO's current state of that record and answers what HO does, without touching a
database; :mod:`posync.testing.store` is the thin shell that loads states, calls it and writes the result.

Rules (docs/protocol.md, "Push"):

* ``create`` of an id HO has (live or tombstone) is a conflict, unless ``base_version`` equals the
  tombstone's version: that re-creates a record the outlet knew was deleted. HO having no row at all
  counts as version 0 (a purged tombstone cannot be told from an id that never existed).
* ``update``/``delete`` whose ``base_version`` differs from HO's version, and any ``update`` of a deleted
  or missing record, is a conflict.
* ``delete`` of a record already deleted (or absent) is applied with the tombstone's version (0 if absent)
  and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = [
    "RESOURCE_RE",
    "Change",
    "Decision",
    "Rejection",
    "State",
    "Validator",
    "canonical_json",
    "decide",
    "parse_change",
    "request_hash",
]

RESOURCE_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
OPS = frozenset({"create", "update", "delete"})
MAX_ID_LEN = 255


class Change(NamedTuple):
    """One pushed change, validated for shape. ``request_hash`` identifies its content for idempotency."""

    idempotency_key: str
    resource: str
    entity_id: str
    op: Literal["create", "update", "delete"]
    base_version: int | None
    data: dict[str, Any] | None
    request_hash: str
    data_json: str | None = None  # ``data`` as canonical JSON (sorted keys), what HO stores


@dataclass(frozen=True, slots=True)
class Rejection:
    """A change HO will not apply. ``retryable=False`` tells the outlet to stop resending it."""

    code: str
    reason: str
    retryable: bool = False
    key: Any = None  # the idempotency key as sent, when the change could not be parsed

    def result(self, key: Any = None) -> dict[str, Any]:
        return {
            "idempotency_key": key if key is not None else self.key,
            "status": "rejected",
            "code": self.code,
            "reason": self.reason,
            "retryable": self.retryable,
        }


# A validator returns None to accept, a reason string (VALIDATION_ERROR, not retryable) or a Rejection.
Validator = Callable[[Change], "Rejection | str | None"]


class State(NamedTuple):  # NamedTuples: a push builds thousands of these, frozen dataclasses cost 5x more
    """HO's current row for one (resource, id)."""

    version: int
    deleted: bool
    data: dict[str, Any] | None
    updated_at: str | None
    change_seq: int


class Decision(NamedTuple):
    status: Literal["applied", "conflict"]
    version: int
    changed: bool = False  # applied and the record must be written with a new change_seq
    deleted: bool = False
    data: dict[str, Any] | None = None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(*parts: Any) -> str:
    """sha256 of the parts' canonical JSON: the same change always hashes the same, whatever its key order."""
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()  # parts: what came in as JSON


def _bad(reason: str, key: Any = None) -> Rejection:
    return Rejection("VALIDATION_ERROR", reason, retryable=False,
                     key=key if isinstance(key, str | int) and not isinstance(key, bool) else None)


def parse_change(raw: Any) -> Change | Rejection:
    if not isinstance(raw, dict):
        return _bad("change must be an object")
    key = raw.get("idempotency_key")
    if not isinstance(key, str) or not key or len(key) > MAX_ID_LEN:
        return _bad("idempotency_key must be a non-empty string of at most 255 characters", key)
    resource = raw.get("resource")
    if not isinstance(resource, str) or not RESOURCE_RE.match(resource):
        return _bad("resource must match [a-z][a-z0-9_-]{0,63}", key)
    entity_id = raw.get("entity_id")
    if not isinstance(entity_id, str) or not entity_id or len(entity_id) > MAX_ID_LEN:
        return _bad("entity_id must be a non-empty string of at most 255 characters", key)
    op = raw.get("op")
    if op not in OPS:
        return _bad("op must be create, update or delete", key)
    base_version = raw.get("base_version")
    if base_version is not None and (
        not isinstance(base_version, int) or isinstance(base_version, bool) or base_version < 0
    ):
        return _bad("base_version must be null or a non-negative integer", key)
    data = raw.get("data")
    if op == "delete":
        data = None
    elif not isinstance(data, dict):
        return _bad(f"data must be an object for {op}", key)
    data_json = None if data is None else canonical_json(data)
    # The hash covers what the change does (not changed_at, which a client may re-stamp on a retry).
    digest = hashlib.sha256(
        f"{resource}\x00{entity_id}\x00{op}\x00{base_version}\x00{data_json}".encode()
    ).hexdigest()
    return Change(key, resource, entity_id, op, base_version, data, digest, data_json)


def decide(change: Change, current: State | None) -> Decision:
    """What HO does with ``change`` given its current row (``None``: HO has no row)."""
    version = current.version if current is not None else 0
    gone = current is None or current.deleted
    if change.op == "create":
        if current is None or (current.deleted and change.base_version == current.version):
            return Decision("applied", version + 1, changed=True, data=change.data)
        return Decision("conflict", version)
    if change.op == "update":
        if gone or change.base_version != version:
            return Decision("conflict", version)
        return Decision("applied", version + 1, changed=True, data=change.data)
    # delete
    if gone:
        return Decision("applied", version)
    if change.base_version != version:
        return Decision("conflict", version)
    assert current is not None
    return Decision("applied", version + 1, changed=True, deleted=True, data=current.data)


def validate(change: Change, validators: dict[str, Validator]) -> Rejection | None:
    """Run the resource's validator, then the catch-all ``"*"`` one."""
    for name in (change.resource, "*"):
        check = validators.get(name)
        if check is None:
            continue
        verdict = check(change)
        if isinstance(verdict, Rejection):
            return verdict
        if verdict:
            return _bad(str(verdict))
    return None
