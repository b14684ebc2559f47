"""What crosses the wire, as pydantic models of HO's two photo APIs, and the one shape posync works with.

v1 (seed 001): ``POST /api/v1/sync/product-photos/`` answers ``photos``, ``deleted_ids``, ``sync_timestamp``,
``total``, ``has_more``, ``next_offset`` (and ``filter``/``store``, unused). Older (seed 000): ``GET
/api/sync/product-photos/`` answers ``{"status": "success", "data": {photos, total, has_more, next_offset}}``.
A page that is not a page becomes one ProtocolError at the edge. Each element of ``photos`` is validated on
its own (issue 15): a photo that does not fit (a negative size, a checksum that is not 32 hex digits) or whose
``object_key`` could escape the store (:func:`~posync.stores.base.check_key`, the one rule) becomes a
:class:`RejectedPhoto` beside the good ones, so one bad row fails alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from posync.errors import PhotoConfigError, ProtocolError
from posync.models.photo import INVALID, UNSAFE_KEY, RemotePhoto
from posync.stores.base import check_key

__all__ = ["UNSAFE_KEY", "ManifestPage", "RejectedPhoto", "RemotePhoto", "key_refusal", "parse_legacy_page",
           "parse_v1_page"]

class _Photo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=64)
    product_id: str = Field(min_length=1, max_length=64)
    object_key: str = Field(min_length=1, max_length=500)
    filename: str = Field(default="", max_length=255)
    size: int = Field(ge=0)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    checksum: str = Field(pattern=r"^[0-9a-fA-F]{32}$")
    version: int = 1
    is_primary: bool = False
    sort_order: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    image_url: str | None = None


class _V1Page(BaseModel):
    model_config = ConfigDict(extra="ignore")

    photos: list[Any]  # each element on its own: _photos()
    deleted_ids: list[str] = []
    sync_timestamp: datetime | None = None
    total: int | None = None
    has_more: bool = False
    next_offset: int | None = None


class _LegacyData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    photos: list[Any]
    total: int | None = None
    has_more: bool = False
    next_offset: int | None = None


class _LegacyPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str
    data: _LegacyData


@dataclass(frozen=True, slots=True)
class RejectedPhoto:
    """A listed photo posync refuses. ``photo_id`` is None when the element has no usable id (then it can
    only be counted); ``updated_at`` None when its time does not parse (the checkpoint cannot move then)."""

    position: int  # its index on the page
    photo_id: str | None
    reason: str  # UNSAFE_KEY | "invalid: <fields>"
    detail: str  # what was wrong (an unsafe key is named; no other value is)
    updated_at: datetime | None
    object_key: str | None = None  # its key where it is safe to name (reconcile never removes it), else None


@dataclass(frozen=True, slots=True)
class ManifestPage:
    photos: list[RemotePhoto]
    deleted_ids: list[str] = field(default_factory=list)
    total: int | None = None
    has_more: bool = False
    next_offset: int | None = None
    sync_timestamp: datetime | None = None  # HO's clock (v1 body; the older API: its Date header)
    rejected: list[RejectedPhoto] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many elements HO put on the page (what its offsets and ``total`` count)."""
        return len(self.photos) + len(self.rejected)


_PAGE: TypeAdapter[list[_Photo]] = TypeAdapter(list[_Photo])
_ID: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(min_length=1, max_length=64)])
_WHEN: TypeAdapter[datetime] = TypeAdapter(datetime)


def key_refusal(key: str) -> str | None:
    """Why ``key`` may not name an object in an edge store (check_key's rule), or None when it may."""
    try:
        check_key(key)
    except PhotoConfigError as exc:
        return str(exc)
    return None


def _photos(elements: list[Any]) -> tuple[list[RemotePhoto], list[RejectedPhoto]]:
    photos: list[RemotePhoto] = []
    rejected: list[RejectedPhoto] = []
    try:  # the common case, a page without a bad photo, in one validator call (one a photo was measurably slower)
        valid: list[_Photo | None] = list(_PAGE.validate_python(elements))
    except ValidationError:
        valid = [None] * len(elements)
    for n, (element, p) in enumerate(zip(elements, valid, strict=True)):
        if p is None:
            if not isinstance(element, dict):
                rejected.append(RejectedPhoto(n, None, f"{INVALID}: photo", "not a JSON object", None))
                continue
            try:
                p = _Photo.model_validate(element)
            except ValidationError as exc:
                rejected.append(_invalid(n, element, exc))
                continue
        if (why := key_refusal(p.object_key)) is not None:
            rejected.append(RejectedPhoto(n, p.id, UNSAFE_KEY, why, p.updated_at))
            continue
        photos.append(RemotePhoto(p.id, p.product_id, p.object_key, p.filename, p.size, p.content_type,
                                  p.checksum.lower(), p.version, p.is_primary, p.sort_order, p.updated_at, p.image_url,
                                  p.created_at))
    return photos, rejected


def _invalid(position: int, element: dict[str, Any], exc: ValidationError) -> RejectedPhoto:
    errors = exc.errors(include_url=False, include_input=False)
    fields = sorted({str(e["loc"][0]) if e["loc"] else "photo" for e in errors})
    first = errors[0]
    detail = f"{'.'.join(str(part) for part in first['loc']) or 'photo'}: {first['msg']}"
    key = element.get("object_key")
    return RejectedPhoto(position, _field(_ID, element.get("id")), f"{INVALID}: {', '.join(fields)}", detail,
                         _field(_WHEN, element.get("updated_at")),
                         key if isinstance(key, str) and key_refusal(key) is None else None)


def _field(adapter: TypeAdapter[Any], value: Any) -> Any:
    if value is None:
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _shape(what: str, exc: ValidationError) -> ProtocolError:
    where = sorted({".".join(str(part) for part in e["loc"]) or "body" for e in exc.errors(include_url=False)})
    return ProtocolError(f"{what}: unexpected shape ({exc.error_count()} errors: {', '.join(where[:5])})")


def parse_v1_page(body: Any) -> ManifestPage:
    try:
        page = _V1Page.model_validate(body)
    except ValidationError as exc:
        raise _shape("v1 photo page", exc) from exc
    photos, rejected = _photos(page.photos)
    return ManifestPage(photos, [str(i) for i in page.deleted_ids], page.total, page.has_more, page.next_offset,
                        page.sync_timestamp, rejected)


def parse_legacy_page(body: Any, date_header: datetime | None) -> ManifestPage:
    try:
        page = _LegacyPage.model_validate(body)
    except ValidationError as exc:
        raise _shape("photo page", exc) from exc
    if page.status != "success":
        raise ProtocolError(f"photo page: status {page.status!r}")
    d = page.data
    photos, rejected = _photos(d.photos)
    return ManifestPage(photos, [], d.total, d.has_more, d.next_offset, date_header, rejected)
