"""Which host tables sync, and how: the host declares a ``TrackedEntity`` per table.

    registry = Registry([
        TrackedEntity(Order, "orders", Direction.PUSH, ConflictStrategy.LOCAL_WINS),
        TrackedEntity(Product, "products", Direction.PULL, ConflictStrategy.CLOUD_WINS),
        TrackedEntity(PromotionUsage, "usage", Direction.PUSH, append_only=True),
    ])
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from posync.errors import ConfigurationError, ProtocolError
from posync.models.enums import ConflictStrategy, Direction
from posync.models.tracked import BOOKKEEPING_COLUMNS, Tracked

if TYPE_CHECKING:
    from posync.services.resolve import Resolver

__all__ = ["Registry", "TrackedEntity", "parse_timestamp"]

Payload = dict[str, Any]


def parse_timestamp(value: Any) -> Any:
    """ISO 8601 text (``Z`` allowed) as a datetime; other values unchanged. Bad text from HO is a
    ProtocolError, not a bare ValueError."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ProtocolError(f"HO sent {value[:40]!r} where an ISO 8601 timestamp belongs") from exc
    return value


_PLAIN = frozenset({str, int, float, bool})


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)  # Decimal, UUID, date: their canonical text


@dataclass(frozen=True)
class TrackedEntity:
    model: type[Tracked]
    resource: str
    direction: Direction = Direction.BOTH
    strategy: ConflictStrategy = ConflictStrategy.CLOUD_WINS
    # a custom resolver overrides ``strategy`` (see posync.services.resolve.Resolver)
    resolver: Resolver | None = None
    # append-only resources (usage logs) are pushed to their own endpoint and never conflict
    append_only: bool = False
    table: sa.Table = field(init=False, repr=False)
    pk: sa.Column[Any] = field(init=False, repr=False)
    data_columns: tuple[str, ...] = field(init=False, repr=False)
    _datetime_columns: frozenset[str] = field(init=False, repr=False)
    _aware_columns: frozenset[str] = field(init=False, repr=False)
    _read_data: Callable[[Mapping[Any, Any]], tuple[Any, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.model, type) and issubclass(self.model, Tracked)):
            raise ConfigurationError(f"{self.model!r} must inherit posync.Tracked to be synced")
        table = getattr(self.model, "__table__", None)
        if not isinstance(table, sa.Table):
            raise ConfigurationError(f"{self.model.__name__} is not a table model (table=True)")
        pks = list(table.primary_key.columns)
        if len(pks) != 1:
            raise ConfigurationError(f"{self.model.__name__}: posync needs exactly one primary key column")
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "pk", pks[0])
        cols = tuple(c.name for c in table.columns if c.name not in BOOKKEEPING_COLUMNS)
        object.__setattr__(self, "data_columns", cols)
        # one C call per row instead of a Python loop over the columns (runs for every pushed change)
        read = operator.itemgetter(*cols)
        object.__setattr__(self, "_read_data", read if len(cols) > 1 else lambda row: (read(row),))
        dts = frozenset(c.name for c in table.columns if isinstance(c.type, sa.DateTime))
        object.__setattr__(self, "_datetime_columns", dts)
        aware = frozenset(c.name for c in table.columns if isinstance(c.type, sa.DateTime) and c.type.timezone)
        object.__setattr__(self, "_aware_columns", aware)

    def entity_id(self, obj: Any) -> str:
        return str(getattr(obj, self.pk.name))

    def pk_value(self, entity_id: str) -> Any:
        """The wire id (a string) as the primary key column's Python type."""
        try:
            python_type = self.pk.type.python_type
        except NotImplementedError:  # pragma: no cover - exotic types
            return entity_id
        if python_type is int:
            return int(entity_id)
        if python_type is uuid.UUID:
            return uuid.UUID(entity_id)
        return entity_id

    def to_payload(self, row: Mapping[Any, Any]) -> Payload:
        """A local row as the JSON ``data`` HO receives (the id included, bookkeeping left out)."""
        return self.payload_of(self._read_data(row))

    def payload_of(self, values: Sequence[Any]) -> Payload:
        """:meth:`to_payload` from the values of ``data_columns``, in that order (any values after them
        are left out): what a push reads, without a mapping per row."""
        data = dict(zip(self.data_columns, values, strict=False))
        for name, value in data.items():
            if not (value is None or type(value) in _PLAIN):
                if name in self._aware_columns and value.tzinfo is None:
                    # SQLite keeps no offset: a timezone-aware column reads back naive, in UTC by
                    # convention (SQLModel's UTCDateTime does the same); HO gets the offset spelled out
                    value = value.replace(tzinfo=UTC)
                data[name] = _jsonable(value)
        pk = self.pk.name
        data[pk] = str(data[pk])
        return data

    def from_remote(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """An HO record as column values for this table; unknown fields are ignored."""
        values: dict[str, Any] = {}
        for name in self.data_columns:
            if name in record:
                value = record[name]
                values[name] = parse_timestamp(value) if name in self._datetime_columns else value
        values[self.pk.name] = self.pk_value(str(record.get(self.pk.name, record.get("id"))))
        if "updated_at" in record:
            values["updated_at"] = parse_timestamp(record["updated_at"])
        return values


class Registry:
    def __init__(self, entities: Iterable[TrackedEntity]) -> None:
        self._by_model: dict[type[Any], TrackedEntity] = {}
        self._by_resource: dict[str, TrackedEntity] = {}
        for entity in entities:
            if entity.resource in self._by_resource or entity.model in self._by_model:
                raise ConfigurationError(f"{entity.resource} ({entity.model.__name__}) is registered twice")
            self._by_model[entity.model] = entity
            self._by_resource[entity.resource] = entity

    def for_object(self, obj: Any) -> TrackedEntity | None:
        return self._by_model.get(type(obj))

    def for_model(self, model: type[Any]) -> TrackedEntity | None:
        return self._by_model.get(model)

    def __getitem__(self, resource: str) -> TrackedEntity:
        try:
            return self._by_resource[resource]
        except KeyError:
            raise ConfigurationError(f"resource {resource!r} is not registered with posync") from None

    def __contains__(self, resource: object) -> bool:
        return resource in self._by_resource

    def __iter__(self) -> Iterator[TrackedEntity]:
        return iter(self._by_resource.values())

    def pulled(self) -> list[TrackedEntity]:
        return [e for e in self if e.direction.pulls and not e.append_only]


