"""posync's tables live in their own ``MetaData``, not in ``SQLModel.metadata``: the host's
``SQLModel.metadata.create_all`` never creates them (only posync's migrations do, versioned), and the host's
Alembic autogenerate never sees them (``posync.migrations.include_object`` keeps them out of its diff)."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import MetaData
from sqlmodel import SQLModel

__all__ = ["PosyncModel", "metadata"]


class PosyncModel(SQLModel):
    """The base of every ``posync_*`` table."""

    metadata: ClassVar[MetaData] = MetaData()


metadata = PosyncModel.metadata
