"""What the operator page shows, shaped for its templates: pure functions, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["FieldRow", "age", "conflict_rows", "merged_record", "show_value", "when"]


def when(value: Any) -> str:
    """An ISO-8601 time as 'YYYY-MM-DD HH:MM:SS UTC' (or 'never')."""
    if not value:
        return "never"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: Any) -> str:
    """A duration in words an operator reads at a glance: '42 s', '5 min', '3 h 10 min', '2 d 4 h'."""
    if seconds is None:
        return "none"
    s = max(0, int(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 >= 60 else "")
    return f"{s // 86400} d {s % 86400 // 3600} h"


def show_value(value: Any) -> str:
    """A field's value as text (the template escapes it)."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class FieldRow:
    name: str
    local: str
    remote: str
    in_local: bool
    in_remote: bool
    differs: bool


def conflict_rows(local: dict[str, Any] | None, remote: dict[str, Any] | None) -> list[FieldRow]:
    """Field by field, local beside HO's, in the local record's order then HO's extra fields."""
    local, remote = local or {}, remote or {}
    names = [*local, *(k for k in remote if k not in local)]
    return [FieldRow(name, show_value(local.get(name)), show_value(remote.get(name)), name in local,
                     name in remote, name not in local or name not in remote or local[name] != remote[name])
            for name in names]


def merged_record(local: dict[str, Any] | None, remote: dict[str, Any] | None,
                  picks: dict[str, str]) -> dict[str, Any]:
    """The merge an operator picked: each differing field from the side chosen (``picks``: field ->
    'local' | 'remote'); equal fields as they are. Raises ValueError on a pick that does not fit."""
    if local is None or remote is None:
        raise ValueError("a merge needs both sides: one of them is deleted; choose local or HO's version")
    rows = {row.name: row for row in conflict_rows(local, remote)}
    for name, side in picks.items():
        if name not in rows:
            raise ValueError(f"unknown field {name!r}")
        if side not in ("local", "remote"):
            raise ValueError(f"field {name!r}: pick 'local' or 'remote'")
    merged: dict[str, Any] = {}
    for name in rows:
        side = picks.get(name, "local")
        source = local if side == "local" else remote
        if name in source:
            merged[name] = source[name]
    return merged
