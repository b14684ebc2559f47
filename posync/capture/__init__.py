"""Change capture: every insert, update and delete of a pushed table lands in the outbox in the statement
that made it, hence in the same transaction, whatever wrote it (see ``triggers``). A rollback leaves
nothing behind; a crash after commit loses nothing; ``Posync.close()`` does not stop it.

    posync.capture.install(engine, registry)   # Posync(...) does this; idempotent
    posync.capture.ChangeCapture(registry).attach(Session)   # ORM niceties (``session``)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from posync.capture.session import ChangeCapture
from posync.capture.triggers import REFUSAL_PREFIX, install, installed, suppressed, uninstall
from posync.errors import UnsupportedWriteError
from posync.models.enums import Op
from posync.models.outbox import OutboxItem, queued_change
from posync.models.tracked import utcnow
from posync.registry import TrackedEntity

__all__ = ["ChangeCapture", "enqueue", "install", "installed", "suppressed", "translate_refusals", "uninstall"]

OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]
_REFUSAL = re.compile(re.escape(REFUSAL_PREFIX) + r" (?P<pattern>.+?) \[(?P<resource>[^\]]+)\]: (?P<instead>[^\n]+)")


def enqueue(conn: Connection, entity: TrackedEntity, entity_ids: Iterable[str], op: Op | str = Op.UPDATE) -> int:
    """Queue a change of these entities as they are now, in the caller's transaction.

    Rarely needed: the triggers capture raw SQL too. Use it to push an entity again (say, after
    fixing a row HO rejected). The base is HO's version as the row records it; a ``delete`` of a row
    that is already gone is based on the latest queued change of it (HO answers a conflict if none)."""
    op = Op(op)
    ids = [str(i) for i in entity_ids]
    if not ids:
        return 0
    from posync.repositories.entities import EntityRepository  # the repositories import this package

    rows = EntityRepository().rows(conn, entity, ids)
    values = []
    for eid in ids:
        row = rows.get(eid)
        values.append(queued_change(entity.resource, eid, op, entity_version=row["version"] if row else None,
                                    base_version=row["cloud_version"] if row else None, changed_at=utcnow()))
    conn.execute(OUTBOX.insert(), values)
    return len(values)


def translate_refusals(engine: Engine) -> None:
    """Make a capture trigger's refusal, on any path (Core, raw SQL, bulk methods), surface as
    ``UnsupportedWriteError`` instead of a driver error. Idempotent."""
    if not event.contains(engine, "handle_error", _translate):
        event.listen(engine, "handle_error", _translate)


def _translate(context: Any) -> None:
    match = _REFUSAL.search(str(context.original_exception))
    if match is not None:
        raise UnsupportedWriteError(match["resource"], match["pattern"], match["instead"]) \
            from context.original_exception
