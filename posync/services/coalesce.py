"""Fold a run of never-sent changes of one entity into the single change with the same effect at HO."""

from __future__ import annotations

from collections.abc import Sequence

from posync.models.enums import Op

__all__ = ["coalesce"]


def coalesce(ops: Sequence[Op]) -> Op | None:
    """``ops`` in commit order, none of them sent yet. Returns the one op to send, or None for nothing.

    HO knows the entity before the run unless the run starts with a create; the entity exists locally
    after the run unless it ends with a delete. Those two facts decide everything:
    create+update -> create, create+delete -> nothing, update+delete -> delete, delete+create -> update.
    """
    if not ops:
        return None
    known_at_ho = ops[0] is not Op.CREATE
    exists_after = ops[-1] is not Op.DELETE
    if exists_after:
        return Op.UPDATE if known_at_ho else Op.CREATE
    return Op.DELETE if known_at_ho else None
