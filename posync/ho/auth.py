"""How posync proves itself to HO: an API key (seed 003) or a JWT from HO's token endpoint (seeds 001/004).

Both are ``httpx.Auth`` flows. The JWT flow logs in once, sends ``Authorization: Bearer``, and on a 401
renews: the refresh token first (``/token/refresh/``), a new login if that fails, then the request once
more. A token endpoint that refuses the credentials is an :class:`~posync.errors.AuthenticationError`
(bad configuration, not an outage); one that is down is an :class:`~posync.errors.HOUnavailableError`.
Every body the flow reads is read within the request's deadline and size limit.

:class:`AuthHeaders` turns either flow into plain headers for requests httpx does not send (the photo byte
engines, over curl or urllib3), by driving the flow's public ``sync_auth_flow``: the JSON calls and the
bytes share one token and one renewal path. Made by ``HttpCore.auth_headers``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import Any

import httpx
from pydantic import SecretStr

from posync import _json
from posync.errors import AuthenticationError, HOUnavailableError, ProtocolError
from posync.ho.bounded import DEADLINE, read_bounded
from posync.ho.wire import Token, parse

__all__ = ["ApiKeyAuth", "AuthHeaders", "JwtAuth"]

_TOKEN_BYTES = 64 * 1024
AUTH_HEADERS = ("authorization", "x-api-key", "x-outlet-id")


class ApiKeyAuth(httpx.Auth):
    """Seed 003: ``X-API-Key`` + ``X-Outlet-ID``."""

    def __init__(self, api_key: SecretStr, outlet_id: str) -> None:
        self._key = api_key
        self._outlet = outlet_id

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-API-Key"] = self._key.get_secret_value()
        request.headers["X-Outlet-ID"] = self._outlet
        yield request

    def __repr__(self) -> str:
        return f"ApiKeyAuth(outlet_id={self._outlet!r}, api_key=**********)"


class JwtAuth(httpx.Auth):
    """Bearer tokens from ``token_url`` (``POST {"username", "password"}`` -> ``{"access", "refresh"}``)."""

    requires_response_body = False  # posync reads bodies itself, within the request's deadline

    def __init__(self, token_url: str, username: str, password: SecretStr, outlet_id: str | None = None,
                 *, refresh_url: str | None = None) -> None:
        self._token_url = token_url
        self._refresh_url = refresh_url or token_url.rstrip("/") + "/refresh/"
        self._username = username
        self._password = password
        self._outlet = outlet_id
        self._access: str | None = None
        self._refresh: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JwtAuth(username={self._username!r}, password=**********)"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._outlet:
            request.headers["X-Outlet-ID"] = self._outlet
        deadline = float(request.extensions.get(DEADLINE, time.monotonic() + 30.0))
        with self._lock:
            access = self._access
        if access is None:
            access = yield from self._login(deadline)
        request.headers["Authorization"] = f"Bearer {access}"
        response = yield request
        if response.status_code != 401:
            return
        read_bounded(response, deadline, _TOKEN_BYTES)  # httpx would read it without a limit
        access = yield from self._renew(deadline)
        request.headers["Authorization"] = f"Bearer {access}"
        yield request

    def forget(self) -> None:
        """Drop the tokens (the next request logs in again)."""
        with self._lock:
            self._access = self._refresh = None

    def _renew(self, deadline: float) -> Generator[httpx.Request, httpx.Response, str]:
        with self._lock:
            refresh = self._refresh
        if refresh is not None:
            response = yield httpx.Request("POST", self._refresh_url, content=_json.dumps({"refresh": refresh}),
                                           headers={"Content-Type": "application/json"},
                                           extensions={DEADLINE: deadline})
            if response.status_code == 200:
                token = self._read(response, deadline, "refresh")
                with self._lock:
                    self._access = token.access
                    self._refresh = token.refresh or refresh
                return token.access
            read_bounded(response, deadline, _TOKEN_BYTES)
        access: str = yield from self._login(deadline)
        return access

    def _login(self, deadline: float) -> Generator[httpx.Request, httpx.Response, str]:
        body = _json.dumps({"username": self._username, "password": self._password.get_secret_value()})
        response = yield httpx.Request("POST", self._token_url, content=body,
                                       headers={"Content-Type": "application/json"},
                                       extensions={DEADLINE: deadline})
        token = self._read(response, deadline, "login")
        with self._lock:
            self._access, self._refresh = token.access, token.refresh
        return token.access

    def _read(self, response: httpx.Response, deadline: float, step: str) -> Token:
        status = response.status_code
        body = read_bounded(response, deadline, _TOKEN_BYTES)
        path = response.request.url.path
        if status in (400, 401, 403):
            raise AuthenticationError(f"HO refused the credentials of user {self._username!r} ({step}: {status})",
                                      method="POST", path=path)
        if status == 429 or status >= 500:
            raise HOUnavailableError(f"token endpoint answered {status}", status=status, method="POST", path=path)
        if status != 200:
            raise ProtocolError(f"token endpoint answered {status}", method="POST", path=path)
        try:
            return parse(Token, _json.loads(body), f"POST {path}")  # type: ignore[no-any-return]
        except ValueError as exc:
            raise ProtocolError("token endpoint answered without an access token", method="POST",
                                path=path) from exc


class AuthHeaders:
    """The headers an authenticated request carries (cached until a caller says they were refused)."""

    def __init__(self, http: httpx.Client, auth: httpx.Auth, probe_url: str) -> None:
        self._http = http  # sends the flow's own token requests
        self._auth = auth
        self._probe = probe_url
        self._lock = threading.Lock()
        self._headers: dict[str, str] | None = None

    def get(self, *, refresh: bool = False) -> dict[str, str]:
        with self._lock:
            if self._headers is None or refresh:
                self._headers = self._run_flow(refresh)
            return dict(self._headers)

    def _run_flow(self, refresh: bool) -> dict[str, str]:
        request = httpx.Request("GET", self._probe)
        flow = self._auth.sync_auth_flow(request)
        try:
            out = self._drive(flow, next(flow), request)
            if refresh:  # tell the auth its credential was refused: a JwtAuth fetches a new token
                out = self._drive(flow, flow.send(httpx.Response(401, request=out)), request)
        except StopIteration:
            out = request
        finally:
            flow.close()
        return {k: v for k, v in out.headers.items() if k.lower() in AUTH_HEADERS}

    def _drive(self, flow: Any, out: httpx.Request, request: httpx.Request) -> httpx.Request:
        while out is not request:  # a token request of the auth's own
            try:
                response = self._http.send(out, auth=None)  # not through the client's auth: this is its flow
                response.read()
            except httpx.TimeoutException as exc:
                raise HOUnavailableError("token request timed out") from exc
            except httpx.TransportError as exc:
                raise HOUnavailableError(f"token request: {type(exc).__name__}") from exc
            out = flow.send(response)
        return out
