"""The pure-Python byte engine: N threads over one urllib3 pool (kept-alive connections).

urllib3 speaks only http and https, but a URL of another scheme is refused here by name (``unsafe_url``),
before any request, rather than left to surface as a connection error that is retried."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import urllib3
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError, TimeoutError

from posync.errors import PhotoTransferError
from posync.stores.base import CHUNK
from posync.transfer.engine import (
    AuthFn,
    BytesFn,
    DoneFn,
    FetchJob,
    FetchOutcome,
    TransferPolicy,
    after_failure,
    classify_status,
    staging_error,
    too_long,
    unsafe_url,
    verdict_error,
)
from posync.transfer.staged import StagingFailed, TooLong

__all__ = ["Urllib3Engine"]


class Urllib3Engine:
    name = "urllib3"

    def __init__(self, policy: TransferPolicy) -> None:
        self.policy = policy
        self._pool = urllib3.PoolManager(num_pools=8, maxsize=policy.workers, block=True, retries=False,
                                         timeout=urllib3.Timeout(connect=policy.connect_timeout,
                                                                 read=policy.stall_timeout))

    def run(self, jobs: Iterable[FetchJob], on_done: DoneFn, *, deadline: float, auth: AuthFn,
            on_bytes: BytesFn | None = None) -> None:
        source: Iterator[FetchJob] = iter(jobs)
        lock = threading.Lock()

        def next_job() -> FetchJob | None:
            with lock:
                return next(source, None)

        def worker() -> None:
            while (job := next_job()) is not None:
                on_done(self._fetch(job, deadline, auth, on_bytes))

        with ThreadPoolExecutor(self.policy.workers, thread_name_prefix="posync-photo") as pool:
            futures = [pool.submit(worker) for _ in range(self.policy.workers)]
            for f in futures:
                f.result()

    def _fetch(self, job: FetchJob, deadline: float, auth: AuthFn, on_bytes: BytesFn | None) -> FetchOutcome:
        if (refused := unsafe_url(job)) is not None:
            return FetchOutcome(job, refused)
        if job.staged.complete_on_disk():
            return FetchOutcome(job, None)
        while True:
            if time.monotonic() >= deadline:
                job.staged.keep()
                return FetchOutcome(job, job.last_error or PhotoTransferError(job.photo_id, "deadline"))
            job.attempts += 1
            error = self._attempt(job, deadline, auth, on_bytes)
            if error is None:
                return FetchOutcome(job, None)
            now = time.monotonic()
            if not after_failure(job, error, self.policy, now, deadline):
                return FetchOutcome(job, error)
            time.sleep(max(0.0, job.not_before - now))

    def _attempt(self, job: FetchJob, deadline: float, auth: AuthFn,
                 on_bytes: BytesFn | None) -> PhotoTransferError | None:
        staged = job.staged
        headers = staged.resume_headers()
        if job.authenticated:
            headers.update(auth(job.refreshed_auth and job.last_error is not None
                                and job.last_error.reason == "http_401"))
        ends = min(deadline, time.monotonic() + self.policy.transfer_timeout)
        try:
            # a bounded wait for a pooled connection: a slot that never comes back must not wedge the pass
            response = self._pool.request("GET", job.url, headers=headers, preload_content=False, redirect=False,
                                          pool_timeout=self.policy.connect_timeout)
        except (TimeoutError, ReadTimeoutError) as exc:
            return PhotoTransferError(job.photo_id, "timeout", type(exc).__name__)
        except HTTPError as exc:
            return PhotoTransferError(job.photo_id, "connection", type(exc).__name__)
        clean = False
        try:
            if response.status not in (200, 206):
                return classify_status(job, response.status, response.headers.get("content-range"))
            staged.begin(response.status, {k.lower(): v for k, v in response.headers.items()})
            for chunk in response.stream(CHUNK):
                staged.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                if time.monotonic() > ends:
                    return PhotoTransferError(job.photo_id, "timeout", "transfer took too long")
            clean = True
        except TooLong:
            length = response.headers.get("content-length")
            return too_long(job, int(length) if length and length.isdigit() else None)
        except StagingFailed as exc:
            return staging_error(job, exc)
        except (ReadTimeoutError, TimeoutError):
            return PhotoTransferError(job.photo_id, "stalled", f"no byte for {self.policy.stall_timeout:g}s")
        except ProtocolError as exc:  # closed early (urllib3 enforces Content-Length)
            return PhotoTransferError(job.photo_id, "short", type(exc).__name__)
        except (HTTPError, OSError) as exc:
            return PhotoTransferError(job.photo_id, "connection", type(exc).__name__)
        finally:
            if not clean:  # never reuse a half-read connection: close it, then give the slot back
                response.close()
            response.release_conn()
        try:
            verdict = staged.verdict()
        except StagingFailed as exc:
            return staging_error(job, exc)
        return None if verdict is None else verdict_error(job, verdict)

    def close(self) -> None:
        self._pool.clear()
