"""The fast byte engine: libcurl's multi interface (pycurl), one thread driving N transfers.

libcurl keeps connections alive in the multi handle's cache, so N handles reuse N connections for every
photo. Stalls are libcurl's low-speed limit (under 1 byte/s for ``stall_timeout``); each attempt also has
an overall timeout, and the whole run the caller's deadline.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterable, Iterator

import pycurl

from posync.photos.errors import PhotoTransferError
from posync.photos.transfer.engine import (
    AuthFn,
    BytesFn,
    DoneFn,
    FetchJob,
    FetchOutcome,
    TransferPolicy,
    after_failure,
    classify_status,
)
from posync.photos.transfer.staged import TooLong

__all__ = ["CurlEngine"]

_CONNECTION = {pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_GOT_NOTHING,
               pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR}


class _Transfer:
    """One handle's current job and what its callbacks saw."""

    __slots__ = ("began", "bytes_fn", "error", "headers", "job", "status")

    def __init__(self, job: FetchJob, bytes_fn: BytesFn | None) -> None:
        self.job = job
        self.bytes_fn = bytes_fn
        self.status = 0
        self.headers: dict[str, str] = {}
        self.began = False
        self.error: PhotoTransferError | None = None

    def header(self, line: bytes) -> None:
        text = line.decode("iso-8859-1").strip()
        if text.startswith("HTTP/"):  # a new response (after a 100 Continue, say): start again
            parts = text.split()
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.headers = {}
        elif ":" in text:
            name, _, value = text.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def write(self, chunk: bytes) -> int | None:
        if self.status not in (200, 206):
            return None  # an error body: read and dropped
        staged = self.job.staged
        try:
            if not self.began:
                staged.begin(self.status, self.headers)
                self.began = True
            staged.write(chunk)
        except TooLong:
            self.error = PhotoTransferError(self.job.photo_id, "long", f"more than {self.job.size} bytes")
            return 0  # abort the transfer
        except OSError as exc:
            self.error = PhotoTransferError(self.job.photo_id, "staging", exc.strerror or "", retryable=False)
            return 0
        if self.bytes_fn is not None:
            self.bytes_fn(len(chunk))
        return None


class CurlEngine:
    name = "curl"

    def __init__(self, policy: TransferPolicy) -> None:
        self.policy = policy
        self._multi = pycurl.CurlMulti()
        self._handles = [pycurl.Curl() for _ in range(policy.workers)]

    def run(self, jobs: Iterable[FetchJob], on_done: DoneFn, *, deadline: float, auth: AuthFn,
            on_bytes: BytesFn | None = None) -> None:
        source: Iterator[FetchJob] | None = iter(jobs)
        free = list(self._handles)
        active: dict[pycurl.Curl, _Transfer] = {}
        retries: list[tuple[float, int, FetchJob]] = []
        seq = itertools.count()
        try:
            while True:
                now = time.monotonic()
                while free:
                    job: FetchJob | None = None
                    if retries and retries[0][0] <= now:
                        job = heapq.heappop(retries)[2]
                    elif source is not None:
                        job = next(source, None)
                        if job is None:
                            source = None
                        elif job.staged.complete_on_disk():
                            on_done(FetchOutcome(job, None))
                            continue
                    if job is None:
                        break
                    if now >= deadline:
                        job.staged.keep()
                        on_done(FetchOutcome(job, job.last_error or PhotoTransferError(job.photo_id, "deadline")))
                        continue
                    self._start(free.pop(), job, auth, on_bytes, deadline, active)
                if not active:
                    if source is None and not retries:
                        return
                    if retries and source is None:
                        time.sleep(max(0.0, min(retries[0][0], deadline) - time.monotonic()))
                    continue
                self._pump()
                for handle, error in self._finished():
                    transfer = active.pop(handle)
                    free.append(handle)
                    self._multi.remove_handle(handle)
                    self._settle(transfer, handle, error, deadline, on_done, retries, seq)
                if time.monotonic() >= deadline:
                    for handle, transfer in list(active.items()):
                        self._multi.remove_handle(handle)
                        free.append(handle)
                        transfer.job.staged.keep()
                        on_done(FetchOutcome(transfer.job, PhotoTransferError(transfer.job.photo_id, "deadline")))
                    active.clear()
        finally:
            for handle in active:
                self._multi.remove_handle(handle)
                active[handle].job.staged.keep()

    def _start(self, handle: pycurl.Curl, job: FetchJob, auth: AuthFn, on_bytes: BytesFn | None,
               deadline: float, active: dict[pycurl.Curl, _Transfer]) -> None:
        job.attempts += 1
        headers = job.staged.resume_headers()
        if job.authenticated:
            headers.update(auth(job.refreshed_auth and job.last_error is not None
                                and job.last_error.reason == "http_401"))
        transfer = _Transfer(job, on_bytes)
        p = self.policy
        handle.reset()
        handle.setopt(pycurl.URL, job.url)
        handle.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
        handle.setopt(pycurl.WRITEFUNCTION, transfer.write)
        handle.setopt(pycurl.HEADERFUNCTION, transfer.header)
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, int(p.connect_timeout * 1000))
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, max(1, int(p.stall_timeout)))
        left = max(0.001, min(p.transfer_timeout, deadline - time.monotonic()))
        handle.setopt(pycurl.TIMEOUT_MS, int(left * 1000))
        self._multi.add_handle(handle)
        active[handle] = transfer

    def _pump(self) -> None:
        while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        self._multi.select(0.05)
        while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass

    def _finished(self) -> list[tuple[pycurl.Curl, tuple[int, str] | None]]:
        done: list[tuple[pycurl.Curl, tuple[int, str] | None]] = []
        while True:
            queued, ok, failed = self._multi.info_read()
            done.extend((h, None) for h in ok)
            done.extend((h, (errno, msg)) for h, errno, msg in failed)
            if not queued:
                return done

    def _settle(self, transfer: _Transfer, handle: pycurl.Curl, curl_error: tuple[int, str] | None,
                deadline: float, on_done: DoneFn, retries: list[tuple[float, int, FetchJob]],
                seq: itertools.count[int]) -> None:
        job = transfer.job
        error = transfer.error
        if error is None and curl_error is not None:
            errno, msg = curl_error
            if errno == pycurl.E_OPERATION_TIMEDOUT:
                reason = "stalled" if "than" in msg else "timeout"  # "Operation too slow. Less than 1 bytes/sec"
            elif errno == pycurl.E_PARTIAL_FILE:
                reason = "short"
            elif errno in _CONNECTION:
                reason = "connection"
            else:
                reason = f"curl_{errno}"
            error = PhotoTransferError(job.photo_id, reason, msg[:120])
        if error is None:
            status = int(handle.getinfo(pycurl.RESPONSE_CODE))
            if status not in (200, 206):
                error = classify_status(job, status)
            else:
                if not transfer.began:  # an empty body
                    job.staged.begin(status, transfer.headers)
                verdict = job.staged.verdict()
                if verdict is not None:
                    error = PhotoTransferError(job.photo_id, verdict, f"{job.staged.offset} of {job.size} bytes")
        if error is None:
            on_done(FetchOutcome(job, None))
            return
        now = time.monotonic()
        if after_failure(job, error, self.policy, now, deadline):
            heapq.heappush(retries, (job.not_before, next(seq), job))
        else:
            on_done(FetchOutcome(job, error))

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._multi.close()
        self._handles = []
