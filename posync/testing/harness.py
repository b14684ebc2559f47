"""Driving a ``Posync`` step by step in tests: the supported way in, for posync's tests and a host app's.

    from posync.testing import SyncHarness

    h = SyncHarness(sync)             # sync: the posync.Posync under test
    h.drain()                         # push until nothing is due
    h.pull_all(force=True)            # pull every pulled resource
    leases, _ = h.claim(10)           # one push step at a time: claim ...
    h.settle(leases, h.client.push([le.change for le in leases]))   # ... send it yourself, settle
    h.set_clock(lambda: now[0])       # posync's clock, everywhere posync reads it

``Posync``'s parts (push, pull, the HO client, the worker) are private: what a test needs from them is
here, typed, and stays put when they move. The harness holds no state of its own: build one where it
is needed (``SyncHarness(outlet.sync).drain()``) or keep one beside the ``Posync``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from typing import Any, cast

import httpx
from sqlalchemy.engine import RowMapping

from posync.app import Posync
from posync.db import WriteGate
from posync.ho import HOClient, PushResult
from posync.registry import TrackedEntity
from posync.services.apply import RemoteApplier
from posync.services.pull.stats import PullStats
from posync.services.push import Lease, PushStats
from posync.workers.leader import SyncerLease
from posync.workers.sync_worker import CycleReport, SyncWorker

__all__ = ["SyncHarness"]


class SyncHarness:
    """Steps of a ``Posync``'s sync, one at a time, and the few parts a test looks at directly.

    Push: :meth:`drain`, :meth:`push_once`, :meth:`claim` and :meth:`settle` (with :attr:`client`'s
    ``push`` between them, to stand in for the wire), :attr:`owner`; :meth:`stub_send` (no wire) and
    :meth:`time_push` (a profile) for benchmarks. Pull: :meth:`pull_all`,
    :meth:`pull`, :meth:`set_page_size`, :meth:`checkpoint`. The scheduler's cycle: :meth:`run_cycle`
    (it honours the outage backoff, unlike ``sync.sync_now()``). Time: :meth:`set_clock`, :meth:`now`.
    :meth:`set_monotonic` (the outage backoff's clock).
    Parts: :attr:`client` (raw ``pull``/``push`` against HO, its clock offset), :attr:`http` (the
    ``httpx.Client`` under it), :attr:`applier`, :attr:`gate`, :attr:`lease`."""

    def __init__(self, sync: Posync) -> None:
        self.sync = sync

    # -- push ------------------------------------------------------------------------------------------

    def drain(self, max_batches: int | None = None) -> PushStats:
        """Push until nothing is due (or ``max_batches``). HO unreachable: the TransportError propagates,
        after every batch not yet settled has been given back."""
        return self.sync._push.drain(max_batches)

    def push_once(self) -> PushStats:
        """Claim one batch, send it, settle it (TransportError after giving the batch back)."""
        return self.sync._push.push_once()

    def claim(self, limit: int | None = None) -> tuple[list[Lease], int]:
        """Lease up to ``limit`` changes (default: the push batch size), one per entity: the leases and
        how many queued items folded into nothing."""
        return self.sync._push.claim(limit)

    def settle(self, leases: list[Lease], results: list[PushResult], stats: PushStats | None = None,
               duration_ms: float = 0.0) -> PushStats:
        """Record HO's ``results`` for ``leases`` (from :meth:`claim`), counted into ``stats`` (returned)."""
        stats = PushStats() if stats is None else stats
        self.sync._push.settle(leases, results, stats, duration_ms)
        return stats

    def stub_send(self, send: Callable[[list[Lease]], list[PushResult]]) -> None:
        """Answer push's requests with ``send(leases)`` instead of HO (the one call of a push that reaches
        HO): to measure or test the outlet's own work without a wire."""
        sender = self.sync._push._sender
        sender.send = send  # type: ignore[method-assign,assignment]

    def time_push(self, into: MutableMapping[str, float]) -> None:
        """From now on, add the seconds push spends in each of its steps to ``into["claim"]``,
        ``into["send"]`` (the wire) and ``into["settle"]`` (recording HO's answers): a profile of drains."""
        push = self.sync._push
        for part, name, key in ((push._claimer, "claim", "claim"), (push._sender, "send", "send"),
                                (push._settler, "record", "settle")):
            inner: Callable[..., Any] = getattr(part, name)

            def timed(*args: Any, _inner: Callable[..., Any] = inner, _key: str = key, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return _inner(*args, **kwargs)
                finally:
                    into[_key] = into.get(_key, 0.0) + time.perf_counter() - started

            setattr(part, name, timed)

    @property
    def owner(self) -> str:
        """Who this ``Posync`` is to the outbox's item leases (``lease_owner``)."""
        return self.sync._push.owner

    # -- pull ------------------------------------------------------------------------------------------

    def pull_all(self, *, force: bool = False) -> PullStats:
        """Pull every pulled resource (``force``: even where HO's version says nothing changed)."""
        return self.sync._pull.pull_all(force=force)

    def pull(self, resource: str | TrackedEntity) -> PullStats:
        """One resource's pull pass, whatever HO's version says."""
        entity = self.sync.registry[resource] if isinstance(resource, str) else resource
        return self.sync._pull.pull(entity)

    def set_page_size(self, page_size: int) -> None:
        """How many records a pull asks HO for at a time, from now on (``pull_page_size`` at start)."""
        self.sync._pull.page_size = page_size

    def checkpoint(self, resource: str) -> RowMapping | None:
        """Where ``resource``'s pulls stand (its ``posync_checkpoints`` row), or None."""
        with self.sync.engine.connect() as conn:
            return self.sync._pull.checkpoints.get(conn, resource)

    # -- the worker ------------------------------------------------------------------------------------

    def run_cycle(self, *, force: bool = False) -> CycleReport:
        """One scheduler cycle (push, pull, push): inside the outage backoff nothing is attempted
        (``ran`` False) unless ``force`` (what ``sync.sync_now()`` does)."""
        return self.sync._worker.run_cycle(force=force)

    # -- time ------------------------------------------------------------------------------------------

    def set_clock(self, clock: Callable[[], float]) -> None:
        """posync's wall clock (epoch seconds) from now on, wherever it reads one: claims, leases and
        retries, settling, pulls and applies, conflicts, the ORM hooks, management, the syncer lease.
        The same as ``Posync(..., clock=clock)`` after the fact. Outage backoffs run on the monotonic
        clock and are not affected."""
        sync = self.sync
        sync._push._uow.clock = clock
        sync._pull._clock = clock
        sync._applier._clock = clock
        sync._conflict_handler._clock = clock
        sync.capture._clock = clock
        sync.manager._clock = clock
        if sync._lease is not None:
            sync._lease._clock = clock

    def set_monotonic(self, monotonic: Callable[[], float]) -> None:
        """The worker's clocks (its outage backoff and probes, where idle polls land), for tests that step
        time."""
        self.sync._worker._monotonic = self.sync._worker._wall = monotonic

    def now(self) -> float:
        """posync's wall clock now (what :meth:`set_clock` set, else ``Posync(clock=...)``'s)."""
        return self.sync._push._uow.clock()

    # -- parts -----------------------------------------------------------------------------------------

    @property
    def client(self) -> HOClient:
        """The HO client push and pull use: ``pull(entity, page_size)``, ``push(changes)``, ``clock``."""
        return self.sync._client

    @property
    def http(self) -> httpx.Client:
        """The ``httpx.Client`` under :attr:`client` (its auth, event hooks)."""
        return cast(httpx.Client, cast(Any, self.sync._client)._core._http)

    @property
    def applier(self) -> RemoteApplier:
        """What applies HO's records (pull's and webhooks' path): ``apply(conn, entity, records, deleted)``."""
        return self.sync._applier

    @property
    def gate(self) -> WriteGate:
        """The write gate posync's write transactions pass (after the host's writes, on SQLite)."""
        return self.sync._gate

    @property
    def worker(self) -> SyncWorker:
        """The sync cycle's worker: ``push_due()`` (push on commit), ``online``, ``auth_error``."""
        return self.sync._worker

    @property
    def lease(self) -> SyncerLease | None:
        """The syncer lease (``settings.single_syncer``), else None: ``holder``, ``held()``."""
        return self.sync._lease
