"""Pull: bring HO's changes of each pulled resource, page by page.

Each resource is pulled on its own: one that fails (HO refuses it, a page does not fit the host's table)
backs off by itself, logged once when it starts failing and once when it recovers, and the others go on.
Only an HO that cannot be reached or refuses the credentials ends the whole pull.

A resource whose HO version has not moved since its last complete pull is skipped. Pages come the way the
client says HO pages them (``HOClient.paging``): a commit-ordered cursor, saved with each page
(``posync.services.pull.cursor``); or ``updated_since`` + offset, checkpointed on HO's own
``sync_timestamp`` once a pass was read whole (``posync.services.pull.offset``). A page is applied in
transactions of at most ``apply_chunk_size`` records (``posync.services.pull.outlet``), so a huge page (an
HO that ignores ``limit``) never holds the outlet's write lock for long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from posync.db import UnitOfWork, WriteGate
from posync.errors import AuthenticationError, HOUnavailableError, PosyncError
from posync.ho import HOClient, VersionInfo
from posync.ho.base import Paging
from posync.models.enums import LogKind
from posync.registry import Registry, TrackedEntity
from posync.repositories import CheckpointRepository, EntityRepository, LogRepository, OutboxRepository
from posync.retry import OutagePolicy
from posync.services.apply import RemoteApplier
from posync.services.pull.context import PullContext, ho_versions
from posync.services.pull.cursor import cursor_pass
from posync.services.pull.offset import is_since, offset_pass
from posync.services.pull.outlet import PullOutlet
from posync.services.pull.reconcile import ReconcileReport, reconcile
from posync.services.pull.stats import PageTally, PullStats, ResourceHealth

__all__ = ["PullService"]

log = logging.getLogger("posync.pull")


class PullService:
    def __init__(self, engine: Engine, registry: Registry, client: HOClient, applier: RemoteApplier,
                 checkpoints: CheckpointRepository, entities: EntityRepository, logs: LogRepository, *,
                 outbox: OutboxRepository | None = None, page_size: int = 500, apply_chunk: int = 500,
                 since_overlap: float = 300.0, clock: Callable[[], float] = time.time, pause_gc: bool = False,
                 gate: WriteGate | None = None, backoff: OutagePolicy | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.engine = engine
        self.registry = registry
        self.client = client
        self.checkpoints = checkpoints
        self.logs = logs
        self.page_size = page_size
        self.since_overlap = since_overlap
        self._clock = clock
        self._pause_gc = pause_gc
        self._gate = gate or WriteGate()
        self._backoff = backoff or OutagePolicy()
        self.stopping = stopping
        self.health: dict[str, ResourceHealth] = {}
        self._outlet = PullOutlet(engine, self.transaction, applier, checkpoints, entities,
                                  outbox or OutboxRepository(), logs, apply_chunk=apply_chunk,
                                  host_busy=self._gate.host_busy, now=self.now)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        uow = UnitOfWork(self.engine, gate=self._gate, pause_gc=self._pause_gc, clock=self._clock)
        with uow.begin() as conn:
            yield conn

    def _context(self, tally: PageTally) -> PullContext:
        """What the passes need, read now: a page size set after construction counts."""
        return PullContext(self.client, self._outlet, self.page_size, self.since_overlap, self.stopping, tally)

    # -- all resources -----------------------------------------------------------------------------

    def pull_all(self, *, force: bool = False, versions: VersionInfo | Literal["ask"] | None = "ask") -> PullStats:
        """Every pulled resource, each on its own. ``force`` ignores the resources' own backoff.
        ``versions``: HO's answer to a version request just made (the outage probe's), else asked here."""
        stats = PullStats()
        if versions == "ask":
            versions = self.versions()
        for entity in self.ordered():
            if self.stopping():
                break
            health = self.health.get(entity.resource)
            if health is not None and not force and time.monotonic() < health.not_before:
                stats.deferred.append(entity.resource)
                continue
            # a resource that failed is pulled whether or not HO's version moved: it must show it works
            version = None if versions is None or health is not None else versions.of(entity.resource)
            try:
                self.pull(entity, version, stats)
            except (HOUnavailableError, AuthenticationError):
                raise  # HO is away or refuses us: the cycle backs off as a whole
            except PosyncError as exc:
                self._failed(entity.resource, exc, stats)
            else:
                self._recovered(entity.resource)
        return stats

    def ordered(self, *, children_first: bool = False) -> list[TrackedEntity]:
        """The pulled resources, a table before the tables whose foreign keys point at it (children first
        for deleting: a product goes before its category)."""
        entities = self.registry.pulled()
        by_table = {e.table: e for e in entities}
        tables = [t for t in sa.schema.sort_tables(list(by_table)) if t in by_table]
        ordered = [by_table[t] for t in tables]
        return ordered[::-1] if children_first else ordered

    def versions(self) -> VersionInfo | None:
        return ho_versions(self.client)

    def _failed(self, resource: str, exc: PosyncError, stats: PullStats | None, what: str = "pulling") -> None:
        health = self.health.setdefault(resource, ResourceHealth())
        health.failures += 1
        health.last_error = str(exc)
        delay = self._backoff.delay(health.failures)
        health.not_before = time.monotonic() + delay
        if stats is not None:
            stats.failed[resource] = str(exc)
        if health.failures == 1:
            health.since = self.now()
            self._forget_version(resource)
            log.warning("%s %s failed (%s); the other resources go on, %s is tried again in %.0fs",
                        what, resource, exc, resource, delay,
                        extra={"event": "pull.resource_failed", "resource": resource, "error": str(exc),
                               "retry_in_seconds": delay})
        else:
            log.debug("%s %s failed again (%s); next try in %.0fs", what, resource, exc, delay)

    def _forget_version(self, resource: str) -> None:
        """A failed resource is not skipped on HO's version after a restart either: its problem shows
        until it is fixed."""
        try:
            with self.transaction() as conn:
                self.checkpoints.save(conn, resource, ho_version=None)
        except PosyncError:  # the outlet database is the problem: nothing more to do here
            pass

    def _recovered(self, resource: str) -> None:
        health = self.health.pop(resource, None)
        if health is not None:
            log.info("pulling %s works again after %d failed attempts", resource, health.failures,
                     extra={"event": "pull.resource_recovered", "resource": resource, "failures": health.failures})

    # -- one resource ----------------------------------------------------------------------------------

    def pull(self, entity: TrackedEntity, ho_version: str | None = None, stats: PullStats | None = None) -> PullStats:
        stats = stats or PullStats()
        with self.engine.connect() as conn:
            checkpoint = self.checkpoints.get(conn, entity.resource)
        if ho_version is not None:  # a version is worth skipping on only for the same question to HO
            ho_version = f"{ho_version}@{self.client.scope(entity)}"
        if ho_version is not None and checkpoint is not None and checkpoint["ho_version"] == ho_version:
            stats.skipped_resources.append(entity.resource)
            return stats
        started = time.perf_counter()
        before = (stats.pages, stats.applied.written + stats.applied.deleted)
        cursor = checkpoint["cursor"] if checkpoint else None
        context = self._context(stats)
        # a checkpoint an offset pass left is read on the offset way, whatever paging HO offers now
        if self.client.paging is Paging.OFFSET or is_since(cursor):
            result = offset_pass(context, entity, cursor)
        else:
            result = cursor_pass(context, entity, cursor)
        stats.passes_read_again += result.read_again
        if result.resynced:
            stats.resynced.append(entity.resource)
        with self.transaction() as conn:
            if ho_version is not None and result.vouches_for(ho_version.split("@")[0]):
                self.checkpoints.save(conn, entity.resource, ho_version=ho_version)
            self.logs.add(conn, LogKind.PULL, self.now(), resource=entity.resource,
                           count=stats.applied.written + stats.applied.deleted - before[1],
                           duration_ms=(time.perf_counter() - started) * 1000,
                           detail=f"{stats.pages - before[0]} pages, {stats.applied.conflicts} conflicts")
        return stats

    # -- operating ---------------------------------------------------------------------------------------

    def reset(self, resource: str | None = None) -> list[str]:
        """Forget where the pulls of ``resource`` (default: every pulled resource) stand: the next pull
        reads it in full. Answers the resources reset."""
        names = [resource] if resource is not None else [e.resource for e in self.registry.pulled()]
        for name in names:
            self.registry[name]  # an unknown resource is a ConfigurationError
        with self.transaction() as conn:
            for name in names:
                self.checkpoints.save(conn, name, cursor=None, ho_version=None, reconcile_marker=None)
                self.logs.add(conn, LogKind.RESET, self.now(), resource=name, detail="checkpoint reset: full pull next")
        for name in names:
            self.health.pop(name, None)
        return names

    def reconcile(self, resource: str | None = None, *, force: bool = False,
                  max_delete_fraction: float = 0.5) -> list[ReconcileReport]:
        """The id reconciliation (``posync.services.pull.reconcile``) of one resource or every pulled one.
        Each resource on its own; a failure is logged and reported, the others go on."""
        entities = [self.registry[resource]] if resource is not None else self.ordered(children_first=True)
        reports: list[ReconcileReport] = []
        context = self._context(PageTally())  # what a listing applies is not reported
        for entity in entities:
            if self.stopping():
                break
            try:
                report = reconcile(context, entity, force=force, max_delete_fraction=max_delete_fraction)
            except (HOUnavailableError, AuthenticationError):
                raise
            except PosyncError as exc:
                # like a failing pull: once in the log, in status() until it works, retried with backoff
                self._failed(entity.resource, exc, None, "reconciling")
                self.health[entity.resource].last_error = f"reconciliation: {exc}"
                reports.append(ReconcileReport(entity.resource, error=str(exc)))
            else:
                reports.append(report)
                self._recovered(entity.resource)
        return reports
