"""HO's photo APIs (v1 and the older one) as sources of manifest pages and byte requests."""

from posync.ho.photos.sources import ByteRequest, LegacySource, PhotoReport, PhotoSource, V1Source

__all__ = ["ByteRequest", "LegacySource", "PhotoReport", "PhotoSource", "V1Source"]
