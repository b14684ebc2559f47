"""The byte path's shared pieces: a job per distinct checksum, the retry policy, and the engine choice.

Two engines move the bytes, both with a bounded set of kept-alive connections:

* ``curl`` (the ``photos-fast`` extra, pycurl): one thread drives libcurl's multi interface over N handles.
* ``urllib3``: N threads over one urllib3 pool; pure Python, the fallback.

For 50 KB objects the client's per-request cost dominates: httpx (right for the JSON API) was about 2.5x
slower than urllib3 here, which is about 2.4x slower than libcurl (issue 12; bench/bench_photo_transfer.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from posync.photos.errors import PhotoConfigError, PhotoTransferError
from posync.photos.transfer.staged import Staged

__all__ = ["ByteEngine", "FetchJob", "FetchOutcome", "TransferPolicy", "make_engine"]

AuthFn = Callable[[bool], dict[str, str]]  # refresh -> headers
DoneFn = Callable[["FetchOutcome"], None]
BytesFn = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class TransferPolicy:
    workers: int = 8
    attempts: int = 4  # per photo per pass; then the row is failed and retried by a later pass
    connect_timeout: float = 10.0
    stall_timeout: float = 30.0  # no byte for this long: the transfer is stalled
    transfer_timeout: float = 600.0  # one attempt at one photo, whatever its size
    backoff_initial: float = 0.25
    backoff_max: float = 8.0

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1`` (full jitter, capped)."""
        return random.uniform(0.5, 1.0) * min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))


@dataclass(slots=True)
class FetchJob:
    md5: str
    photo_id: str
    url: str
    authenticated: bool
    size: int
    staged: Staged
    attempts: int = 0
    not_before: float = 0.0
    refreshed_auth: bool = False
    last_error: PhotoTransferError | None = field(default=None)


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    job: FetchJob
    error: PhotoTransferError | None  # None: the staged file holds the verified bytes


class ByteEngine(Protocol):
    name: str

    def run(self, jobs: Iterable[FetchJob], on_done: DoneFn, *, deadline: float, auth: AuthFn,
            on_bytes: BytesFn | None = None) -> None:
        """Fetch every job (retrying per the policy until ``deadline``, a ``time.monotonic()`` value) and
        call ``on_done`` once per job, from an engine thread. Returns when all are done. ``jobs`` is read
        as the engine has room, so a generator may prepare each job just before it is needed."""
        ...

    def close(self) -> None: ...


def classify_status(job: FetchJob, status: int) -> PhotoTransferError:
    retryable = status >= 500 or status in (401, 404, 408, 409, 416, 429)
    return PhotoTransferError(job.photo_id, f"http_{status}", retryable=retryable)


def after_failure(job: FetchJob, error: PhotoTransferError, policy: TransferPolicy, now: float,
                  deadline: float) -> bool:
    """Record a failed attempt; True when the job should be tried again (and when: ``job.not_before``)."""
    job.last_error = error
    if error.reason in ("checksum", "long", "http_416", "http_200_after_range"):
        job.staged.discard()  # wrong bytes are never resumed from
    else:
        job.staged.keep()
    if error.reason == "http_401" and job.authenticated and not job.refreshed_auth:
        job.refreshed_auth = True  # a fresh token, once, at once
        job.not_before = now
        return now < deadline
    if not error.retryable or job.attempts >= policy.attempts:
        return False
    job.not_before = now + policy.backoff(job.attempts)
    return job.not_before < deadline


def make_engine(name: str, policy: TransferPolicy) -> ByteEngine:
    """``auto`` (curl when pycurl imports, else urllib3), ``curl`` or ``urllib3``."""
    if name in ("auto", "curl"):
        try:
            from posync.photos.transfer.curl import CurlEngine
        except ImportError as exc:
            if name == "curl":
                raise PhotoConfigError("the curl engine needs pycurl: pip install 'posync[photos-fast]'") from exc
        else:
            return CurlEngine(policy)
    if name in ("auto", "urllib3"):
        from posync.photos.transfer.pool import Urllib3Engine

        return Urllib3Engine(policy)
    raise PhotoConfigError(f"unknown byte engine {name!r}: auto, curl or urllib3")
