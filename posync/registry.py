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
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from posync.codec import Codec, codec_for, parse_datetime
from posync.errors import ConfigurationError, ProtocolError
from posync.models.enums import ConflictStrategy, Direction
from posync.models.tracked import BOOKKEEPING_COLUMNS, Tracked

if TYPE_CHECKING:
    from posync.services.resolve import Resolver

__all__ = ["Registry", "TrackedEntity", "parse_timestamp"]

Payload = dict[str, Any]


def parse_timestamp(value: Any) -> Any:
    """ISO 8601 text (``Z`` allowed) as an aware UTC datetime (naive text is taken as UTC); other values
    unchanged. Bad text from HO is a ProtocolError, not a bare ValueError."""
    if isinstance(value, str):
        try:
            return parse_datetime(value)
        except ValueError as exc:
            raise ProtocolError(f"HO sent {value[:40]!r} where an ISO 8601 timestamp belongs") from exc
    return value




@dataclass(frozen=True)
class TrackedEntity:
    """One host table posync syncs, and how.

    ``field_map`` maps HO's field names to the host's column names where they differ (``{"nama":
    "name"}``); HO fields the model lacks are ignored, and columns HO does not send are left as they are
    (a new row gets the column's default). ``path`` is HO's endpoint for the resource (default
    ``/api/v1/sync/<resource>/`` to pull, seed 004's ``/api/v1/sync/usage/`` for append-only uploads),
    ``params`` extra query parameters of its pulls, ``list_key`` the key of the records in HO's pages
    (default: the resource name) and ``upload_key`` the key of an upload's list (default ``usages``)."""

    model: type[Tracked]
    resource: str
    direction: Direction = Direction.BOTH
    strategy: ConflictStrategy = ConflictStrategy.CLOUD_WINS
    # a custom resolver overrides ``strategy`` (see posync.services.resolve.Resolver)
    resolver: Resolver | None = None
    # append-only resources (usage logs) are uploaded to their own endpoint and never conflict
    append_only: bool = False
    field_map: Mapping[str, str] = field(default_factory=dict)
    path: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    list_key: str | None = None
    upload_key: str = "usages"
    table: sa.Table = field(init=False, repr=False)
    pk: sa.Column[Any] = field(init=False, repr=False)
    data_columns: tuple[str, ...] = field(init=False, repr=False)
    codecs: Mapping[str, Codec] = field(init=False, repr=False)
    _wire_names: Mapping[str, str] = field(init=False, repr=False)
    _to_wire: tuple[tuple[int, Callable[[Any], Any]], ...] = field(init=False, repr=False)
    _incoming: tuple[tuple[str, str, type | None, int | None, Callable[[Any], Any]], ...] = field(init=False,
                                                                                                  repr=False)
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
        if self.append_only and self.direction is not Direction.PUSH:
            raise ConfigurationError(f"{self.resource}: an append-only resource is pushed only (Direction.PUSH)")
        cols = tuple(c.name for c in table.columns if c.name not in BOOKKEEPING_COLUMNS)
        unknown = sorted(set(self.field_map.values()) - set(cols))
        if unknown:
            raise ConfigurationError(f"{self.resource}: field_map names columns {self.model.__name__} lacks: "
                                     f"{unknown}")
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "pk", pks[0])
        object.__setattr__(self, "data_columns", cols)
        codecs = {name: codec_for(table.c[name]) for name in (*cols, "updated_at")}
        object.__setattr__(self, "codecs", codecs)
        wire = {column: ho for ho, column in self.field_map.items()}
        object.__setattr__(self, "_wire_names", {c: wire.get(c, c) for c in cols})
        # only the columns whose Python values differ from their JSON are converted (runs for every push)
        object.__setattr__(self, "_to_wire", tuple((i, codecs[c].to_wire) for i, c in enumerate(cols)
                                                   if codecs[c].to_wire is not None))
        object.__setattr__(self, "_incoming", tuple(
            (c, self._wire_names[c], codecs[c].plain, codecs[c].max_length, codecs[c].from_wire)
            for c in cols if c != pks[0].name))
        # one C call per row instead of a Python loop over the columns (runs for every pushed change)
        read = operator.itemgetter(*cols)
        object.__setattr__(self, "_read_data", read if len(cols) > 1 else lambda row: (read(row),))

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
        if self._to_wire:
            values = list(values[: len(self.data_columns)])
            for i, convert in self._to_wire:
                values[i] = convert(values[i])
        names = self._wire_names
        # every field keeps its column's type, the id too (an INTEGER id is a JSON number): only the
        # outbox's entity_id and the protocol's "entity_id" are text (payload_id)
        return {names[c]: v for c, v in zip(self.data_columns, values, strict=False)}

    def payload_id(self, payload: Mapping[str, Any]) -> str:
        """The entity id, as text (the outbox's ``entity_id``), of a payload from :meth:`payload_of`."""
        return str(payload[self._wire_names[self.pk.name]])

    def record_id(self, record: Mapping[str, Any]) -> str:
        """The entity id of an HO record (its primary key field, else ``id``) as text."""
        value = record.get(self._wire_names[self.pk.name], record.get("id"))
        if value is None or isinstance(value, (bool, dict, list)):
            raise ProtocolError(f"{self.resource}: a record without a usable id")
        return str(value)

    def from_remote(self, record: Mapping[str, Any], entity_id: str | None = None) -> dict[str, Any]:
        """An HO record as column values for this table; unknown fields are ignored, absent columns are
        left out (so an update leaves them alone). A value that does not fit its column is a
        ProtocolError naming the record and the field. Runs for every pulled record."""
        values: dict[str, Any] = {}
        eid = entity_id if entity_id is not None else self.record_id(record)
        for column, wire, plain, max_length, convert in self._incoming:
            if wire in record:
                value = record[wire]
                if type(value) is plain and (max_length is None or len(value) <= max_length):  # type: ignore[arg-type]  # plain is str where max_length is set
                    values[column] = value
                    continue
                try:
                    values[column] = convert(value)
                except ValueError as exc:
                    raise ProtocolError(f"{self.resource} {eid[:60]!r}: field {wire!r}: {exc}") from None
        try:
            values[self.pk.name] = self.codecs[self.pk.name].from_wire(self.pk_value(eid))
        except ValueError as exc:
            raise ProtocolError(f"{self.resource}: id {eid[:60]!r}: {exc}") from None
        if record.get("updated_at") is not None:
            values["updated_at"] = self._updated_at(eid, record["updated_at"])
        return values

    def _updated_at(self, eid: str, value: Any) -> Any:
        try:
            return self.codecs["updated_at"].from_wire(value)
        except ValueError as exc:
            raise ProtocolError(f"{self.resource} {eid[:60]!r}: field 'updated_at': {exc}") from None


class Registry:
    """The host's tracked tables, by model and by resource name; each registered once."""

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


