"""Compatibility: the HO client moved to :mod:`posync.ho` (one interface, two dialects)."""

from posync.ho import ApiKeyAuth, HOClient, JwtAuth, PullPage

__all__ = ["ApiKeyAuth", "HOClient", "JwtAuth", "PullPage"]
