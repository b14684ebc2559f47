"""The HTTP core both dialects and the photo sources share: httpx underneath, posync's errors on top.

Every httpx error and every HTTP status is translated here, so nothing above this module sees httpx:
    connection refused/reset, timeout, 429, 5xx  -> HOUnavailableError (retry_after from the header:
                                                    seconds or an HTTP date)
    401/403 (checked before the body is read)    -> AuthenticationError
    other 4xx                                    -> HOErrorResponse(code, message): posync's
                                                    ``{"code","message"}``, the seed's ``{"error","code"}``
                                                    and DRF's ``{"detail"}`` bodies are all read
    a body that is not JSON, or too large        -> ProtocolError
Each error carries the request's method and path. Every call has a total deadline (``timeout``) and a
response size limit. A connection reset is retried once at once only for requests that are safe to
repeat; an upload to an HO that does not deduplicate is not.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import median
from typing import Any

import httpx

from posync import _json
from posync.errors import (
    AuthenticationError,
    ConfigurationError,
    HOErrorResponse,
    HOUnavailableError,
    ProtocolError,
)
from posync.ho.auth import AuthHeaders
from posync.ho.bounded import DEADLINE, read_bounded
from posync.retry import parse_retry_after

__all__ = ["Answer", "ClockOffset", "HttpCore"]


class ClockOffset:
    """HO's clock minus the outlet's, estimated from HO's answers (``Date`` headers, whole seconds, and
    the ``sync_timestamp``/``timestamp`` of its bodies, microseconds): the median of the last samples,
    each taken at the midpoint of its request. ``newest_wins`` compares times in HO's clock with it."""

    def __init__(self, keep: int = 15) -> None:
        self._samples: deque[float] = deque(maxlen=keep)
        self._coarse: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def observe(self, ho_time: datetime, sent: float, received: float, *, precise: bool = True) -> None:
        local = (sent + received) / 2
        offset = ho_time.timestamp() - local
        with self._lock:
            (self._samples if precise else self._coarse).append(offset)

    @property
    def seconds(self) -> float:
        """The estimate (0 until HO has answered); precise samples win over ``Date`` headers."""
        with self._lock:
            samples = list(self._samples) or list(self._coarse)
        return median(samples) if samples else 0.0

    @property
    def known(self) -> bool:
        with self._lock:
            return bool(self._samples or self._coarse)


def _date(response: httpx.Response) -> datetime | None:
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        ho_time = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return ho_time if ho_time.tzinfo is not None else ho_time.replace(tzinfo=UTC)


def _message(body: Any) -> tuple[str, str]:
    """(code, message) of an error body in any of the shapes HOs answer."""
    if not isinstance(body, dict):
        return "UNKNOWN", ""
    code = body.get("code") or "UNKNOWN"
    message = body.get("message") or body.get("error") or body.get("detail") or ""
    return str(code)[:100], str(message)[:300]


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx answer: its JSON body, and HO's ``Date`` header (whole seconds; None when absent)."""

    body: Any
    date: datetime | None


