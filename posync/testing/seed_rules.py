"""The seed profile's rules as pure functions: read a pull's query, do its paging arithmetic, judge and
summarise a usage upload (docs/seed-profile.md). No HTTP and no database here; :mod:`posync.testing.seed_routes`
is the shell that calls them.

Faithful to seed 004's Django views, naive parts included:

* a resource's required parameters are checked in the order of :data:`REQUIRED`; ``company_id``,
  ``brand_id`` and ``store_id`` filter the records whose data carries that field (a record without it is
  served to every query: the reference HO shares one data set unless a record says otherwise);
* ``limit``/``offset`` go through ``int()`` the way the view does, so a non-integer or a negative one is a
  500 ``INTERNAL_ERROR`` (the view's catch-all), and ``limit=0`` answers an empty page with
  ``has_more`` true while rows remain (the formula, as the seed has it);
* ``has_more = offset + limit < total`` over the *live* count, ``next_offset = offset + limit`` or null.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from posync.testing.changes import Change, Validator, validate
from posync.testing.schema import HORecord, iso

__all__ = [
    "DEFAULT_LIMIT",
    "REQUIRED",
    "Page",
    "PullQuery",
    "SeedError",
    "error_body",
    "page_of",
    "parse_pull",
    "parse_since",
    "seed_record",
    "usage_error",
    "usage_summary",
    "usages_of",
    "version_of",
]

DEFAULT_LIMIT = 100
SCOPE = ("company_id", "brand_id", "store_id")
# Checked in this order; a resource not listed needs what categories need.
REQUIRED: dict[str, tuple[str, ...]] = {
    "categories": ("company_id",),
    "products": ("company_id", "brand_id"),
    "promotions": ("company_id", "store_id"),
}
_MISSING = {"company_id": "MISSING_COMPANY_ID", "brand_id": "MISSING_BRAND_ID", "store_id": "MISSING_STORE_ID"}


class SeedError(Exception):
    """An answer in the seed's ``{"error", "code"}`` shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        super().__init__(message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": message, "code": code}


@dataclass(frozen=True, slots=True)
class PullQuery:
    resource: str
    scope: dict[str, str]  # the given company_id / brand_id / store_id: filters where a record carries it
    since: str | None  # normalised to HO's stored form (UTC ISO), compared with >=
    offset: int
    limit: int


class Page(NamedTuple):
    has_more: bool
    next_offset: int | None


def check_known(params: Mapping[str, str], *, stores: Collection[str] | None,
                companies: Collection[str] | None) -> None:
    """404 for an id HO was told it does not have (only when HO was told its stores / companies)."""
    company, store = params.get("company_id"), params.get("store_id")
    if company and companies is not None and company not in companies:
        raise SeedError(404, "COMPANY_NOT_FOUND", f"Company {company} not found")
    if store and stores is not None and store not in stores:
        raise SeedError(404, "STORE_NOT_FOUND", f"Store {store} not found")


def parse_since(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(raw.replace(" ", "+"))  # a '+' in a query string may arrive as ' '
    except ValueError as exc:
        raise SeedError(400, "INVALID_DATE_FORMAT",
                        "Invalid updated_since format. Use ISO 8601 format.") from exc
    return iso((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC))


def _int(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError as exc:  # the view's int() raises, its catch-all answers 500
        raise SeedError(500, "INTERNAL_ERROR", f"invalid literal for int() with base 10: {raw!r}") from exc
    if n < 0:  # Django: "Negative indexing is not supported."
        raise SeedError(500, "INTERNAL_ERROR", f"Negative indexing is not supported ({name})")
    return n


def parse_pull(resource: str, params: Mapping[str, str], *, stores: Collection[str] | None = None,
               companies: Collection[str] | None = None) -> PullQuery:
    for name in REQUIRED.get(resource, REQUIRED["categories"]):
        if not params.get(name):
            raise SeedError(400, _MISSING[name], f"{name} is required")
    check_known(params, stores=stores, companies=companies)
    since = parse_since(params.get("updated_since"))
    return PullQuery(resource, {k: params[k] for k in SCOPE if params.get(k)}, since,
                     _int(params.get("offset"), "offset", 0), _int(params.get("limit"), "limit", DEFAULT_LIMIT))


def page_of(offset: int, limit: int, total: int) -> Page:
    """``has_more`` and ``next_offset`` from the page HO served and the live count."""
    has_more = offset + limit < total
    return Page(has_more, offset + limit if has_more else None)


def seed_record(rec: HORecord) -> dict[str, Any]:
    """A record as the seed serves it: its data fields, ``id`` and ``updated_at``; never a version."""
    return {**(rec.data or {}), "id": rec.id, "updated_at": rec.updated_at}


def version_of(latest_save: str | None) -> int:
    """Seed 004's "timestamp-based" version: the epoch second of the latest save, 0 with no record."""
    return 0 if latest_save is None else int(datetime.fromisoformat(latest_save).timestamp())


# -- usage upload -----------------------------------------------------------------------------------


def usages_of(payload: Any) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("usages"), list):
        raise SeedError(400, "VALIDATION_ERROR", 'body must be an object with a "usages" list')
    items: list[Any] = payload["usages"]
    return items


def usage_error(raw: Any, validators: Mapping[str, Validator], *, stores: Collection[str] | None = None) -> str | None:
    """Why HO does not process this usage (its per-index ``error``), or ``None``."""
    if not isinstance(raw, dict):
        return "usage must be an object"
    store = raw.get("store_id")
    if stores is not None and isinstance(store, str) and store not in stores:
        return f"Store {store} not found"
    key = raw.get("usage_id")
    label = key if isinstance(key, str) and key else "usage"
    rejected = validate(Change(label, "usage", label, "create", None, raw, ""), dict(validators))
    return None if rejected is None else rejected.reason


def usage_summary(received: int, errors: list[tuple[int, str]]) -> dict[str, Any]:
    return {"received": received, "processed": received - len(errors), "failed": len(errors),
            "errors": [{"index": i, "error": e} for i, e in errors]}
