"""Session hooks for what only the ORM knows. The outbox rows themselves are written by the database's
triggers (``posync.capture.triggers``); these hooks keep the host's in-memory objects honest and refuse
early, with a typed error, what the triggers would refuse later:

* bookkeeping (``version``, ``cloud_version``, ``sync_status``) is posync's: whatever a host object
  carries there (``session.merge()`` of an object the host built, a copied row) is put back as it was;
* a changed row gets ``updated_at`` = now (the local change time ``newest_wins`` compares), unless the
  host set it itself;
* ``session.delete(row)`` then ``session.add(Row(id=same))`` in one flush is a *row switch* to SQLAlchemy
  (one UPDATE): the new object takes over the old one's versions, so the change is based on what HO has;
* append-only rows (usage logs) are never updated, and not deleted before HO has them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, UOWTransaction

from posync.capture.triggers import APPEND_ONLY_DELETE, APPEND_ONLY_UPDATE
from posync.errors import ConfigurationError, UnsupportedWriteError
from posync.models.enums import SyncStatus
from posync.registry import Registry, TrackedEntity

__all__ = ["ChangeCapture"]

_GUARDED = ("version", "cloud_version", "sync_status")


def _committed(state: Any, name: str) -> Any:
    history = state.attrs[name].history
    if history.deleted:
        return history.deleted[0]
    return history.unchanged[0] if history.unchanged else None


def _changed(state: Any, name: str) -> bool:
    return bool(state.attrs[name].history.added)


def _sync_target(target: Any) -> Any:
    """Where the hooks go: an ``async_sessionmaker`` (or AsyncSession class) runs the ORM in a synchronous
    session class; hooking SQLAlchemy's global ``Session`` would reach every session in the process."""
    async_class = getattr(target, "class_", target)
    if not (isinstance(async_class, type) and hasattr(async_class, "sync_session_class")):
        return target
    sync_class = getattr(target, "kw", {}).get("sync_session_class") or async_class.sync_session_class
    if sync_class is Session:
        raise ConfigurationError("give the async_sessionmaker a sync_session_class of your own "
                                 "(class MySession(Session): pass; async_sessionmaker(engine, "
                                 "sync_session_class=MySession)): posync attaches its hooks there")
    return sync_class


class ChangeCapture:
    """``attach`` it to the host's sessionmaker, Session subclass or ``async_sessionmaker``."""

    def __init__(self, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._clock = clock
        self._targets: list[Any] = []

    def attach(self, target: Any) -> None:
        target = _sync_target(target)
        event.listen(target, "before_flush", self._before_flush)
        self._targets.append(target)

    def detach(self) -> None:
        for target in self._targets:
            event.remove(target, "before_flush", self._before_flush)
        self._targets.clear()

    def _before_flush(self, session: Session, _ctx: UOWTransaction, _instances: Any) -> None:
        registry = self._registry
        now = datetime.fromtimestamp(self._clock(), UTC)
        leaving: dict[Any, Any] = {}
        for obj in session.deleted:
            entity = registry.for_object(obj)
            if entity is None:
                continue
            state = inspect(obj)
            if entity.append_only and _committed(state, "sync_status") != SyncStatus.SYNCED.value:
                raise UnsupportedWriteError(entity.resource, *APPEND_ONLY_DELETE)
            leaving[state.key] = state
        for obj in session.new:
            entity = registry.for_object(obj)
            if entity is None:
                continue
            key = inspect(obj).mapper.identity_key_from_instance(obj)
            old = leaving.get(key)
            if old is not None:  # a row switch: SQLAlchemy writes one UPDATE of the old row
                obj.version = (_committed(old, "version") or 0) + 1
                obj.cloud_version = _committed(old, "cloud_version")
            else:
                obj.cloud_version = None
            if entity.direction.pushes:
                obj.sync_status = SyncStatus.PENDING.value
        for obj in session.dirty:
            entity = registry.for_object(obj)
            if entity is not None:
                self._guard(session, entity, obj, now)

    def _guard(self, session: Session, entity: TrackedEntity, obj: Any, now: datetime) -> None:
        state = inspect(obj)
        for name in _GUARDED:
            if _changed(state, name):
                setattr(obj, name, _committed(state, name))
        if not session.is_modified(obj, include_collections=False):
            return
        if entity.append_only:
            raise UnsupportedWriteError(entity.resource, *APPEND_ONLY_UPDATE)
        if entity.pk.name in state.attrs and _changed(state, entity.pk.name):
            obj.cloud_version = None  # a new key is a new entity at HO (the old key is deleted there)
        if entity.direction.pushes:
            obj.sync_status = SyncStatus.PENDING.value
            if not _changed(state, "updated_at"):
                obj.updated_at = now
