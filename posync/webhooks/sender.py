"""HO side: sign and deliver a webhook to an outlet, with bounded retries.

Every attempt is signed afresh (a new timestamp, so a delivery retried for minutes stays inside the
receiver's tolerance) under the same message id (so the outlet's replay store recognises a retry whose
first answer was lost). Retry policy is a value that returns a decision; the sender just obeys it:

* 2xx: delivered.  410: the endpoint is gone, stop (the caller should disable it).
* 429/503: retry after ``max(backoff, Retry-After)``; a Retry-After beyond ``max_retry_after`` stops with
  the wait in the result, for the caller's own scheduler.
* other 5xx, 408, connection errors and timeouts: retry with exponential backoff and equal jitter.
* other 4xx (bad signature, bad payload, forbidden source): rejected, retrying cannot help.

tenacity is not used: every decision here depends on the response (status, Retry-After), which a small
policy value expresses more plainly than a decorator's predicates.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from posync.errors import ConfigurationError
from posync.retry import RetryDecision, backoff, parse_retry_after
from posync.webhooks.events import EventType
from posync.webhooks.signing import Signer

__all__ = ["DeliveryOutcome", "DeliveryResult", "SenderRetryPolicy", "WebhookSender"]

logger = logging.getLogger("posync.webhooks.sender")


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"  # 410: stop sending to this endpoint
    REJECTED = "rejected"  # a 4xx that retrying cannot fix
    EXHAUSTED = "exhausted"  # attempts used up, or told to wait longer than we may


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: DeliveryOutcome
    message_id: str
    attempts: int
    status: int | None  # last HTTP status; None when the last attempt got no answer
    retry_after: float | None = None  # the last Retry-After, when HO should reschedule on its own
    detail: str = ""

    @property
    def delivered(self) -> bool:
        return self.outcome is DeliveryOutcome.DELIVERED


@dataclass(frozen=True)
class SenderRetryPolicy:
    max_attempts: int = 5
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ConfigurationError("SenderRetryPolicy: need max_attempts >= 1, 0 <= initial <= max delay")
        if self.multiplier < 1:
            raise ConfigurationError("SenderRetryPolicy: multiplier must be >= 1")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        return backoff(attempt, self.initial_delay, self.max_delay, self.multiplier, rng)

    def decide(self, attempt: int, status: int | None, retry_after: float | None = None,
               rng: random.Random | None = None) -> RetryDecision | None:
        """After ``attempt`` (1-based) failed with ``status`` (None: no answer): wait, or None to stop."""
        if status is not None and (status == 410 or (400 <= status < 500 and status not in (408, 429))):
            return None
        if attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt, rng)
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            delay = max(delay, retry_after)
        return RetryDecision(delay)


class WebhookSender:
    """Deliver signed webhooks over a sync httpx client. Takes the host's client and never closes it;
    without one it makes its own, closed by :meth:`close` or the ``with`` block."""

    def __init__(self, signer: Signer, *, client: httpx.Client | None = None,
                 policy: SenderRetryPolicy | None = None, timeout: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self._signer = signer
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self.policy = policy or SenderRetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng

    def deliver(self, base_url: str, event_type: EventType | str, resource: str,
                record: Mapping[str, Any], *, message_id: str | None = None) -> DeliveryResult:
        """POST ``{base_url}/{event_type}`` with the event body; ``base_url`` ends in ``/webhooks/cloud``."""
        kind = EventType(event_type)
        body = json.dumps({"type": kind.value, "resource": resource, "record": dict(record)},
                          separators=(",", ":"), default=str).encode("utf-8")
        return self.send(f"{base_url.rstrip('/')}/{kind.value}", body,
                         message_id=message_id or f"msg_{uuid.uuid4().hex}")

    def send(self, url: str, body: bytes, *, message_id: str) -> DeliveryResult:
        attempt = 0
        while True:
            attempt += 1
            timestamp = int(self._clock())
            headers = {"content-type": "application/json",
                       **self._signer.headers(message_id, timestamp, body)}
            status: int | None = None
            retry_after: float | None = None
            try:
                response = self._client.post(url, content=body, headers=headers)
                status = response.status_code
                detail = f"HTTP {status}"
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
            except httpx.TransportError as exc:
                detail = f"{type(exc).__name__}"
            if status is not None and 200 <= status < 300:
                return DeliveryResult(DeliveryOutcome.DELIVERED, message_id, attempt, status, detail=detail)
            if status == 410:
                logger.warning("webhook %s: %s answered 410, endpoint gone", message_id, url)
                return DeliveryResult(DeliveryOutcome.GONE, message_id, attempt, status, detail=detail)
            decision = self.policy.decide(attempt, status, retry_after, self._rng)
            if decision is None:
                rejected = status is not None and 400 <= status < 500 and status not in (408, 429)
                outcome = DeliveryOutcome.REJECTED if rejected else DeliveryOutcome.EXHAUSTED
                logger.warning("webhook %s to %s: %s after %d attempt(s) (%s)", message_id, url,
                               outcome.value, attempt, detail)
                return DeliveryResult(outcome, message_id, attempt, status, retry_after, detail)
            logger.info("webhook %s to %s: attempt %d failed (%s), retrying in %.2fs", message_id, url,
                        attempt, detail, decision.delay)
            self._sleep(decision.delay)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WebhookSender({self._signer!r}, policy={self.policy!r})"
