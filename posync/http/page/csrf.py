"""CSRF for the operator page: a signed double-submit token.

The page sets a cookie holding ``nonce.signature`` (HMAC-SHA256 of the nonce) and puts the same value in
every form; a POST passes only when the cookie's signature is good and the form carries the same value. A
page on another site can neither read the cookie (same-origin policy) nor mint one (no key), so it cannot
forge the pair. The key must be the same in every worker process of the host: it is the host's
``csrf_secret`` when given, else derived (HMAC, one-way) from the HO credentials in posync's settings,
which every worker of an outlet shares by construction; the credentials cannot be read back from it."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from posync.settings import PosyncSettings

__all__ = ["COOKIE", "FIELD", "CsrfTokens", "key_from_settings"]

COOKIE = "posync_csrf"
FIELD = "csrf_token"
_LABEL = b"posync operator page csrf v1"


def key_from_settings(settings: PosyncSettings) -> bytes:
    if settings.api_key is not None:
        material = "api_key:" + settings.api_key.get_secret_value()
    else:
        password = settings.password.get_secret_value() if settings.password is not None else ""
        material = f"login:{settings.username}:{password}"
    material += f"|{settings.outlet_id}|{settings.ho_url.rstrip('/')}"
    return hmac.new(_LABEL, material.encode(), hashlib.sha256).digest()


class CsrfTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the CSRF key must be at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "CsrfTokens(key=***)"

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, token: str | None) -> bool:
        if not token or token.count(".") != 1 or len(token) > 200:
            return False
        nonce, signature = token.split(".")
        return hmac.compare_digest(signature, self._sign(nonce))

    def check(self, cookie: str | None, submitted: str | None) -> bool:
        """The POST's pair: a cookie this key signed, and the same value in the form."""
        return self.valid(cookie) and submitted is not None and hmac.compare_digest(cookie or "", submitted)
