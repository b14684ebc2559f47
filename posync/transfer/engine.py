"""The byte path's shared pieces: a job per distinct checksum, the retry policy, and the engine choice.

Two engines move the bytes, both with a bounded set of kept-alive connections:

* ``curl`` (the ``photos-fast`` extra, pycurl): one thread drives libcurl's multi interface over N handles.
* ``urllib3``: N threads over one urllib3 pool; pure Python, the fallback.

For 50 KB objects the client's per-request cost dominates: httpx (right for the JSON API) was about 2.5x
slower than urllib3 here, which is about 2.4x slower than libcurl (issue 12; bench/bench_photo_transfer.py).

Both fetch only http and https (``unsafe_url`` otherwise, before a byte is read) and follow no redirect. An
object whose size is not the manifest's is a ``size_mismatch``, however it showed (too many bytes, a clean
end too soon, a 416 to a resume); a staging folder that refuses a write is ``no_space`` (a full disk) or
``staging``. Bytes of a failure are thrown away but for a cut or a stall, which a later attempt resumes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from posync.errors import PhotoConfigError, PhotoTransferError
from posync.retry import backoff
from posync.transfer.staged import Staged, StagingFailed

__all__ = ["ByteEngine", "FetchJob", "FetchOutcome", "TransferPolicy", "make_engine"]

SAFE_SCHEMES = ("http://", "https://")
_UNSATISFIED = re.compile(r"bytes\s+\*/(\d+)")  # a 416's Content-Range: the object's length
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,15}):")
# what a later attempt must not resume from: wrong bytes, or a partial file taking room on a full disk
_DISCARD = frozenset({"checksum", "size_mismatch", "http_416", "no_space", "staging"})

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
        """Seconds before attempt ``attempt + 1`` (doubling from ``backoff_initial``, capped, equal jitter)."""
        return backoff(attempt, self.backoff_initial, self.backoff_max)


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


def classify_status(job: FetchJob, status: int, content_range: str | None = None) -> PhotoTransferError:
    """An answer that is not 200/206. A 416 to a resume means the object is no longer than the bytes already
    here, so shorter than the manifest says (HO ignores Range for a changed object: If-Range)."""
    if status == 416 and job.staged.offset:
        m = _UNSATISFIED.match(content_range or "")
        total = int(m.group(1)) if m else None
        return size_mismatch(job, total, f"at most {job.staged.offset} bytes")
    retryable = status >= 500 or status in (401, 404, 408, 409, 416, 429)
    return PhotoTransferError(job.photo_id, f"http_{status}", retryable=retryable)


def unsafe_url(job: FetchJob) -> PhotoTransferError | None:
    """Only http and https are fetched: a ``file://`` URL in a manifest must not read the edge's own files."""
    url = job.url
    if url.startswith(SAFE_SCHEMES) or url[:8].lower().startswith(SAFE_SCHEMES):
        return None
    m = _SCHEME.match(url)  # named in the reason; the rest of the URL may carry a signature
    scheme = m.group(1).lower() if m else "none"
    return PhotoTransferError(job.photo_id, "unsafe_url", f"scheme {scheme!r} is not http or https", retryable=False)


def size_mismatch(job: FetchJob, total: int | None, seen: str) -> PhotoTransferError:
    """The object is not the manifest's size. ``total``: its length when the answer said it; else ``seen``
    says what the bytes showed ("more than 1000 bytes")."""
    has = f"{total} bytes" if total is not None else seen
    return PhotoTransferError(job.photo_id, "size_mismatch", f"the object has {has}, the manifest says {job.size}")


def too_long(job: FetchJob, length: int | None) -> PhotoTransferError:
    """More bytes came than the manifest's size; ``length``: the answer's Content-Length, when it had one."""
    total = job.staged.resumed_from + length if length is not None and length >= 0 else None
    return size_mismatch(job, total, f"more than {job.size} bytes")


def verdict_error(job: FetchJob, verdict: str) -> PhotoTransferError:
    """What :meth:`Staged.verdict` found wrong with an answer that ended cleanly."""
    staged = job.staged
    if verdict == "size_mismatch":
        return size_mismatch(job, staged.offset, "")
    if verdict == "checksum":  # both MD5s: HO's object and its manifest disagree, or the bytes were damaged
        return PhotoTransferError(job.photo_id, verdict, f"expected MD5 {job.md5}, got {staged.received_md5()} "
                                                         f"({staged.offset} bytes)")
    return PhotoTransferError(job.photo_id, verdict, f"{staged.offset} of {job.size} bytes")


def staging_error(job: FetchJob, exc: StagingFailed) -> PhotoTransferError:
    """Another attempt in this pass would meet the same full disk; the next pass tries again."""
    return PhotoTransferError(job.photo_id, exc.reason, exc.detail, retryable=False)


def after_failure(job: FetchJob, error: PhotoTransferError, policy: TransferPolicy, now: float,
                  deadline: float) -> bool:
    """Record a failed attempt; True when the job should be tried again (and when: ``job.not_before``)."""
    job.last_error = error
    if error.reason in _DISCARD:
        job.staged.discard()
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
            from posync.transfer.curl import CurlEngine
        except ImportError as exc:
            if name == "curl":
                raise PhotoConfigError("the curl engine needs pycurl: pip install 'posync[photos-fast]'") from exc
        else:
            return CurlEngine(policy)
    if name in ("auto", "urllib3"):
        from posync.transfer.pool import Urllib3Engine

        return Urllib3Engine(policy)
    raise PhotoConfigError(f"unknown byte engine {name!r}: auto, curl or urllib3")
