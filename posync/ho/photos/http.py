"""HO's JSON API over httpx (right for it: a few requests per pass), with errors translated here.

    connection/timeout/5xx/429 -> HOUnavailableError   401/403 -> AuthenticationError
    other 4xx -> HOErrorResponse(code)                  unreadable JSON -> ProtocolError

:class:`AuthHeaders` turns an ``httpx.Auth`` (``posync.ho.JwtAuth`` or ``ApiKeyAuth``) into headers
by driving its public ``sync_auth_flow`` (token requests included), so the JSON calls and the byte engine
share one token and one renewal path.
"""

from __future__ import annotations

import threading
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from posync.errors import AuthenticationError, HOErrorResponse, HOUnavailableError, ProtocolError

__all__ = ["AuthHeaders", "date_header", "request_json"]

AUTH_HEADERS = ("authorization", "x-api-key", "x-outlet-id")


def request_json(http: httpx.Client, auth: AuthHeaders, method: str, path: str, *, json_body: Any = None,
                 params: dict[str, str] | None = None) -> tuple[Any, httpx.Response]:
    """One JSON call with HO's credentials; a 401 renews them once (a JwtAuth fetches a new token)."""
    content = None if json_body is None else orjson.dumps(json_body)
    for refresh in (False, True):
        headers = auth.get(refresh=refresh)
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = http.request(method, path, content=content, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise HOUnavailableError(f"{method} {path}: timed out", method=method, path=path) from exc
        except httpx.TransportError as exc:
            raise HOUnavailableError(f"{method} {path}: {type(exc).__name__}", method=method, path=path) from exc
        if response.status_code != 401:
            break
    status = response.status_code
    if status >= 500 or status == 429:
        raise HOUnavailableError(f"{method} {path}: HO answered {status}", status=status, method=method,
                                 path=path)
    if status in (401, 403):
        raise AuthenticationError(f"{method} {path}: HO answered {status}", method=method, path=path)
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"{method} {path}: answer is not JSON (status {status})", method=method,
                            path=path) from exc
    if status >= 400:
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        raise HOErrorResponse(status, str(code or "ERROR"), str(message or ""))
    return body, response


def date_header(response: httpx.Response) -> datetime | None:
    value = response.headers.get("date")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


class AuthHeaders:
    """The headers an authenticated request carries, for requests httpx does not send (the byte engine)."""

    def __init__(self, http: httpx.Client, auth: httpx.Auth, probe_url: str) -> None:
        self._http = http
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
                response = self._http.send(out)
                response.read()
            except httpx.TimeoutException as exc:
                raise HOUnavailableError("token request timed out") from exc
            except httpx.TransportError as exc:
                raise HOUnavailableError(f"token request: {type(exc).__name__}") from exc
            out = flow.send(response)
        return out