class HttpCore:
    """One head office. Thread-safe (httpx.Client is)."""

    def __init__(self, base_url: str, auth: httpx.Auth | None, *, timeout: float = 30.0,
                 max_response_bytes: int = 64 * 1024 * 1024, transport: httpx.BaseTransport | None = None,
                 headers: Mapping[str, str] | None = None, connect_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout  # None: the call's whole budget
        self.max_response_bytes = max_response_bytes
        self.clock = ClockOffset()
        self._auth = auth
        self._http = httpx.Client(base_url=base_url, auth=auth, transport=transport, timeout=httpx.Timeout(timeout),
                                  headers={"User-Agent": "posync/0.1", **(headers or {})})
        self._closed = False

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    def close(self) -> None:
        self._closed = True
        self._http.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def auth_headers(self, probe_path: str) -> AuthHeaders:
        """This client's credentials as headers, for requests httpx does not send (the photo byte engines):
        the same auth, so one token and one renewal path. ``probe_path``: a path the headers are made for."""
        if self._auth is None:
            raise ConfigurationError("HttpCore.auth_headers: this client has no credentials")
        return AuthHeaders(self._http, self._auth, self.base_url.rstrip("/") + probe_path)

    def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None, json_body: Any = None,
             idempotent: bool = True, timeout: float | None = None) -> Any:
        """Send one request, answer its JSON body (a 2xx), or raise posync's error."""
        return self.answer(method, path, params=params, json_body=json_body, idempotent=idempotent,
                           timeout=timeout).body

    def answer(self, method: str, path: str, *, params: Mapping[str, str] | None = None, json_body: Any = None,
               idempotent: bool = True, timeout: float | None = None) -> Answer:
        """:meth:`call`, with the answer's ``Date`` header beside the body."""
        budget = timeout or self.timeout
        deadline = time.monotonic() + budget
        content = None if json_body is None else _json.dumps(json_body)
        headers = {"Content-Type": "application/json"} if content is not None else None
        where: dict[str, Any] = {"method": method, "path": path}
        for attempt in (1, 2):
            remaining = max(0.1, deadline - time.monotonic())
            connect = remaining if self.connect_timeout is None else min(remaining, self.connect_timeout)
            request = self._http.build_request(method, path, content=content, params=params, headers=headers,
                                               timeout=httpx.Timeout(remaining, connect=connect),
                                               extensions={DEADLINE: deadline})
            sent = time.time()
            try:
                response = self._http.send(request, stream=True)
                status = response.status_code
                if status in (401, 403):
                    body = read_bounded(response, deadline, 64 * 1024)
                    raise AuthenticationError(f"{method} {path}: HO refused the credentials ({status})", **where)
                body = read_bounded(response, deadline, self.max_response_bytes)
                break
            except (AuthenticationError, ProtocolError, HOUnavailableError):
                raise
            except httpx.TimeoutException as exc:
                raise HOUnavailableError(f"{method} {path}: timed out", **where) from exc
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                if attempt == 2 or not idempotent or time.monotonic() > deadline:
                    raise HOUnavailableError(f"{method} {path}: {type(exc).__name__}", **where) from exc
            except httpx.HTTPError as exc:
                if self._closed:
                    raise HOUnavailableError(f"{method} {path}: the client is closed", **where) from exc
                raise HOUnavailableError(f"{method} {path}: {type(exc).__name__}", **where) from exc
            except RuntimeError as exc:  # httpx: "Cannot send a request, as the client has been closed"
                raise HOUnavailableError(f"{method} {path}: {exc}", **where) from exc
        date = _date(response)
        if date is not None:  # whole seconds: their midpoint is half a second after the stamp
            self.clock.observe(date, sent - 0.5, time.time() - 0.5, precise=False)
        if status == 429 or status >= 500:
            # a Retry-After date is in HO's clock: measured from HO's Date when it sent one
            now = date.timestamp() if date is not None else time.time()
            raise HOUnavailableError(f"{method} {path}: HO answered {status}", status=status,
                                     retry_after=parse_retry_after(response.headers.get("Retry-After"), now), **where)
        try:
            parsed = _json.loads(body) if body else None
        except ValueError as exc:
            raise ProtocolError(f"{method} {path}: HO answered {status} with a body that is not JSON",
                                **where) from exc
        if status >= 400:
            code, message = _message(parsed)
            raise HOErrorResponse(status, code, message)
        if status >= 300:
            raise ProtocolError(f"{method} {path}: HO answered {status}", **where)
        return Answer(parsed, date)

    def observe(self, timestamp: Any, sent: float, received: float) -> None:
        """A ``sync_timestamp`` or ``timestamp`` from an answer body, for the clock offset estimate."""
        if not isinstance(timestamp, str):
            return
        try:
            ho_time = datetime.fromisoformat(timestamp)
        except ValueError:
            return
        if ho_time.tzinfo is not None:
            self.clock.observe(ho_time, sent, received)
