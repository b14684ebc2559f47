"""Authentication of the reference HO: API keys (``X-API-Key`` + ``X-Outlet-ID``) and JWT bearer tokens
(:meth:`Authenticator.check`, the posync profile), or JWT bearer tokens only (:meth:`Authenticator.bearer`,
the seed profile).

Tokens are HS256 JWTs (PyJWT) with a ``typ`` of ``access`` or ``refresh`` and a generation number:
:meth:`Authenticator.revoke_access_tokens` bumps the generation so every access token issued before
answers 401 at once (tests use it to force the client's re-authentication without sleeping), while
refresh tokens keep working.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

__all__ = ["AuthFailure", "Authenticator", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "api_key" | "jwt" | "anonymous"
    name: str  # the username, or a masked key
    outlets: frozenset[str] | None  # outlets this credential may act for; None = any


class AuthFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class Authenticator:
    def __init__(
        self,
        *,
        api_keys: Mapping[str, Collection[str] | None],
        users: Mapping[str, str],
        secret: str | None = None,
        access_ttl: float = 300.0,
        refresh_ttl: float = 86400.0,
        required: bool = True,
    ) -> None:
        self._api_keys = {k: (None if v is None else frozenset(v)) for k, v in api_keys.items()}
        self._users = dict(users)
        self._secret = secret or secrets.token_urlsafe(32)
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.required = required
        self._generation = 0

    def __repr__(self) -> str:  # never the secret or the keys
        return f"Authenticator(api_keys={len(self._api_keys)}, users={len(self._users)}, secret='***')"

    def _token(self, sub: str, typ: str, ttl: float) -> str:
        now = time.time()
        claims = {"sub": sub, "typ": typ, "gen": self._generation, "iat": int(now), "exp": now + ttl,
                  "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def _decode(self, token: str, typ: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(token, self._secret, algorithms=["HS256"],
                                                options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise AuthFailure(401, "token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthFailure(401, "invalid token") from exc
        if claims.get("typ") != typ:
            raise AuthFailure(401, f"not an {typ} token")
        if typ == "access" and claims.get("gen") != self._generation:
            raise AuthFailure(401, "token revoked")
        return claims

    def login(self, username: Any, password: Any) -> dict[str, str]:
        if not isinstance(username, str) or not isinstance(password, str):
            raise AuthFailure(401, "username and password required")
        expected = self._users.get(username)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise AuthFailure(401, "invalid credentials")
        return self.issue(username)

    def issue(self, username: str) -> dict[str, str]:
        """Tokens for ``username`` without a password check (tests)."""
        return {"access": self._token(username, "access", self.access_ttl),
                "refresh": self._token(username, "refresh", self.refresh_ttl)}

    def refresh(self, token: Any) -> dict[str, str]:
        if not isinstance(token, str) or not token:
            raise AuthFailure(401, "refresh token required")
        claims = self._decode(token, "refresh")
        if claims["sub"] not in self._users:
            raise AuthFailure(401, "unknown user")
        return {"access": self._token(claims["sub"], "access", self.access_ttl)}

    def revoke_access_tokens(self) -> None:
        self._generation += 1

    def bearer(self, headers: Mapping[str, str]) -> Principal | None:
        """The JWT caller, or ``None`` when the request carries no ``Authorization: Bearer`` header
        (the seed profile's only credential: an ``X-API-Key`` is not looked at). A bearer token that is
        empty, malformed, expired or revoked raises :class:`AuthFailure`."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        if not token.strip():
            raise AuthFailure(401, "empty bearer token")
        claims = self._decode(token.strip(), "access")
        return Principal("jwt", str(claims["sub"]), None)

    def check(self, headers: Mapping[str, str]) -> Principal:
        """Who is calling; raises :class:`AuthFailure` (401) when neither credential is valid."""
        key = headers.get("x-api-key")
        if key:
            for known, outlets in self._api_keys.items():
                if hmac.compare_digest(known.encode(), key.encode()):
                    return Principal("api_key", known[:4] + "***", outlets)
            raise AuthFailure(401, "invalid API key")
        authz = headers.get("authorization", "")
        scheme, _, token = authz.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            claims = self._decode(token.strip(), "access")
            return Principal("jwt", str(claims["sub"]), None)
        if not self.required:
            return Principal("anonymous", "", None)
        raise AuthFailure(401, "authentication required: X-API-Key or Authorization: Bearer")
