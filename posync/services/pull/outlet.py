"""The outlet database as pulling reads and writes it: pages applied in short transactions, checkpoints,
and the local rows HO no longer has removed.

Removing is decide, then act: :func:`gone_ids` is pure; :meth:`PullOutlet.remove_gone` deletes (never a
row with an unpushed change, never more than a cap unless forced: an HO that answers an empty list for a
wrong ``store_id`` must not wipe an outlet, rclone's ``--max-delete`` in spirit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine, RowMapping

from posync.errors import PosyncError
from posync.models.enums import OUTSTANDING, LogKind
from posync.registry import TrackedEntity
from posync.repositories import CheckpointRepository, EntityRepository, LogRepository, OutboxRepository
from posync.services.apply import RemoteApplier
from posync.services.pull.stats import PageTally

__all__ = ["BUSY_CHUNK", "PullOutlet", "ReconcileRefusedError", "gone_ids"]

# the most records applied in one transaction while the host writes on the same SQLite file
BUSY_CHUNK = 100


class ReconcileRefusedError(PosyncError):
    """A reconciliation would delete more local rows than its cap allows; nothing was deleted."""

    def __init__(self, resource: str, would_delete: int, cap: int) -> None:
        self.resource = resource
        self.would_delete = would_delete
        self.cap = cap
        super().__init__(f"{resource}: the reconciliation would delete {would_delete} local rows, more than its "
                         f"cap of {cap}; nothing deleted (check HO's answer, then reconcile with force=True)")


def gone_ids(known_to_ho: Iterable[str], live_at_ho: Iterable[str], waiting: Iterable[str]) -> list[str]:
    """Local rows to delete: HO had them, HO no longer lists them, and no local change of them waits."""
    return sorted(set(known_to_ho) - set(live_at_ho) - set(waiting))


class PullOutlet:
    """What the passes and the reconciliation read and write at the outlet; every write goes through
    ``transaction`` (the pull service's write transaction)."""

    def __init__(self, engine: Engine, transaction: Callable[[], AbstractContextManager[Connection]],
                 applier: RemoteApplier, checkpoints: CheckpointRepository, entities: EntityRepository,
                 outbox: OutboxRepository, logs: LogRepository, *, apply_chunk: int,
                 host_busy: Callable[[], bool], now: Callable[[], datetime]) -> None:
        self._engine = engine
        self._transaction = transaction
        self._applier = applier
        self._checkpoints = checkpoints
        self._entities = entities
        self._outbox = outbox
        self._logs = logs
        self._apply_chunk = apply_chunk
        self._host_busy = host_busy
        self.now = now

    def apply_page(self, entity: TrackedEntity, records: Sequence[dict[str, Any]],
                   deleted: Sequence[dict[str, Any]], tally: PageTally, **checkpoint: Any) -> None:
        """Apply one page in transactions of at most ``apply_chunk`` records; the checkpoint values (if
        any) are saved with the last one. Re-applying a chunk is harmless (by version), so a crash
        between chunks only means the page is read again."""
        items: list[tuple[dict[str, Any], bool]] = [*((r, False) for r in records), *((d, True) for d in deleted)]
        size = min(self._apply_chunk, BUSY_CHUNK) if self._host_busy() else self._apply_chunk
        chunks = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
        for n, chunk in enumerate(chunks):
            with self._transaction() as conn:
                tally.applied.add(self._applier.apply(conn, entity, [r for r, gone in chunk if not gone],
                                                      [r for r, gone in chunk if gone], source="pull"))
                if checkpoint and n == len(chunks) - 1:
                    self._checkpoints.save(conn, entity.resource, last_pull_at=self.now(), **checkpoint)
        tally.pages += 1

    def save_pulled(self, resource: str, **checkpoint: Any) -> None:
        """Save where a pull of ``resource`` stands (stamped with ``last_pull_at``)."""
        with self._transaction() as conn:
            self._checkpoints.save(conn, resource, **checkpoint, last_pull_at=self.now())

    def standing(self, entity: TrackedEntity) -> tuple[RowMapping | None, int]:
        """The resource's checkpoint and how many local rows HO has had, read together."""
        with self._engine.connect() as conn:
            return self._checkpoints.get(conn, entity.resource), self._entities.count_known_to_ho(conn, entity)

    def count_unknown_to_ho(self, entity: TrackedEntity) -> int:
        with self._engine.connect() as conn:
            return self._entities.count_unknown_to_ho(conn, entity)

    def remove_gone(self, entity: TrackedEntity, live: set[str], *, cap: int | None,
                    checkpoint: dict[str, Any] | None = None) -> int:
        """Delete the local rows HO no longer has (``live``: every id HO has); the checkpoint values (if
        any) are saved in the same transaction. Answers how many rows went."""
        with self._transaction() as conn:
            known = self._entities.ids_known_to_ho(conn, entity)
            waiting = self._outbox.entity_ids(conn, entity.resource, [s.value for s in OUTSTANDING])
            gone = gone_ids(known, live, waiting)
            if cap is not None and len(gone) > cap:
                raise ReconcileRefusedError(entity.resource, len(gone), cap)
            self._entities.delete(conn, entity, gone)
            if checkpoint:
                self._checkpoints.save(conn, entity.resource, **checkpoint)
            self._logs.add(conn, LogKind.RECONCILE, self.now(), resource=entity.resource, count=len(gone),
                           detail=f"{len(live)} records at HO, {len(gone)} local rows removed")
        return len(gone)
