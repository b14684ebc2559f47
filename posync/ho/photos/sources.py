"""HO's photo APIs as sources of manifest pages and byte requests: v1 (seed 001) and the older one (seed 000).

Both page with ``limit``/``offset``; :mod:`posync.services.photos.service` checkpoints on HO's clock and detects a
shifted pass. v1's bytes come straight from ``image_url`` (HO MinIO): only an http or https URL, and
credentials go only to HO's own origin, never to another host. The older API's bytes come from
``/api/sync/product-photos/<id>/download/`` with the Bearer token, and per-photo results go back to
``/api/sync/product-photos/status/``.

The JSON calls go through :class:`~posync.ho.http.HttpCore`, with its deadline, size limit and errors:

    connection/timeout/5xx/429 -> HOUnavailableError (with Retry-After)   401/403 -> AuthenticationError
    other 4xx -> HOErrorResponse(code)                                   unreadable JSON -> ProtocolError

A 401 renews a JWT once (``JwtAuth``). The byte requests' credentials come from the same auth
(``HttpCore.auth_headers``): one token, one renewal path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote, urljoin, urlsplit

from posync.errors import PhotoTransferError
from posync.ho.http import HttpCore
from posync.ho.photos.wire import ManifestPage, parse_legacy_page, parse_v1_page

__all__ = ["ByteRequest", "LegacySource", "PhotoReport", "PhotoSource", "V1Source"]


@dataclass(frozen=True, slots=True)
class ByteRequest:
    url: str
    authenticated: bool  # whether the request carries HO's credentials (and a 401 may refresh them)


@dataclass(frozen=True, slots=True)
class PhotoReport:
    photo_id: str
    status: str  # "synced" | "failed"
    synced_at: datetime | None
    error: str | None


class PhotoSource(Protocol):
    name: str

    def pages(self, since: datetime | None, page_size: int, offset: int = 0) -> Iterator[ManifestPage]: ...

    def byte_request(self, photo_id: str, image_url: str | None) -> ByteRequest | None:
        """Where the photo's bytes are; None when the manifest names none. Raises PhotoTransferError
        (``unsafe_url``) for a URL that is not http or https."""
        ...

    def report(self, results: Sequence[PhotoReport]) -> int:
        """Tell HO how each photo went; answers how many requests it took (0 when the API has no such call)."""
        ...


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


class _Base:
    def __init__(self, core: HttpCore, *, company_id: str, store_id: str) -> None:
        self.core = core
        self.company_id = company_id
        self.store_id = store_id
        self.requests = 0

    @property
    def base_url(self) -> str:
        return self.core.base_url


class V1Source(_Base):
    name = "v1"
    PATH = "/api/v1/sync/product-photos/"
    _origin: list[str] | None = None

    def pages(self, since: datetime | None, page_size: int, offset: int = 0) -> Iterator[ManifestPage]:
        while True:
            body: dict[str, Any] = {"company_id": self.company_id, "store_id": self.store_id, "limit": page_size,
                                    "offset": offset}
            if since is not None:
                body["updated_since"] = _iso(since)
            self.requests += 1
            page = parse_v1_page(self.core.call("POST", self.PATH, json_body=body))
            yield page
            if not page.has_more or page.next_offset is None or page.next_offset <= offset:
                return
            offset = page.next_offset

    def byte_request(self, photo_id: str, image_url: str | None) -> ByteRequest | None:
        if not image_url:
            return None
        url = image_url
        if not url.startswith(("http://", "https://")):
            url = urljoin(self.base_url, image_url)  # relative to HO; an absolute URL keeps its own scheme
            if (scheme := urlsplit(url).scheme) not in ("http", "https"):  # file://... reads the edge's own files
                raise PhotoTransferError(photo_id, "unsafe_url", f"scheme {scheme or 'none'!r} is not http or https",
                                         retryable=False)
        origin = url.split("/", 3)[:3]
        if self._origin is None:
            self._origin = self.base_url.rstrip("/").split("/", 3)[:3]
        return ByteRequest(url, origin == self._origin and same_origin(url, self.base_url))

    def report(self, results: Sequence[PhotoReport]) -> int:
        return 0  # v1 has no status call


class LegacySource(_Base):
    name = "legacy"
    PATH = "/api/sync/product-photos/"
    REPORT_BATCH = 500

    def pages(self, since: datetime | None, page_size: int, offset: int = 0) -> Iterator[ManifestPage]:
        while True:
            params = {"store_id": self.store_id, "limit": str(page_size), "offset": str(offset)}
            if since is not None:
                params["since"] = _iso(since)
            self.requests += 1
            answer = self.core.answer("GET", self.PATH, params=params)
            page = parse_legacy_page(answer.body, answer.date)
            yield page
            if not page.has_more or page.next_offset is None or page.next_offset <= offset:
                return
            offset = page.next_offset

    def byte_request(self, photo_id: str, image_url: str | None) -> ByteRequest | None:
        path = f"{self.PATH}{quote(photo_id, safe='')}/download/?store_id={quote(self.store_id, safe='')}"
        return ByteRequest(urljoin(self.base_url, path), True)

    def report(self, results: Sequence[PhotoReport]) -> int:
        sent = 0
        for start in range(0, len(results), self.REPORT_BATCH):
            batch = [{"photo_id": r.photo_id, "status": r.status,
                      "synced_at": _iso(r.synced_at) if r.synced_at else None, "error": r.error}
                     for r in results[start:start + self.REPORT_BATCH]]
            self.requests += 1
            self.core.call("POST", f"{self.PATH}status/", json_body={"store_id": self.store_id, "sync_batch": batch})
            sent += 1
        return sent
