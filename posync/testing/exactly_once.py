"""Outlets' pushes and usage uploads, applied exactly once per (outlet, idempotency key).

Each push is one transaction (a :class:`~posync.testing.transactions.Writer`) and set-based: one SELECT
of the batch's idempotency keys, one SELECT of the records the new keys touch (``IN``), then
``executemany`` inserts and updates. A key HO applied before answers ``duplicate`` (same change) or
``IDEMPOTENCY_KEY_REUSED`` (another change) from its stored result; every application is also appended
to ``ho_apply_log``, which tests read to assert exactly-once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from posync.testing.changes import Change, Rejection, State, Validator, canonical_json, decide, validate
from posync.testing.driver_sql import (
    APPLY_LOG_INSERT,
    IDEMPOTENCY_INSERT,
    USAGE_INSERT,
    executemany,
    load_json,
    load_states,
    save_states,
    select_in,
)
from posync.testing.schema import HORecord
from posync.testing.transactions import Writer

__all__ = ["UsageItem", "apply_changes", "apply_usages"]

UsageItem = tuple[str, str, dict[str, Any]]  # (idempotency key, request hash, usage body)


def apply_changes(
    w: Writer, outlet_id: str, items: Sequence[Change | Rejection], validators: dict[str, Validator],
    want_changed: bool,
) -> tuple[list[dict[str, Any]], list[HORecord]]:
    """Apply a push batch; answers (results in request order, changed records in change_seq order, or []
    unless ``want_changed``)."""
    changes = [c for c in items if isinstance(c, Change)]
    stored = _stored_keys(w.conn, outlet_id, list({c.idempotency_key for c in changes}))
    # A repeated key is answered from its stored result: only the other changes need HO's records
    # (a resend of an applied batch, the usual retry, reads none).
    states = load_states(w.conn, {(c.resource, c.entity_id) for c in changes if c.idempotency_key not in stored})
    existing = set(states)
    dirty: dict[tuple[str, str], tuple[State, str | None]] = {}
    results: list[dict[str, Any]] = []
    new_keys: list[tuple[Any, ...]] = []
    log: list[tuple[Any, ...]] = []
    now = w.now
    for item in items:
        if isinstance(item, Rejection):
            results.append(item.result())
            continue
        key = item.idempotency_key
        prior = stored.get(key)
        if prior is not None:
            results.append(_repeat(key, prior, item.request_hash))
            continue
        if validators:
            rejected = validate(item, validators)
            if rejected is not None:
                results.append(rejected.result(key))
                continue
        k = (item.resource, item.entity_id)
        current = states.get(k)
        d = decide(item, current)
        if d.status == "conflict":
            results.append({"idempotency_key": key, "status": "conflict",
                            "current": _current(item.entity_id, current)})
            continue
        seq = None
        if d.changed:
            seq = w.next_seq(item.resource)
            states[k] = new = State(d.version, d.deleted, d.data, now, seq)
            dirty[k] = (new, item.data_json if not d.deleted else canonical_json(d.data))
        result = {"idempotency_key": key, "status": "applied", "cloud_version": d.version}
        results.append(result)
        stored[key] = (item.request_hash, result)  # a repeat in this batch: _repeat re-labels a copy
        new_keys.append((outlet_id, key, item.request_hash, _applied_json(d.version), now))
        log.append((outlet_id, key, item.resource, item.entity_id, seq, now))
    save_states(w.conn, dirty, existing)
    if new_keys:
        executemany(w.conn, IDEMPOTENCY_INSERT, new_keys)
        executemany(w.conn, APPLY_LOG_INSERT, log)
    changed = [HORecord(r, i, s.version, s.data, s.deleted, w.now, s.change_seq)
               for (r, i), (s, _) in dirty.items()] if want_changed else []
    return results, changed


def apply_usages(
    w: Writer, outlet_id: str, items: Sequence[UsageItem | Rejection], validators: dict[str, Validator],
) -> list[dict[str, Any]]:
    """Append usage records; answers results in request order."""
    keys = list({it[0] for it in items if not isinstance(it, Rejection)})
    stored = _stored_keys(w.conn, outlet_id, keys)
    results: list[dict[str, Any]] = []
    rows, new_keys, log = [], [], []
    for it in items:
        if isinstance(it, Rejection):
            results.append(it.result())
            continue
        key, digest, body = it
        prior = stored.get(key)
        if prior is not None:
            results.append(_repeat(key, prior, digest))
            continue
        rejected = validate(Change(key, "usage", key, "create", None, body, digest), validators)
        if rejected is not None:
            results.append(rejected.result(key))
            continue
        results.append({"idempotency_key": key, "status": "applied", "cloud_version": 1})
        stored[key] = (digest, {"status": "applied", "cloud_version": 1})
        rows.append((outlet_id, key, canonical_json(body), w.now))
        new_keys.append((outlet_id, key, digest, _applied_json(1), w.now))
        log.append((outlet_id, key, "usage", key, None, w.now))
    if rows:
        executemany(w.conn, USAGE_INSERT, rows)
        executemany(w.conn, IDEMPOTENCY_INSERT, new_keys)
        executemany(w.conn, APPLY_LOG_INSERT, log)
    return results


def _stored_keys(conn: Connection, outlet_id: str, keys: list[str]) -> dict[str, tuple[str, Any]]:
    rows = select_in(conn, "SELECT idempotency_key, request_hash, result FROM ho_idempotency "
                     "WHERE outlet_id = ? AND idempotency_key", outlet_id, keys)
    return {key: (digest, load_json(result)) for key, digest, result in rows}


def _applied_json(version: int) -> str:
    return f'{{"status":"applied","cloud_version":{int(version)}}}'


def _repeat(key: str, prior: tuple[str, Any], digest: str) -> dict[str, Any]:
    """The answer to a key HO already applied: duplicate if it is the same change, else a rejection."""
    if prior[0] == digest:
        return {"idempotency_key": key, **prior[1], "status": "duplicate"}
    return Rejection("IDEMPOTENCY_KEY_REUSED", "this idempotency key was applied to a different change").result(key)


def _current(entity_id: str, s: State | None) -> dict[str, Any]:
    if s is None:  # HO has no row: answered as a version-0 tombstone
        return {"id": entity_id, "version": 0, "deleted": True, "updated_at": None, "data": None}
    return {"id": entity_id, "version": s.version, "deleted": s.deleted, "updated_at": s.updated_at,
            "data": s.data}
