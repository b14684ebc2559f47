"""The reference HO's push rules as pure functions: parse one pushed change, then decide its outcome.

``parse_change`` turns one JSON item into a :class:`Change` or a :class:`Rejection` (bad shape). ``decide``
takes a change and HO's current state of that record and answers what HO does, without touching a
database; :mod:`posync.testing.exactly_once` is the thin shell that loads states, calls it and writes the result.

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

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Literal, NamedTuple

import orjson

from posync import _json

__all__ = [
    "RESOURCE_RE",
    "Change",
    "Decision",
    "Rejection",
    "State",
    "Validator",
    "canonical_json",
    "compact_json",
    "decide",
    "loads_json",
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


# -- JSON: orjson's speed, the standard library's exact bytes and values -----------------------------
# HO stores canonical JSON and hashes it for idempotency, so its bytes must not change: a key applied
# before an upgrade must still answer "duplicate" after it. orjson writes the same bytes as json.dumps
# for the types below; other values (NaN as null, 1e-05 as 0.00001, datetimes it accepts where the
# stdlib raises) go to the stdlib, as does whatever orjson refuses (ints beyond 64 bits, non-str keys).

_SAME_SCALARS = frozenset({str, int, bool, type(None)})
_MAX_DEPTH = 64  # deeper values go to the stdlib: a bounded walk, and its RecursionError as before


def _orjson_exact(value: Any, depth: int = 0) -> bool:
    """True when orjson writes ``value`` byte for byte as json.dumps(ensure_ascii=False) does."""
    kind = type(value)
    if kind in _SAME_SCALARS:
        return True
    if kind is float:  # finite and not tiny: orjson and repr() agree (NaN fails both comparisons)
        return bool(value == 0.0 or 1e-4 <= abs(value) < math.inf)
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        return False
    if depth >= _MAX_DEPTH:
        return False
    for item in items:  # noqa: SIM110 - a loop: all() over a generator costs 3x, on every pushed change
        if type(item) not in _SAME_SCALARS and not _orjson_exact(item, depth + 1):
            return False
    return True


def canonical_json(value: Any) -> str:
    """Sorted keys, compact, UTF-8 text: what HO stores and hashes."""
    if _orjson_exact(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:  # an int beyond 64 bits, a non-str key, a lone surrogate: the stdlib decides
            pass
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compact_json(value: Any) -> bytes:
    """Compact UTF-8 JSON in insertion order: the bytes of HO's answers."""
    if _orjson_exact(value):
        try:
            return _json.dumps(value)
        except TypeError:
            pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# orjson reads an integer beyond 64 bits as a float, silently; the stdlib keeps it exact. Such a number
# is a run of >= 19 digits right after a JSON delimiter (or a minus sign): translating digits to "0" and
# delimiters to "|" finds one with a substring search, ~2 ns a byte. Runs inside strings (after a space
# or a hyphen) are false alarms that only cost the slower stdlib parse.
_NUMBER_SCAN = bytes(
    ord("0") if b in b"0123456789" else ord("|") if b in b"[,: \t\r\n-" else ord(" ") for b in range(256)
)
_LONG_RUN = b"0" * 19


def loads_json(raw: bytes | str) -> Any:
    """json.loads's result (values and errors), parsed by orjson whenever that gives the same."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw  # orjson rejects lone surrogates
    scan = data.translate(_NUMBER_SCAN)
    if not (scan.startswith(_LONG_RUN) or b"|" + _LONG_RUN in scan):
        try:
            return _json.loads(data)
        except ValueError:  # NaN, Infinity, a BOM, UTF-16...: what the stdlib accepts beyond strict JSON
            pass
    return json.loads(raw)


def request_hash(*parts: Any) -> str:
    """sha256 of the parts' canonical JSON: the same change always hashes the same, whatever its key order."""
    return sha256(canonical_json(list(parts)).encode()).hexdigest()  # parts: what came in as JSON


def _bad(reason: str, key: Any = None) -> Rejection:
    return Rejection("VALIDATION_ERROR", reason, retryable=False,
                     key=key if isinstance(key, str | int) and not isinstance(key, bool) else None)


# Resource names already matched against RESOURCE_RE: a push names a handful, over and over, and a set
# lookup costs a tenth of the regex. Bounded, so a client sending random names cannot grow it.
_RESOURCES_OK: set[str] = set()


def _resource_ok(name: str) -> bool:
    if name in _RESOURCES_OK:
        return True
    if not RESOURCE_RE.match(name):
        return False
    if len(_RESOURCES_OK) < 1024:
        _RESOURCES_OK.add(name)
    return True


def parse_change(raw: Any) -> Change | Rejection:
    # Runs for every pushed change (1,000 per batch): one dict lookup per field, no regex for known resources.
    if not isinstance(raw, dict):
        return _bad("change must be an object")
    get = raw.get
    key = get("idempotency_key")
    if not isinstance(key, str) or not key or len(key) > MAX_ID_LEN:
        return _bad("idempotency_key must be a non-empty string of at most 255 characters", key)
    resource = get("resource")
    if not isinstance(resource, str) or not _resource_ok(resource):
        return _bad("resource must match [a-z][a-z0-9_-]{0,63}", key)
    entity_id = get("entity_id")
    if not isinstance(entity_id, str) or not entity_id or len(entity_id) > MAX_ID_LEN:
        return _bad("entity_id must be a non-empty string of at most 255 characters", key)
    op = get("op")
    if isinstance(op, list | dict) or op not in OPS:  # a JSON list or object is unhashable: no `in` for it
        return _bad("op must be create, update or delete", key)
    base_version = get("base_version")
    if base_version is not None and (
        not isinstance(base_version, int) or isinstance(base_version, bool) or base_version < 0
    ):
        return _bad("base_version must be null or a non-negative integer", key)
    if op == "delete":
        data = data_json = None
    else:
        data = get("data")
        if not isinstance(data, dict):
            return _bad(f"data must be an object for {op}", key)
        data_json = canonical_json(data)
    # The hash covers what the change does (not changed_at, which a client may re-stamp on a retry).
    digest = sha256(f"{resource}\x00{entity_id}\x00{op}\x00{base_version}\x00{data_json}".encode()).hexdigest()
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
