"""What the ``posync`` commands print: a table for people (rich), or one compact JSON document for scripts
(``--json``). Every command prints through here, so the two shapes stay the same everywhere.

JSON keys are sorted and always present (a missing value is ``null``), so a script can rely on them. Tables
show one line per row: long cells are cut with an ellipsis (``--json`` has everything).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

__all__ = ["Column", "JsonOption", "cell", "console", "counts", "print_fields", "print_json", "print_rows"]

JsonOption = typer.Option(False, "--json", help="one JSON document (sorted keys) instead of a table, for scripts")

# (key in the row, heading); the heading defaults to the key
Column = str | tuple[str, str]
MAX_CELL = 60  # characters a table cell shows
MIN_KEPT = 24  # characters a column other than the last keeps on a narrow terminal


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr). Piped, it is wide enough that a row stays on one line, and plain
    (rich drops colour when the output is not a terminal)."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, width=int(os.environ.get("COLUMNS", "160")))
    return out


def print_json(value: Any) -> None:
    """One compact JSON document on one line, sorted keys; datetimes as ISO-8601."""
    typer.echo(json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    return str(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def cell(value: Any, limit: int | None = MAX_CELL) -> str:
    """A value as a short cell: times to the second in UTC, nothing for None, text cut to ``limit``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.6g}"  # 1e+154, not 155 digits
    if isinstance(value, datetime):
        return _utc(value).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:  # an ISO-8601 time, as the management API gives them
            return cell(datetime.fromisoformat(value))
        except ValueError:
            pass
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def counts(values: Mapping[str, Any] | None) -> str:
    """A small mapping on one line, in its order: ``synced 4, pending 0, failed 1``."""
    return ", ".join(f"{key.replace('_', ' ')} {cell(value)}" for key, value in (values or {}).items())


def print_rows(rows: Sequence[Mapping[str, Any]], columns: Iterable[Column], *, title: str | None = None,
               empty: str = "nothing") -> None:
    """A table of ``rows``, one line each, with these columns."""
    out = console()
    if not rows:
        out.print(f"{title}: {empty}" if title else empty)
        return
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    heads = [column if isinstance(column, tuple) else (column, column) for column in columns]
    cells = [[cell(row.get(key)) for key, _ in heads] for row in rows]
    for n, (_, heading) in enumerate(heads):
        # on a narrow terminal the last column (an error, a detail) gives way first
        wide = max(len(heading), *(len(line[n]) for line in cells))
        table.add_column(heading, no_wrap=True, overflow="ellipsis",
                         min_width=None if n == len(heads) - 1 else min(wide, MIN_KEPT))
    for line in cells:
        table.add_row(*line)
    out.print(table)


def print_fields(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """A two-column table: a name and its value per line."""
    table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left", pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in pairs:
        table.add_row(name, cell(value, limit=None))
    console().print(table)
