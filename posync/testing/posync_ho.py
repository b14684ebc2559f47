"""``PosyncHO``: the head office posync's own protocol describes (docs/protocol.md): change_seq cursors,
record versions, tombstones (purged past ``tombstone_horizon`` seconds, when given), idempotent pushes
and usage uploads.

The HO is a guest in its host's process: it leaves the cyclic GC alone unless ``options.pause_gc``
(its own process, ``python -m posync.testing``, turns that on).
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from sqlalchemy.engine import Engine
from starlette.routing import Route
from starlette.types import ASGIApp

from posync import _gc
from posync.testing.changes import Rejection, parse_change, request_hash
from posync.testing.exactly_once import UsageItem
from posync.testing.fault_middleware import posync_error_body
from posync.testing.faults import Faults
from posync.testing.head_office import Profile, RecordEdits, ReferenceHO
from posync.testing.options import HOOptions
from posync.testing.posync_routes import posync_app
from posync.testing.schema import HORecord

__all__ = ["PosyncHO"]


class PosyncHO(ReferenceHO):
    profile: ClassVar[Profile] = "posync"

    def __init__(self, db_url: str | None = None, *, engine: Engine | None = None,
                 options: HOOptions | None = None, faults: Faults | None = None,
                 tombstone_horizon: float | None = None) -> None:
        super().__init__(db_url, engine=engine, options=options, faults=faults)
        self.tombstone_horizon = tombstone_horizon
        self._purge_lock = threading.Lock()
        self._last_purge = 0.0

    @property
    def edits(self) -> RecordEdits:
        return self.store

    def _starlette_app(self, routes: list[Route]) -> ASGIApp:
        return posync_app(self, routes)

    @staticmethod
    def _error_body(code: str, message: str) -> dict[str, Any]:
        return posync_error_body(code, message)

    @staticmethod
    def _served_shape(rec: HORecord) -> dict[str, Any]:
        return rec.as_pull()

    # -- outlets' writes (the HTTP layer calls these in a worker thread) --------------------------

    def apply_push(self, outlet_id: str, raw_changes: list[Any]) -> list[dict[str, Any]]:
        # a batch's ~10,000 containers die by reference counting; pausing the GC is the host's call (_gc.py)
        with _gc.paused(self.pause_gc):
            items = [parse_change(raw) for raw in raw_changes]
            results, changed = self.store.apply_changes(outlet_id, items, self.validators,
                                                        want_changed=bool(self.on_change))
        self._notify(changed, "push", outlet_id)
        self._maybe_purge()
        return results

    def apply_usage(self, outlet_id: str, raw_usages: list[Any]) -> list[dict[str, Any]]:
        items: list[UsageItem | Rejection] = []
        for raw in raw_usages:
            key = raw.get("idempotency_key") if isinstance(raw, dict) else None
            if not isinstance(raw, dict) or not isinstance(key, str) or not key or len(key) > 255:
                items.append(Rejection("VALIDATION_ERROR", "usage must be an object with an idempotency_key",
                                       key=key if isinstance(key, str) else None))
                continue
            body = {k: v for k, v in raw.items() if k != "idempotency_key"}
            items.append((key, request_hash("usage", body), body))
        return self.store.apply_usages(outlet_id, items, self.validators)

    # -- tombstones -------------------------------------------------------------------------------

    def purge_tombstones(self, horizon: float | None = None) -> int:
        """Drop tombstones older than ``horizon`` (default: ``tombstone_horizon``, else all of them)."""
        return super().purge_tombstones(horizon if horizon is not None else self.tombstone_horizon)

    def _maybe_purge(self) -> None:
        if self.tombstone_horizon is None:
            return
        now = time.monotonic()
        with self._purge_lock:
            if now - self._last_purge < 1.0:
                return
            self._last_purge = now
        self.store.purge_tombstones(self.tombstone_horizon)
