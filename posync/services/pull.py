"""Pull: bring HO's changes of each pulled resource, page by page, from a commit-ordered cursor.

Each page is applied and its cursor saved in one transaction, so a crash between pages resumes where
it stopped and a page applied twice applies once (by version). A resource whose HO version has not
moved since the last complete pull is skipped. When HO says the cursor is older than its tombstones
(``CURSOR_EXPIRED``), the resource is read in full and local rows HO no longer has are deleted,
except rows that carry an unpushed local change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from posync import _gc
from posync.db import write_transaction
from posync.errors import HOErrorResponse, ResyncRequiredError
from posync.models.enums import OUTSTANDING
from posync.models.outbox import OutboxItem
from posync.registry import Registry, TrackedEntity
from posync.repositories import CheckpointRepository, EntityRepository, LogRepository
from posync.services.apply import ApplyStats, RemoteApplier
from posync.transport import HOClient, PullPage

__all__ = ["PullService", "PullStats"]

log = logging.getLogger("posync.pull")
OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]
LEGACY_PREFIX = "since:"
LEGACY_OVERLAP = timedelta(minutes=5)
# pulling keeps the cyclic GC paused (posync/_gc.py) and lets it collect this often
_GC_EVERY_PAGES = 50


@dataclass
class PullStats:
    pages: int = 0
    skipped_resources: list[str] = field(default_factory=list)
    resynced: list[str] = field(default_factory=list)
    applied: ApplyStats = field(default_factory=ApplyStats)


class PullService:
    def __init__(self, engine: Engine, registry: Registry, client: HOClient, applier: RemoteApplier,
                 checkpoints: CheckpointRepository, entities: EntityRepository, logs: LogRepository, *,
                 page_size: int = 500, clock: Callable[[], float] = time.time, pause_gc: bool = True) -> None:
        self._engine = engine
        self._registry = registry
        self._client = client
        self._applier = applier
        self._checkpoints = checkpoints
        self._entities = entities
        self._logs = logs
        self._page_size = page_size
        self._clock = clock
        self._pause_gc = pause_gc

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def pull_all(self) -> PullStats:
        stats = PullStats()
        versions: dict[str, Any] | None
        try:
            versions = self._client.version().get("resources") or {}
        except HOErrorResponse:  # an HO without the version endpoint: pull every time
            versions = None
        for entity in self._registry.pulled():
            # a resource HO has never changed has no entry: version 0
            self.pull(entity, None if versions is None else int(versions.get(entity.resource, 0)), stats)
        return stats

    def pull(self, entity: TrackedEntity, ho_version: int | None = None, stats: PullStats | None = None) -> PullStats:
        stats = stats or PullStats()
        with self._engine.connect() as conn:
            checkpoint = self._checkpoints.get(conn, entity.resource)
        if ho_version is not None and checkpoint is not None and checkpoint["ho_version"] == ho_version:
            stats.skipped_resources.append(entity.resource)
            return stats
        started = time.perf_counter()
        try:
            self._incremental(entity, checkpoint["cursor"] if checkpoint else None, stats)
        except ResyncRequiredError:
            log.warning("%s: cursor older than HO's tombstones, reading it in full", entity.resource)
            self._full_resync(entity, stats)
        with write_transaction(self._engine) as conn:
            if ho_version is not None:
                self._checkpoints.save(conn, entity.resource, ho_version=ho_version)
            self._logs.add(conn, "pull", self._now(), resource=entity.resource, count=stats.applied.written
                           + stats.applied.deleted, duration_ms=(time.perf_counter() - started) * 1000,
                           detail=f"{stats.pages} pages, {stats.applied.conflicts} conflicts")
        return stats

    def _incremental(self, entity: TrackedEntity, cursor: str | None, stats: PullStats) -> None:
        if cursor is not None and cursor.startswith(LEGACY_PREFIX):
            self._legacy(entity, cursor, stats)
            return
        page = self._client.pull(entity.resource, cursor, self._page_size)
        if page.next_cursor is None and (page.has_more or page.sync_timestamp):
            # an HO without cursors (seed 004's updated_since + offset): this pass goes the legacy way
            self._legacy(entity, cursor, stats, first=page)
            return
        # The next page is fetched while this one is applied: HTTP and SQLite overlap. The cyclic GC stays
        # paused while pages flow, with a young collection every _GC_EVERY_PAGES pages (posync/_gc.py).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="posync-pull") as prefetch, \
                _gc.paused(self._pause_gc):
            while True:
                cursor = page.next_cursor or cursor
                upcoming = (prefetch.submit(self._client.pull, entity.resource, cursor, self._page_size)
                            if page.has_more else None)
                with write_transaction(self._engine) as conn:
                    stats.applied.add(self._applier.apply(conn, entity, page.records, page.deleted,
                                                          source="pull"))
                    self._checkpoints.save(conn, entity.resource, cursor=cursor, last_pull_at=self._now())
                stats.pages += 1
                if stats.pages % _GC_EVERY_PAGES == 0:
                    _gc.collect_young()
                if upcoming is None:
                    return
                page = upcoming.result()

    def _legacy(self, entity: TrackedEntity, cursor: str | None, stats: PullStats,
                first: PullPage | None = None) -> None:
        """``updated_since`` + ``offset`` paging, for an HO that has no cursor. The next pass starts from HO's
        own ``sync_timestamp`` of this pass's first page (HO's clock, never ours) minus an overlap, so rows
        that committed late or shifted between offsets are read again; applying by version makes the
        overlap harmless."""
        since = cursor[len(LEGACY_PREFIX):] if cursor and cursor.startswith(LEGACY_PREFIX) else None
        page = first or self._client.pull(entity.resource, None, self._page_size, updated_since=since)
        pass_started = page.sync_timestamp
        while True:
            last = not page.has_more or page.next_offset is None
            next_cursor = cursor
            if last and pass_started:
                start = datetime.fromisoformat(pass_started.replace("Z", "+00:00")) - LEGACY_OVERLAP
                next_cursor = LEGACY_PREFIX + start.isoformat()
            with write_transaction(self._engine) as conn:
                stats.applied.add(self._applier.apply(conn, entity, page.records, page.deleted, source="pull"))
                self._checkpoints.save(conn, entity.resource, cursor=next_cursor, last_pull_at=self._now())
            stats.pages += 1
            if last:
                return
            page = self._client.pull(entity.resource, None, self._page_size, updated_since=since,
                                     offset=page.next_offset)

    def _full_resync(self, entity: TrackedEntity, stats: PullStats) -> None:
        seen: set[str] = set()
        cursor: str | None = None
        while True:  # pages are applied as they come; the cursor is saved only once the set is complete
            page = self._client.pull(entity.resource, cursor, self._page_size)
            cursor = page.next_cursor or cursor
            seen.update(str(r["id"]) for r in page.records)
            seen.difference_update(str(t["id"]) for t in page.deleted)
            with write_transaction(self._engine) as conn:
                stats.applied.add(self._applier.apply(conn, entity, page.records, page.deleted, source="pull"))
            stats.pages += 1
            if not page.has_more:
                break
        with write_transaction(self._engine) as conn:
            t = entity.table
            known_to_ho = {str(v) for v in conn.execute(sa.select(entity.pk).where(t.c.cloud_version.is_not(None)))
                           .scalars()}
            waiting = set(conn.execute(sa.select(OUTBOX.c.entity_id).where(
                OUTBOX.c.resource == entity.resource, OUTBOX.c.status.in_([s.value for s in OUTSTANDING])))
                .scalars())
            gone = sorted(known_to_ho - seen - waiting)
            self._entities.delete(conn, entity, gone)
            self._checkpoints.save(conn, entity.resource, cursor=cursor, last_pull_at=self._now(),
                                   last_full_resync_at=self._now())
            self._logs.add(conn, "resync", self._now(), resource=entity.resource, count=len(gone),
                           detail=f"full resync: {len(seen)} records at HO, {len(gone)} local rows removed")
        stats.resynced.append(entity.resource)
