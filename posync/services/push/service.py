"""PushService: the push use case as the worker and the app see it, put together from its parts
(claim, lease, send, settle, the drain's pipeline)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable

from posync.db import UnitOfWork
from posync.errors import TransportError
from posync.ho import HOClient, PushResult
from posync.registry import Registry
from posync.repositories import EntityRepository, LogRepository, OutboxRepository
from posync.services.conflicts import ConflictHandler
from posync.services.push.claim import Claimer
from posync.services.push.lease import Lease, Leaser
from posync.services.push.options import PushOptions
from posync.services.push.pipeline import Pipeline
from posync.services.push.send import Sender
from posync.services.push.settle import Settler
from posync.services.push.stats import PushStats

__all__ = ["PushService"]


class PushService:
    """``uow``: posync's write transactions and the clock. ``rng`` draws the retries' jitter;
    ``stopping`` says a drain should claim nothing more."""

    def __init__(self, uow: UnitOfWork, registry: Registry, client: HOClient, outbox: OutboxRepository,
                 entities: EntityRepository, handler: ConflictHandler, logs: LogRepository,
                 options: PushOptions | None = None, *, rng: random.Random | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        options = options or PushOptions()
        self.owner = options.owner or f"posync-{uuid.uuid4().hex[:12]}"
        self._uow = uow
        self._batch_size = options.batch_size
        leaser = Leaser(registry, outbox, entities, logs, owner=self.owner, lease_seconds=options.lease_seconds)
        self._claimer = Claimer(uow, outbox, leaser, options)
        self._sender = Sender(registry, client)
        self._settler = Settler(uow, registry, outbox, entities, handler, logs, owner=self.owner,
                                retry=options.retry, rng=rng or random.Random())
        self._pipeline = Pipeline(uow, self._claimer, self._sender, self._settler, batch_size=options.batch_size,
                                  stopping=stopping)

    def claim(self, limit: int | None = None) -> tuple[list[Lease], int]:
        """Lease up to ``limit`` changes (one per entity). Returns the leases and how many queued items
        folded into nothing (a create and delete that HO never needs to see)."""
        with self._uow.begin() as conn:
            return self._claimer.claim(conn, limit or self._batch_size)

    def settle(self, leases: list[Lease], results: list[PushResult], stats: PushStats,
               duration_ms: float) -> None:
        """Record HO's ``results`` for ``leases`` (claimed by :meth:`claim`) in a transaction of their own."""
        self._settler.settle(leases, results, stats, duration_ms)

    def push_once(self) -> PushStats:
        """Claim one batch, send it, settle it. Raises TransportError (after giving the batch back)
        when HO cannot be reached or understood."""
        leases, nothing = self.claim()
        stats = PushStats(coalesced_away=nothing)
        if not leases:
            return stats
        started = time.perf_counter()
        try:
            outcome = self._sender.deliver(leases)
        except TransportError:
            self._settler.give_back(leases)
            raise
        stats.batches, stats.sent = 1, len(leases)
        self.settle(leases, [outcome[lease.item_id] for lease in leases], stats,
                    (time.perf_counter() - started) * 1000)
        return stats

    def drain(self, max_batches: int | None = None) -> PushStats:
        """Push until nothing is due (or ``max_batches``), pipelined (``posync.services.push.pipeline``).
        An error (TransportError: HO unreachable) propagates to the caller after every batch not yet
        settled has been given back."""
        return self._pipeline.drain(max_batches)
