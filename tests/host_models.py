"""A host app's tables as POS code writes them: bills with lines (a relationship, delete-orphan cascade),
append-only usage logs. Used by the host-pattern contract tests.

No ``from __future__ import annotations`` here: SQLModel resolves relationship types at class creation.
"""

import sqlmodel
from sqlmodel import Field, Relationship

from posync import ConflictStrategy, Direction, Registry, Tracked, TrackedEntity

__all__ = ["HOST_MODEL_TABLES", "Bill", "BillLine", "UsageLog", "host_registry"]


class Bill(Tracked, table=True):
    __tablename__ = "hp_bill"
    id: str = Field(primary_key=True, max_length=64)
    table_no: str = Field(default="", max_length=20)
    total: int = 0
    lines: list["BillLine"] = Relationship(back_populates="bill",
                                           sa_relationship_kwargs={"cascade": "all, delete-orphan"})


class BillLine(Tracked, table=True):
    __tablename__ = "hp_bill_line"
    id: str = Field(primary_key=True, max_length=64)
    bill_id: str = Field(foreign_key="hp_bill.id", max_length=64)
    item: str = Field(default="", max_length=100)
    qty: int = 1
    bill: Bill | None = Relationship(back_populates="lines")


class UsageLog(Tracked, table=True):
    __tablename__ = "hp_usage"
    id: str = Field(primary_key=True, max_length=64)
    promotion_id: str = Field(max_length=64)
    amount: int = 0


class Lettered(Tracked, table=True):
    """A host table with a column named ``t``, the letter a trigger might use for its row."""

    __tablename__ = "hp_lettered"
    id: str = Field(primary_key=True, max_length=64)
    t: int = 0


HOST_MODEL_TABLES = [sqlmodel.SQLModel.metadata.tables[t] for t in ("hp_bill", "hp_bill_line", "hp_usage")]


def host_registry() -> Registry:
    return Registry([
        TrackedEntity(Bill, "bills", Direction.PUSH, ConflictStrategy.LOCAL_WINS),
        TrackedEntity(BillLine, "bill_lines", Direction.PUSH, ConflictStrategy.LOCAL_WINS),
        TrackedEntity(UsageLog, "usage_logs", Direction.PUSH, append_only=True),
    ])
