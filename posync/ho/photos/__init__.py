"""HO's photo APIs (v1 and the older one) over httpx, and the credentials the byte engine reuses."""

from posync.ho.photos.http import AuthHeaders, request_json
from posync.ho.photos.sources import ByteRequest, LegacySource, PhotoReport, PhotoSource, V1Source

__all__ = ["AuthHeaders", "ByteRequest", "LegacySource", "PhotoReport", "PhotoSource", "V1Source", "request_json"]
