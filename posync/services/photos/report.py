"""What a photo pass reports: counts a person reads, and the progress a bar shows while it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Progress", "ProgressFn", "SyncReport", "Tally"]


@dataclass(frozen=True, slots=True)
class Progress:
    phase: str  # "listing" | "transferring" | "deleting" | "done"
    listed: int
    photos_total: int  # photos that need bytes this pass
    photos_done: int  # of those: synced or failed
    failed: int
    bytes_total: int
    bytes_done: int
    elapsed: float


ProgressFn = Callable[[Progress], None]


@dataclass
class SyncReport:
    full: bool
    listed: int = 0  # photos HO listed
    changed: int = 0  # metadata rows written from the listing
    fetched: int = 0  # photos whose bytes were downloaded (identical bytes count once)
    copied: int = 0  # put in place from bytes already on the edge (dedupe)
    adopted: int = 0  # the store already held the right bytes
    synced: int = 0  # photos made synced this pass (fetched, copied or adopted, per photo)
    failed: int = 0
    refused: int = 0  # of failed: listed photos refused (malformed, or a key that could escape the store)
    waiting_product: int = 0
    bytes: int = 0
    requeued: int = 0  # a full check found these photos' bytes gone from the store: fetched again
    deleted: int = 0
    deletes_held: int = 0
    delete_note: str | None = None
    shifted: bool = False  # the listing kept shifting under its offsets: checkpoint not advanced
    relists: int = 0
    api_requests: int = 0
    byte_requests: int = 0
    error: str | None = None  # the listing failed (HO unreachable, say): checkpoint not advanced
    busy: bool = False  # another pass was running: this one did nothing
    # the first 50: photo_id (None: a refused photo without a usable id; then its position in the pass), reason,
    # detail
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # after the pass, the rows HO lists by state (waiting_product apart from pending), and how many of
    # them are not synced: failed ones waiting for their retry count too; waiting products do not
    states: dict[str, int] = field(default_factory=dict)
    unsynced: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # not a field: engine threads and the listing add failures

    def add_failures(self, entries: list[dict[str, Any]], *, refused: bool = False) -> None:
        """Count failed photos and keep the first 50 (from any thread)."""
        with self._lock:
            self.failed += len(entries)
            if refused:
                self.refused += len(entries)
            self.failures.extend(entries[:max(0, 50 - len(self.failures))])

    @property
    def ok(self) -> bool:
        """Every photo HO lists is synced, nothing failed and nothing waits for a person (a delete cap);
        photos waiting for a product the outlet lacks are fine."""
        return (self.error is None and self.failed == 0 and self.deletes_held == 0 and not self.shifted
                and self.unsynced == 0 and not self.busy)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class Tally:
    """Thread-safe counters behind the progress callback (engine threads report into it)."""

    def __init__(self, report: SyncReport, progress: ProgressFn | None) -> None:
        self.report = report
        self._progress = progress
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last = 0.0
        self.phase = "listing"
        self.total = self.done = 0
        self.bytes_total = self.bytes_done = 0

    @property
    def shown(self) -> bool:
        """Whether anyone watches the progress (without a callback, byte counts need not be fed in)."""
        return self._progress is not None

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n
        self.emit()

    def finished(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
        self.emit()

    def emit(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:  # a bar needs ten updates a second, not thousands
            return
        self._last = now
        with self._lock:
            p = Progress(self.phase, self.report.listed, self.total, self.done, self.report.failed,
                         self.bytes_total, self.bytes_done, now - self._started)
        self._progress(p)
