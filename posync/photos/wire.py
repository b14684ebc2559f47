"""What crosses the wire, as pydantic models of HO's two photo APIs, and the one shape posync works with.

v1 (seed 001): ``POST /api/v1/sync/product-photos/`` answers ``photos``, ``deleted_ids``, ``sync_timestamp``,
``total``, ``has_more``, ``next_offset`` (and ``filter``/``store``, unused). Older (seed 000): ``GET
/api/sync/product-photos/`` answers ``{"status": "success", "data": {photos, total, has_more, next_offset}}``.
A malformed answer becomes one ProtocolError at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from posync.errors import ProtocolError

__all__ = ["ManifestPage", "RemotePhoto", "parse_legacy_page", "parse_v1_page"]


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

    photos: list[_Photo]
    deleted_ids: list[str] = []
    sync_timestamp: datetime | None = None
    total: int | None = None
    has_more: bool = False
    next_offset: int | None = None


class _LegacyData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    photos: list[_Photo]
    total: int | None = None
    has_more: bool = False
    next_offset: int | None = None


class _LegacyPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str
    data: _LegacyData


@dataclass(frozen=True, slots=True)
class RemotePhoto:
    """One photo as HO describes it (either API). ``checksum`` is the MD5 of the bytes, lower-case."""

    id: str
    product_id: str
    object_key: str
    filename: str
    size: int
    content_type: str
    checksum: str
    version: int
    is_primary: bool
    sort_order: int
    updated_at: datetime | None
    image_url: str | None
    created_at: datetime | None = None

    def meta(self) -> dict[str, Any]:
        """The metadata columns this photo sets on ``posync_photo``."""
        return {"product_id": self.product_id, "object_key": self.object_key, "filename": self.filename,
                "size": self.size, "content_type": self.content_type, "checksum": self.checksum,
                "version": self.version, "is_primary": self.is_primary, "sort_order": self.sort_order,
                "created_at": self.created_at, "updated_at": self.updated_at, "image_url": self.image_url}


@dataclass(frozen=True, slots=True)
class ManifestPage:
    photos: list[RemotePhoto]
    deleted_ids: list[str] = field(default_factory=list)
    total: int | None = None
    has_more: bool = False
    next_offset: int | None = None
    sync_timestamp: datetime | None = None  # HO's clock (v1 body; the older API: its Date header)


def _photo(p: _Photo) -> RemotePhoto:
    return RemotePhoto(p.id, p.product_id, p.object_key, p.filename, p.size, p.content_type, p.checksum.lower(),
                       p.version, p.is_primary, p.sort_order, p.updated_at, p.image_url, p.created_at)


def parse_v1_page(body: Any) -> ManifestPage:
    try:
        page = _V1Page.model_validate(body)
    except ValidationError as exc:
        raise ProtocolError(f"v1 photo page: unexpected shape ({exc.error_count()} errors)") from exc
    return ManifestPage([_photo(p) for p in page.photos], [str(i) for i in page.deleted_ids], page.total,
                        page.has_more, page.next_offset, page.sync_timestamp)


def parse_legacy_page(body: Any, date_header: datetime | None) -> ManifestPage:
    try:
        page = _LegacyPage.model_validate(body)
    except ValidationError as exc:
        raise ProtocolError(f"photo page: unexpected shape ({exc.error_count()} errors)") from exc
    if page.status != "success":
        raise ProtocolError(f"photo page: status {page.status!r}")
    d = page.data
    return ManifestPage([_photo(p) for p in d.photos], [], d.total, d.has_more, d.next_offset, date_header)
