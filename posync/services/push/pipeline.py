"""The drain: batches claimed, sent and settled until nothing is due, the database work of one batch
overlapping HO's work on another.

Batches queue for one wire thread, up to ``QUEUED`` claimed and unsettled at a time (never two of one
entity: an entity in flight is not claimed). The wire takes the next batch the moment it is done with one;
meanwhile the caller's thread settles what came back and claims more, so the outlet's database work
overlaps HO's and neither waits on the other's slow batch. Settling one batch and claiming another share
a transaction: one commit, not two. While the oldest batch is still on the wire, the caller's thread
claims ahead rather than wait.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from sqlalchemy.engine import Connection

from posync.db import UnitOfWork
from posync.ho import PushResult
from posync.services.push.claim import Claimer
from posync.services.push.lease import Lease
from posync.services.push.send import Sender
from posync.services.push.settle import Settler
from posync.services.push.stats import PushStats

__all__ = ["BUSY_BATCH", "QUEUED", "Pipeline"]

# A drain's batches claimed and not yet settled, at most: one on the wire, the rest queued behind it
QUEUED = 3
# the largest batch while the host writes on the same SQLite file: its claim and its settle take a few
# milliseconds each (bench/bench_host_latency.py)
BUSY_BATCH = 100

_Sent = Future[tuple[dict[int, PushResult], float]]  # HO's answers by item id, and how long HO took (ms)


class Pipeline:
    def __init__(self, uow: UnitOfWork, claimer: Claimer, sender: Sender, settler: Settler, *, batch_size: int,
                 stopping: Callable[[], bool]) -> None:
        self._uow = uow
        self._claimer = claimer
        self._sender = sender
        self._settler = settler
        self._batch_size = batch_size
        self._stopping = stopping

    def drain(self, max_batches: int | None = None) -> PushStats:
        """Push until nothing is due (or ``max_batches``). An error (TransportError: HO unreachable)
        propagates after every batch not yet settled has been given back. A stop request (``stopping``)
        claims nothing more; what is queued is finished or given back."""
        total = PushStats()
        queue: deque[tuple[list[Lease], _Sent]] = deque()
        claimed = 0
        gate = self._uow.gate
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="posync-push") as wire:

            def room() -> bool:
                return (len(queue) < QUEUED and (max_batches is None or claimed < max_batches)
                        and not self._stopping())

            def submit(batch: list[Lease]) -> None:
                nonlocal claimed
                claimed += 1
                queue.append((batch, wire.submit(self._timed_deliver, batch)))

            with self._uow.begin() as conn:
                first = self._claim_some(conn, total)
            if first:
                submit(first)
            exhausted = not first  # a claim found nothing due: finish what is queued, claim no more
            try:
                while queue:
                    batch, sent = queue[0]
                    while not sent.done() and not exhausted and room():
                        with self._uow.begin() as conn:  # the wire is busy: claim ahead instead of waiting
                            ahead = self._claim_some(conn, total)
                        if not ahead:
                            break  # maybe only followers of batches in flight: try again after a settle
                        submit(ahead)
                    outcome, elapsed_ms = sent.result()
                    queue.popleft()
                    stats = PushStats(batches=1, sent=len(batch))
                    following: list[Lease] = []
                    with self._uow.begin() as conn:
                        self._settler.record(conn, batch, [outcome[lease.item_id] for lease in batch], stats,
                                             elapsed_ms)
                        # one commit for both, unless the till is writing: then two short transactions
                        if not exhausted and room() and not gate.host_busy():
                            following = self._claim_some(conn, total)
                            exhausted = not following
                    if not following and not exhausted and room():
                        with self._uow.begin() as conn:
                            following = self._claim_some(conn, total)
                            exhausted = not following
                    if following:
                        submit(following)
                    total.add(stats)
            except BaseException:
                # HO unreachable (or anything else): nothing queued goes out any more, and every batch
                # still queued goes back untouched, sent or not (a resend of one HO applied is a
                # duplicate). A batch whose settle failed keeps its lease until it runs out.
                for _, later in queue:
                    later.cancel()
                wait([later for _, later in queue])
                self._settler.give_back([lease for unsettled, _ in queue for lease in unsettled])
                raise
        return total

    def _timed_deliver(self, leases: list[Lease]) -> tuple[dict[int, PushResult], float]:
        """The batch to HO, on the wire thread, with how long HO took (ms) for the sync log."""
        started = time.perf_counter()
        outcome = self._sender.deliver(leases)
        return outcome, (time.perf_counter() - started) * 1000

    def _claim_some(self, conn: Connection, total: PushStats) -> list[Lease]:
        """Claim a batch, passing over rounds that only folded changes into nothing. While the till is
        writing (posync/db.py), batches are small: each of posync's write transactions stays short."""
        size = min(self._batch_size, BUSY_BATCH) if self._uow.gate.host_busy() else self._batch_size
        while True:
            leases, nothing = self._claimer.claim(conn, size)
            total.coalesced_away += nothing
            if leases or not nothing:
                return leases
