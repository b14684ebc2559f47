"""Pull: bring HO's changes of each pulled resource, page by page.

Each resource is pulled on its own: one that fails (HO refuses it, a page does not fit the host's table)
backs off by itself, logged once when it starts failing and once when it recovers, and the others go on.
Only an HO that cannot be reached or refuses the credentials ends the whole pull.

A resource whose HO version has not moved since its last complete pull is skipped. Pages come one of
two ways (``posync.services.passes``): posync's commit-ordered cursor, saved with each page; or the seed
HO's ``updated_since`` + offset, checkpointed on HO's own ``sync_timestamp`` once a pass was read whole.
A page is applied in transactions of at most ``apply_chunk_size`` records, so a huge page (an HO that
ignores ``limit``) never holds the outlet's write lock for long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from posync.db import UnitOfWork, WriteGate
from posync.errors import AuthenticationError, HOErrorResponse, HOUnavailableError, PosyncError
from posync.ho import HOClient, VersionInfo
from posync.registry import Registry, TrackedEntity
from posync.repositories import CheckpointRepository, EntityRepository, LogRepository, OutboxRepository
from posync.services.apply import ApplyStats, RemoteApplier
from posync.services.retry import OutagePolicy

__all__ = ["PullService", "PullStats", "ResourceHealth"]

log = logging.getLogger("posync.pull")
# the most records applied in one transaction while the host writes on the same SQLite file
BUSY_CHUNK = 100


@dataclass
class PullStats:
    pages: int = 0
    skipped_resources: list[str] = field(default_factory=list)
    resynced: list[str] = field(default_factory=list)
    # resources that failed this time (resource -> the error) or wait out an earlier failure
    failed: dict[str, str] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    passes_read_again: int = 0
    applied: ApplyStats = field(default_factory=ApplyStats)


@dataclass
class ResourceHealth:
    """One resource's pull failures (in this process): they back off on their own."""

    failures: int = 0
    since: datetime | None = None
    last_error: str | None = None
    not_before: float = 0.0  # time.monotonic()

    def as_dict(self) -> dict[str, Any]:
        return {"failures": self.failures, "failing_since": self.since.isoformat() if self.since else None,
                "last_error": self.last_error,
                "next_attempt_in": max(0.0, round(self.not_before - time.monotonic(), 1))}


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
        self._applier = applier
        self.checkpoints = checkpoints
        self.entities = entities
        self.outbox = outbox or OutboxRepository()
        self.logs = logs
        self.page_size = page_size
        self._apply_chunk = apply_chunk
        self.since_overlap = since_overlap
        self._clock = clock
        self._pause_gc = pause_gc
        self._gate = gate or WriteGate()
        self._backoff = backoff or OutagePolicy()
        self.stopping = stopping
        self.health: dict[str, ResourceHealth] = {}

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        uow = UnitOfWork(self.engine, gate=self._gate, pause_gc=self._pause_gc, clock=self._clock)
        with uow.begin() as conn:
            yield conn

    # -- all resources -----------------------------------------------------------------------------

    def pull_all(self, *, force: bool = False) -> PullStats:
        """Every pulled resource, each on its own. ``force`` ignores the resources' own backoff."""
        stats = PullStats()
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
        try:
            return self.client.version()
        except HOErrorResponse:  # an HO without the version endpoint: pull every time
            return None

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
                        what, resource, exc, resource, delay)
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
            log.info("pulling %s works again after %d failed attempts", resource, health.failures)

    # -- one resource ----------------------------------------------------------------------------------

    def pull(self, entity: TrackedEntity, ho_version: str | None = None, stats: PullStats | None = None) -> PullStats:
        from posync.services import passes  # the passes use this service's helpers

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
        settled: datetime | bool | None  # an offset pass settles at its start; a cursor pass always settles
        if self.client.dialect == "seed" or (cursor or "").startswith(passes.SINCE):
            settled = passes.offset_pass(self, entity, cursor, stats)
        else:
            settled = passes.cursor_pass(self, entity, cursor, stats)
        with self.transaction() as conn:
            if ho_version is not None and settled and passes.version_settled(ho_version.split("@")[0], settled):
                self.checkpoints.save(conn, entity.resource, ho_version=ho_version)
            self.logs.add(conn, "pull", self.now(), resource=entity.resource,
                           count=stats.applied.written + stats.applied.deleted - before[1],
                           duration_ms=(time.perf_counter() - started) * 1000,
                           detail=f"{stats.pages - before[0]} pages, {stats.applied.conflicts} conflicts")
        return stats

    def apply_page(self, entity: TrackedEntity, records: Sequence[dict[str, Any]],
                   deleted: Sequence[dict[str, Any]], stats: PullStats, **checkpoint: Any) -> None:
        """Apply one page in transactions of at most ``apply_chunk`` records; the checkpoint values (if
        any) are saved with the last one. Re-applying a chunk is harmless (by version), so a crash
        between chunks only means the page is read again."""
        items: list[tuple[dict[str, Any], bool]] = [*((r, False) for r in records), *((d, True) for d in deleted)]
        size = min(self._apply_chunk, BUSY_CHUNK) if self._gate.host_busy() else self._apply_chunk
        chunks = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
        for n, chunk in enumerate(chunks):
            with self.transaction() as conn:
                stats.applied.add(self._applier.apply(conn, entity, [r for r, gone in chunk if not gone],
                                                      [r for r, gone in chunk if gone], source="pull"))
                if checkpoint and n == len(chunks) - 1:
                    self.checkpoints.save(conn, entity.resource, last_pull_at=self.now(), **checkpoint)
        stats.pages += 1

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
                self.logs.add(conn, "reset", self.now(), resource=name, detail="checkpoint reset: full pull next")
        for name in names:
            self.health.pop(name, None)
        return names

    def reconcile(self, resource: str | None = None, *, force: bool = False,
                  max_delete_fraction: float = 0.5) -> list[Any]:
        """The id reconciliation (``posync.services.reconcile``) of one resource or every pulled one.
        Each resource on its own; a failure is logged and reported, the others go on."""
        from posync.services.reconcile import ReconcileReport, reconcile

        entities = [self.registry[resource]] if resource is not None else self.ordered(children_first=True)
        reports: list[ReconcileReport] = []
        stats = PullStats()
        for entity in entities:
            if self.stopping():
                break
            try:
                report = reconcile(self, entity, stats, force=force, max_delete_fraction=max_delete_fraction)
            except (HOUnavailableError, AuthenticationError):
                raise
            except PosyncError as exc:
                # like a failing pull: once in the log, in status() until it works, retried with backoff
                self._failed(entity.resource, exc, None, "reconciling")
                self.health[entity.resource].last_error = f"reconciliation: {exc}"
                reports.append(ReconcileReport(entity.resource, error=str(exc)))
            else:
                reports.append(report)
                if entity.resource not in stats.failed:
                    self._recovered(entity.resource)
        return reports
