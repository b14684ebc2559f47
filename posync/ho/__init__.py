"""Head office clients: one interface (``HOClient``), two dialects, one HTTP core.

    posync   docs/protocol.md       batched pushes under idempotency keys, a commit-ordered cursor
    seed     docs/seed-profile.md   the seeds' HO: updated_since + offset pages, one scalar version,
                                    usage uploads answered with a summary, no idempotency

``build_client(settings)`` picks the dialect from ``PosyncSettings.ho_profile``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from posync.ho.auth import ApiKeyAuth, JwtAuth
from posync.ho.base import HOClient, PullPage, Upload, VersionInfo
from posync.ho.http import ClockOffset, HttpCore
from posync.ho.posync_dialect import PosyncHO
from posync.ho.seed_dialect import SeedHO
from posync.ho.wire import PushResult

if TYPE_CHECKING:
    from posync.settings import PosyncSettings

__all__ = [
    "ApiKeyAuth",
    "ClockOffset",
    "HOClient",
    "HttpCore",
    "JwtAuth",
    "PosyncHO",
    "PullPage",
    "PushResult",
    "SeedHO",
    "Upload",
    "VersionInfo",
    "build_client",
]


def _auth(settings: PosyncSettings) -> httpx.Auth:
    if settings.api_key is not None:
        return ApiKeyAuth(settings.api_key, settings.outlet_id)
    assert settings.username and settings.password  # checked by PosyncSettings
    base = settings.ho_url.rstrip("/")
    return JwtAuth(base + settings.token_path, settings.username, settings.password, settings.outlet_id)


def build_client(settings: PosyncSettings, transport: httpx.BaseTransport | None = None) -> HOClient:
    core = HttpCore(settings.ho_url, _auth(settings), timeout=settings.request_timeout,
                    max_response_bytes=settings.max_response_bytes, transport=transport)
    if settings.ho_profile == "seed":
        return SeedHO(core, company_id=settings.company_id, store_id=settings.effective_store_id,
                      brand_id=settings.brand_id, usage_id_field=settings.usage_id_field)
    return PosyncHO(core, outlet_id=settings.outlet_id, company_id=settings.company_id,
                    store_id=settings.effective_store_id, brand_id=settings.brand_id)
