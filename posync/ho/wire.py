"""HO's answers as pydantic models of the wire format, one per answer shape, checked at the boundary.

A malformed answer is one :class:`~posync.errors.ProtocolError` here, never a ``KeyError`` three layers
down. Records inside a page are checked with a plain loop (they arrive a thousand at a time); their
values are converted per column later (``posync.codec``), which fails the page the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError

from posync.errors import ProtocolError
from posync.models.enums import PushOutcome

__all__ = [
    "PushResult",
    "SeedUploadSummary",
    "check_records",
    "parse",
    "parse_push_results",
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)


def parse(model: type[Any], body: Any, what: str) -> Any:
    """``body`` as ``model``, or a ProtocolError that says what was wrong (never the values)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
        raise ProtocolError(f"{what}: unexpected answer ({problems})") from None


# -- push results (posync's protocol, and upload answers in that shape) ----------------------------------


class Current(_Wire):
    """HO's record in a push ``conflict`` result."""

    id: StrictStr | StrictInt | None = None
    version: StrictInt
    deleted: StrictBool = False
    updated_at: StrictStr | None = None
    data: dict[str, Any] | None = None


class PushResult(_Wire):
    """One change's answer, normalised: ``invalid`` stands for an answer posync cannot act on (it counts
    as a failed attempt of that change, so a broken answer can never leave a change in flight for ever)."""

    idempotency_key: StrictStr | None = None
    status: PushOutcome
    cloud_version: StrictInt | None = None
    current: Current | None = None
    code: str | None = None
    reason: str | None = None
    retryable: bool = False


class _Results(_Wire):
    results: list[Any]


def _result(raw: Any, needs_version: bool) -> PushResult:
    if not isinstance(raw, dict):
        return PushResult(status=PushOutcome.INVALID, reason="HO's answer to this change is not an object")
    key = raw.get("idempotency_key") if isinstance(raw.get("idempotency_key"), str) else None
    try:
        result = PushResult.model_validate(raw)
    except ValidationError as exc:
        where = ".".join(map(str, exc.errors()[0]["loc"])) or "result"
        return PushResult(idempotency_key=key, status=PushOutcome.INVALID,
                          reason=f"HO's answer to this change is malformed ({where}: {exc.errors()[0]['msg']})")
    status = result.status
    if status in (PushOutcome.APPLIED, PushOutcome.DUPLICATE) and needs_version and result.cloud_version is None:
        return PushResult(idempotency_key=key, status=PushOutcome.INVALID,
                          reason=f"HO answered {status} without a version")
    if status == PushOutcome.CONFLICT and result.current is None:
        return PushResult(idempotency_key=key, status=PushOutcome.INVALID,
                          reason="HO answered conflict without its record")
    return result


def parse_push_results(body: Any, keys: list[str], what: str, *, needs_version: bool = True) -> list[PushResult]:
    """The ``results`` of a push or upload, one per sent change in the order sent (matched by key when HO
    echoes keys, else by position)."""
    answer = parse(_Results, body, what)
    if len(answer.results) != len(keys):
        raise ProtocolError(f"{what}: expected {len(keys)} results, got {len(answer.results)}")
    results = [_result(raw, needs_version) for raw in answer.results]
    by_key = {r.idempotency_key: r for r in results if r.idempotency_key is not None}
    if len(by_key) == len(keys) and set(by_key) == set(keys):
        return [by_key[k] for k in keys]
    return [r.model_copy(update={"idempotency_key": k}) for r, k in zip(results, keys, strict=True)]


# -- the seed HO's usage answer (seed 004: "error handling per usage record") --------------------------------


class _IndexError(_Wire):
    index: StrictInt
    error: Any = None


class SeedUploadSummary(_Wire):
    received: StrictInt | None = None
    processed: StrictInt | None = None
    failed: StrictInt | None = None
    errors: list[_IndexError] = []


# -- pages ---------------------------------------------------------------------------------------------------


def check_records(records: Any, what: str, *, deleted: bool = False) -> list[dict[str, Any]]:
    """Each record is an object with an id (text or integer), an integer ``version`` or none, and
    ``updated_at`` text or none."""
    if not isinstance(records, list):
        raise ProtocolError(f"{what}: the records are not a list")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ProtocolError(f"{what}: record {i} is not an object")
        rid = record.get("id")
        if rid is None or isinstance(rid, (bool, float, dict, list)) or rid == "":
            raise ProtocolError(f"{what}: record {i} has no usable id")
        version = record.get("version")
        if version is not None and (type(version) is not int or version < 0):
            raise ProtocolError(f"{what}: record {str(rid)[:60]!r} has a version that is not a whole number")
        stamp = record.get("updated_at", record.get("deleted_at") if deleted else None)
        if stamp is not None and not isinstance(stamp, str):
            raise ProtocolError(f"{what}: record {str(rid)[:60]!r} has an updated_at that is not text")
    return records


class CursorPage(_Wire):
    """A page of posync's protocol: the records under the resource's name (or ``records``)."""

    deleted: list[dict[str, Any]] | None = None
    deleted_ids: list[StrictStr | StrictInt] | None = None
    next_cursor: StrictStr | None = None
    has_more: StrictBool = False
    next_offset: StrictInt | None = None
    sync_timestamp: StrictStr | None = None
    total: StrictInt | None = None


class OffsetPage(_Wire):
    """A page of the seed HO (seed 004 / 001): ``updated_since`` + ``offset`` paging."""

    deleted_ids: list[StrictStr | StrictInt] = []
    sync_timestamp: StrictStr | None = None
    total: StrictInt | None = None
    has_more: StrictBool = False
    next_offset: StrictInt | None = None


class PosyncVersion(_Wire):
    version: StrictInt | None = None
    resources: dict[str, StrictInt] | None = None
    timestamp: StrictStr | None = None


class SeedVersion(_Wire):
    version: StrictInt | float | StrictStr
    timestamp: StrictStr | None = None


class Token(_Wire):
    access: StrictStr
    refresh: StrictStr | None = None
