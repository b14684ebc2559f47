"""The fast byte engine: libcurl's multi interface (pycurl), one thread driving N transfers.

libcurl keeps connections alive in the multi handle's cache, so N handles reuse N connections for every
photo. Stalls are libcurl's low-speed limit (under 1 byte/s for ``stall_timeout``); each attempt also has
an overall timeout, and the whole run the caller's deadline.

Python runs as little as possible per photo: the options that never change are set once per handle; a
photo below :data:`~posync.transfer.staged.RESUME_MIN` gets no header callback (its status is read
once the transfer is done, and a body that came with an error status is thrown away with its staged file);
progress is counted once per turn of the loop, not per chunk.

Every handle may speak only http and https, on the first request and on any redirect (libcurl's protocol
allow-lists, set once per handle): a ``file://`` URL fails with ``unsafe_url`` before a byte is read.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterable, Iterator

import pycurl

from posync.errors import PhotoTransferError
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
from posync.transfer.staged import Staged, StagingFailed, TooLong

__all__ = ["CurlEngine"]

_CONNECTION = {pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_GOT_NOTHING,
               pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR}
_OK = (200, 206)
_WEB = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS


class _Transfer:
    """One handle's current job and what its callbacks saw.

    With headers (a resumable photo, or a request that carries Range): the status and headers arrive
    first, and only a 200/206 body is staged. Without (small photos): every body byte is staged as it
    comes and the status is judged at the end; a wrong status discards what was staged."""

    __slots__ = ("error", "headers", "job", "reported", "staged", "status", "wanted")

    def __init__(self, job: FetchJob, with_headers: bool) -> None:
        self.job = job
        self.staged: Staged = job.staged
        self.status = 0 if with_headers else 200  # without headers: assumed, checked once done
        self.headers: dict[str, str] = {}
        self.wanted = 0  # 0: not begun, 1: staging the body, 2: dropping an error body
        self.error: PhotoTransferError | None = None
        self.reported = 0  # bytes already counted for progress

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
        if self.wanted != 1:
            if self.wanted == 2:
                return None
            if self.status not in _OK:
                self.wanted = 2
                return None  # an error body: read and dropped
            self.wanted = 1
            try:
                self.staged.begin(self.status, self.headers)
            except StagingFailed as exc:
                self.error = staging_error(self.job, exc)
                return 0
        try:
            self.staged.write(chunk)
        except TooLong:
            self.error = _TOO_LONG  # judged once the transfer is done: the answer's length is known then
            return 0  # abort the transfer
        except StagingFailed as exc:
            self.error = staging_error(self.job, exc)
            return 0
        return None


_TOO_LONG = PhotoTransferError("", "size_mismatch")  # a marker: _settle makes the photo's own error


class _Jobs:
    """The job source the lanes share: ``next`` under a lock (the source is a generator)."""

    def __init__(self, jobs: Iterable[FetchJob]) -> None:
        self._source: Iterator[FetchJob] | None = iter(jobs)
        self._lock = threading.Lock()

    def next(self) -> FetchJob | None:
        with self._lock:
            if self._source is None:
                return None
            job = next(self._source, None)
            if job is None:
                self._source = None
            return job

    @property
    def exhausted(self) -> bool:
        return self._source is None

    def stop(self) -> None:
        """No more jobs (a lane failed): the others finish what they hold and return."""
        with self._lock:
            self._source = None


class CurlEngine:
    """``policy.workers`` handles in up to :data:`LANES` lanes, each a thread driving a multi handle of its
    own. A second lane puts the second core to work: MD5, file writes and libcurl run without the GIL, so
    one lane's callbacks run while the other hashes or waits (bench/README.md, photos)."""

    name = "curl"
    LANES = 2

    def __init__(self, policy: TransferPolicy) -> None:
        self.policy = policy
        lanes = max(1, min(self.LANES, policy.workers // 2))
        self._lanes = [_Lane(policy, policy.workers // lanes + (1 if n < policy.workers % lanes else 0))
                       for n in range(lanes)]

    def run(self, jobs: Iterable[FetchJob], on_done: DoneFn, *, deadline: float, auth: AuthFn,
            on_bytes: BytesFn | None = None) -> None:
        source = _Jobs(jobs)
        errors: list[BaseException] = []

        def lane(n: int) -> None:
            try:
                self._lanes[n].run(source, on_done, deadline, auth, on_bytes)
            except BaseException as exc:  # raised again in the caller's thread
                source.stop()
                errors.append(exc)

        others = [threading.Thread(target=lane, args=(n,), name=f"posync-photos-curl-{n}", daemon=True)
                  for n in range(1, len(self._lanes))]
        for thread in others:
            thread.start()
        try:
            lane(0)
        finally:
            for thread in others:  # a lane ends by the deadline: its transfers' timeouts are capped by it
                thread.join(max(0.0, deadline - time.monotonic()) + self.policy.connect_timeout)
        if errors:
            raise errors[0]

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()
        self._lanes = []


class _Lane:
    """One thread's multi handle and its share of the handles."""

    def __init__(self, policy: TransferPolicy, handles: int) -> None:
        self.policy = policy
        self._multi = pycurl.CurlMulti()
        self._handles = [self._new_handle() for _ in range(handles)]

    def _new_handle(self) -> pycurl.Curl:
        p = self.policy
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.BUFFERSIZE, 128 * 1024)  # fewer write callbacks per photo
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.PROTOCOLS, _WEB)  # never file://, whatever a manifest says
        handle.setopt(pycurl.REDIR_PROTOCOLS, _WEB)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, int(p.connect_timeout * 1000))
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, max(1, int(p.stall_timeout)))
        return handle

    def run(self, source: _Jobs, on_done: DoneFn, deadline: float, auth: AuthFn,
            on_bytes: BytesFn | None) -> None:
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
                    else:
                        job = source.next()
                        if job is not None and job.staged.complete_on_disk():
                            on_done(FetchOutcome(job, None))
                            continue
                    if job is None:
                        break
                    if now >= deadline:
                        job.staged.keep()
                        on_done(FetchOutcome(job, job.last_error or PhotoTransferError(job.photo_id, "deadline")))
                        continue
                    self._start(free.pop(), job, auth, deadline, active)
                if not active:
                    if source.exhausted and not retries:
                        return
                    if retries and source.exhausted:
                        time.sleep(max(0.0, min(retries[0][0], deadline) - time.monotonic()))
                    continue
                self._pump()
                if on_bytes is not None:
                    _progress(active.values(), on_bytes)
                for handle, error in self._finished():
                    transfer = active.pop(handle)
                    free.append(handle)
                    self._multi.remove_handle(handle)
                    if on_bytes is not None:
                        _progress((transfer,), on_bytes)
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

    def _start(self, handle: pycurl.Curl, job: FetchJob, auth: AuthFn, deadline: float,
               active: dict[pycurl.Curl, _Transfer]) -> None:
        job.attempts += 1
        headers = job.staged.resume_headers()
        if job.authenticated:
            headers.update(auth(job.refreshed_auth and job.last_error is not None
                                and job.last_error.reason == "http_401"))
        with_headers = bool(headers) or job.staged.resumable  # status before the body; validators for resumes
        transfer = _Transfer(job, with_headers)
        handle.setopt(pycurl.URL, job.url)
        if headers:
            handle.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
        else:  # an empty list keeps the handle's last headers: another photo's Range, or HO's credentials
            handle.unsetopt(pycurl.HTTPHEADER)
        handle.setopt(pycurl.WRITEFUNCTION, transfer.write)
        if with_headers:
            handle.setopt(pycurl.HEADERFUNCTION, transfer.header)
        else:
            handle.unsetopt(pycurl.HEADERFUNCTION)
        left = max(0.001, min(self.policy.transfer_timeout, deadline - time.monotonic()))
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
        status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        error = transfer.error
        if status and status not in _OK and (error is None or error is _TOO_LONG):
            error = classify_status(job, status, transfer.headers.get("content-range"))  # whatever its body did
            if transfer.wanted == 1:  # staged before the status was known (no header callback): not the photo
                job.staged.discard()
        elif error is _TOO_LONG:
            error = too_long(job, int(handle.getinfo(pycurl.CONTENT_LENGTH_DOWNLOAD_T)))
        if error is None and curl_error is not None:
            error = _curl_failure(job, *curl_error)
        if error is None:
            if status not in _OK:
                error = classify_status(job, status)
            else:
                try:
                    if transfer.wanted == 0:  # an empty body
                        job.staged.begin(status, transfer.headers)
                    verdict = job.staged.verdict()
                except StagingFailed as exc:
                    error = staging_error(job, exc)
                else:
                    error = None if verdict is None else verdict_error(job, verdict)
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


def _curl_failure(job: FetchJob, errno: int, msg: str) -> PhotoTransferError:
    if errno == pycurl.E_UNSUPPORTED_PROTOCOL:  # the allow-list refused it (a URL, or a redirect's)
        return unsafe_url(job) or PhotoTransferError(job.photo_id, "unsafe_url", msg[:120], retryable=False)
    if errno == pycurl.E_OPERATION_TIMEDOUT:
        reason = "stalled" if "than" in msg else "timeout"  # "Operation too slow. Less than 1 bytes/sec"
    elif errno == pycurl.E_PARTIAL_FILE:
        reason = "short"
    elif errno in _CONNECTION:
        reason = "connection"
    else:
        reason = f"curl_{errno}"
    return PhotoTransferError(job.photo_id, reason, msg[:120])


def _progress(transfers: Iterable[_Transfer], on_bytes: BytesFn) -> None:
    for t in transfers:
        got = t.staged.received
        if got > t.reported:
            on_bytes(got - t.reported)
        t.reported = got
