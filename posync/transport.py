"""The head office client: httpx underneath, posync's errors on top.

Every httpx error and every HTTP status is translated here, so nothing above this module sees httpx:
    connection/timeout/5xx/429  -> HOUnavailableError (retry_after from the header)
    401 that a fresh token did not fix -> AuthenticationError
    410 CURSOR_EXPIRED -> ResyncRequiredError; other 4xx -> HOErrorResponse(code)
    unreadable body -> ProtocolError
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from posync import _json
from posync.errors import (
    AuthenticationError,
    HOErrorResponse,
    HOUnavailableError,
    ProtocolError,
    ResyncRequiredError,
)

__all__ = ["ApiKeyAuth", "HOClient", "JwtAuth", "PullPage"]


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
    """Seeds 001/004: Bearer token from the token endpoint; a 401 fetches a new token once and retries."""

    requires_response_body = True

    def __init__(self, token_url: str, username: str, password: SecretStr, outlet_id: str) -> None:
        self._token_url = token_url
        self._username = username
        self._password = password
        self._outlet = outlet_id
        self._token: str | None = None
        self._lock = threading.Lock()

    def _token_request(self) -> httpx.Request:
        body = _json.dumps({"username": self._username, "password": self._password.get_secret_value()})
        return httpx.Request("POST", self._token_url, content=body,
                             headers={"Content-Type": "application/json"})

    def _read_token(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            raise AuthenticationError(f"token endpoint answered {response.status_code}")
        try:
            return str(response.json()["access"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError("token endpoint answered without an access token") from exc

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Outlet-ID"] = self._outlet
        with self._lock:
            token = self._token
        if token is None:
            token = self._read_token((yield self._token_request()))
            with self._lock:
                self._token = token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = self._read_token((yield self._token_request()))
            with self._lock:
                self._token = token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def __repr__(self) -> str:
        return f"JwtAuth(username={self._username!r}, password=**********)"


@dataclass(frozen=True)
class PullPage:
    records: list[dict[str, Any]]
    deleted: list[dict[str, Any]]  # tombstones: {"id", "version"}
    next_cursor: str | None
    has_more: bool
    next_offset: int | None = None
    sync_timestamp: str | None = None  # HO's clock when it answered (legacy paging uses it)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


class HOClient:
    """One head office, one outlet. Thread-safe (httpx.Client is)."""

    def __init__(self, base_url: str, auth: httpx.Auth, *, outlet_id: str, company_id: str, store_id: str,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.outlet_id = outlet_id
        self._params = {"company_id": company_id, "store_id": store_id}
        self._http = httpx.Client(base_url=base_url, auth=auth, timeout=timeout, transport=transport,
                                  headers={"User-Agent": "posync/0.1"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HOClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -------------------------------------------------------------------------------------

    def push(self, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = self._send("POST", "/api/v1/sync/push/", json_body={"outlet_id": self.outlet_id,
                                                                    "changes": changes})
        return self._results(body, len(changes))

    def push_usage(self, usages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = self._send("POST", "/api/v1/sync/usage/", json_body={"outlet_id": self.outlet_id,
                                                                     "usages": usages})
        return self._results(body, len(usages))

    def pull(self, resource: str, cursor: str | None, limit: int, *, updated_since: str | None = None,
             offset: int | None = None) -> PullPage:
        params = {**self._params, "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        if updated_since:
            params["updated_since"] = updated_since
        if offset:
            params["offset"] = str(offset)
        try:
            body = self._send("GET", f"/api/v1/sync/{resource}/", params=params)
        except HOErrorResponse as exc:
            if exc.status == 410 or exc.code == "CURSOR_EXPIRED":
                raise ResyncRequiredError(resource, str(exc)) from exc
            raise
        try:
            records = body.get(resource, body.get("records", []))
            deleted = body.get("deleted")
            if deleted is None:  # an HO that only sends ids (seed 004): versions unknown
                deleted = [{"id": i, "version": None} for i in body.get("deleted_ids", [])]
            if not isinstance(records, list) or not isinstance(deleted, list):
                raise TypeError("records and deleted must be lists")
            next_offset = body.get("next_offset")
            return PullPage(records, deleted, body.get("next_cursor"), bool(body.get("has_more")),
                            int(next_offset) if next_offset is not None else None, body.get("sync_timestamp"))
        except (AttributeError, TypeError) as exc:
            raise ProtocolError(f"pull {resource}: unexpected page shape") from exc

    def version(self) -> dict[str, Any]:
        return self._send("GET", "/api/v1/sync/version/", params=self._params)

    # -- plumbing ------------------------------------------------------------------------------------

    @staticmethod
    def _results(body: dict[str, Any], expected: int) -> list[dict[str, Any]]:
        results = body.get("results")
        if not isinstance(results, list) or len(results) != expected:
            raise ProtocolError(f"push: expected {expected} results, got an unreadable answer")
        return results

    def _send(self, method: str, path: str, *, json_body: Any = None,
              params: dict[str, str] | None = None) -> dict[str, Any]:
        content = None if json_body is None else _json.dumps(json_body)
        headers = {"Content-Type": "application/json"} if content is not None else None
        # Every request posync sends is safe to repeat (reads, or pushes under idempotency keys), so a
        # connection reset (often a kept-alive connection the server closed) is retried once at once.
        for attempt in (1, 2):
            try:
                response = self._http.request(method, path, content=content, params=params, headers=headers)
                break
            except AuthenticationError:
                raise
            except httpx.TimeoutException as exc:
                raise HOUnavailableError(f"{method} {path}: timed out") from exc
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                if attempt == 2:
                    raise HOUnavailableError(f"{method} {path}: {type(exc).__name__}") from exc
            except httpx.TransportError as exc:
                raise HOUnavailableError(f"{method} {path}: {type(exc).__name__}") from exc
        status = response.status_code
        if status in (429, 502, 503, 504) or status >= 500:
            raise HOUnavailableError(f"{method} {path}: HO answered {status}", status=status,
                                     retry_after=_retry_after(response))
        try:
            body = _json.loads(response.content)
        except ValueError as exc:
            raise ProtocolError(f"{method} {path}: HO answered {status} with a body that is not JSON") from exc
        if status in (401, 403):
            raise AuthenticationError(f"{method} {path}: HO refused the credentials ({status})")
        if status >= 400:
            code = body.get("code", "UNKNOWN") if isinstance(body, dict) else "UNKNOWN"
            message = body.get("message", "") if isinstance(body, dict) else ""
            raise HOErrorResponse(status, str(code), str(message))
        if not isinstance(body, dict):
            raise ProtocolError(f"{method} {path}: expected a JSON object")
        return body
