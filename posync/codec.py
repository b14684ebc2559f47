"""Column values on the wire: how each column type of a host table travels as JSON, both ways.

Built once per column from its SQLAlchemy type (a ``TypeDecorator`` by what it decorates), so that what
HO receives and what posync writes back are the same value:

    type                          on the wire (push)             accepted from HO (pull, webhook)
    String, Text, AutoString      text                           text (a number as its text)
    Integer family                number                         integral number in the column's range
    Float                         number                         number
    Numeric (Decimal)             text "12.50" (exact, as DRF)   text or number
    Boolean                       true/false                     true/false, 0/1
    DateTime, UTCDateTime         ISO 8601 with offset, UTC      ISO 8601; an offset is converted to UTC
                                  (a naive column holds UTC)     (none: taken as UTC)
    Date, Time                    ISO 8601                       ISO 8601
    Interval                      seconds                        seconds
    Uuid                          text with dashes               text
    Enum                          the member's value             a value (or a member's name)
    JSON (and JSONB)              the JSON value itself          any JSON value
    LargeBinary                   base64 text                    base64 text

A value that does not fit raises :class:`ValueError` with the reason; callers turn it into a
``ProtocolError`` naming the resource, the record and the field.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

__all__ = ["Codec", "codec_for", "parse_datetime"]

Convert = Callable[[Any], Any]



def _same(value: Any) -> Any:
    return value


@functools.lru_cache(maxsize=4096)
def _parse_text(value: str) -> datetime:
    # cached: applying a page reads each record's updated_at more than once (its version, its column)
    try:
        parsed = datetime.fromisoformat(value.strip())  # 3.11: "Z", a space for "T", any fraction
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_datetime(value: Any) -> datetime:
    """ISO 8601 text (``Z`` allowed) or a datetime, as an aware UTC datetime (naive taken as UTC)."""
    if isinstance(value, str):
        return _parse_text(value)
    if isinstance(value, datetime):
        parsed = value
    else:
        raise ValueError(f"a timestamp must be ISO 8601 text, not {type(value).__name__}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class Codec:
    """One column's two conversions. ``to_wire`` is ``None`` where the Python value is already what the
    wire carries (str, int, float, bool, None and JSON values): the hot path then skips the column."""

    __slots__ = ("from_wire", "max_length", "name", "plain", "to_wire")

    def __init__(self, name: str, to_wire: Convert | None, from_wire: Convert, *, plain: type | None = None,
                 max_length: int | None = None) -> None:
        self.name = name
        self.to_wire = to_wire
        self.from_wire = from_wire
        # a value of exactly this type (and, text, no longer than max_length) is taken as it is: the hot
        # path of a pull skips the conversion call (an integer out of range is refused by the database)
        self.plain = plain
        self.max_length = max_length


def _impl(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """What a type stores, through its decorators; an Interval is itself a decorator (of DateTime)."""
    while isinstance(type_, sa.types.TypeDecorator) and not isinstance(type_, sa.Interval):
        type_ = type_.impl_instance
    return type_


def codec_for(column: sa.Column[Any]) -> Codec:
    t = column.type
    impl = _impl(t)
    name = column.name
    aware = bool(getattr(impl, "timezone", False)) or type(t).__name__ == "UTCDateTime"
    if isinstance(impl, sa.Enum) and impl.enum_class is not None:
        return _enum(name, impl.enum_class)
    if isinstance(impl, sa.Enum):
        return Codec(name, None, _choice(name, tuple(impl.enums)))
    if isinstance(impl, sa.JSON):
        return Codec(name, None, _same)
    if isinstance(impl, sa.ARRAY):
        return Codec(name, None, _list(name))
    if isinstance(impl, sa.Boolean):
        return Codec(name, None, _bool, plain=bool)
    if isinstance(impl, sa.Integer):
        # what either database's driver can bind; a narrower column refuses the rest itself (StorageError)
        return Codec(name, None, _integer(63), plain=int)
    if isinstance(impl, sa.Numeric) and not isinstance(impl, sa.Float) and impl.asdecimal:
        return Codec(name, _decimal_text, _decimal)
    if isinstance(impl, sa.Numeric):  # Float, or a Numeric read as float
        return Codec(name, None, _number, plain=float)
    if isinstance(impl, sa.DateTime):
        return Codec(name, _datetime_text, _aware_utc if aware else _naive_utc)
    if isinstance(impl, sa.Date):
        return Codec(name, _iso, _date)
    if isinstance(impl, sa.Time):
        return Codec(name, _iso, _time)
    if isinstance(impl, sa.Interval):
        return Codec(name, _seconds, _interval)
    if isinstance(impl, sa.Uuid):
        return Codec(name, _text, _uuid if impl.as_uuid else _uuid_text)
    if isinstance(impl, sa.LargeBinary):
        return Codec(name, _b64, _unb64)
    if isinstance(impl, sa.String):
        length = impl.length
        return Codec(name, None, _string(length), plain=str, max_length=length)
    return Codec(name, _fallback, _same)


# -- push: Python value -> JSON ---------------------------------------------------------------------------


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def _iso(value: Any) -> Any:
    return None if value is None else value.isoformat()


def _datetime_text(value: Any) -> Any:
    if value is None:
        return None
    # SQLite keeps no offset: a timezone-aware column reads back naive, in UTC by posync's and SQLModel's
    # convention; a naive column holds UTC too. HO always gets the offset spelled out.
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def _decimal_text(value: Any) -> Any:
    return None if value is None else str(value)


def _seconds(value: Any) -> Any:
    return None if value is None else value.total_seconds()


def _b64(value: Any) -> Any:
    return None if value is None else base64.b64encode(bytes(value)).decode("ascii")


def _fallback(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


# -- pull: JSON -> Python value -----------------------------------------------------------------------------


def _aware_utc(value: Any) -> Any:
    return None if value is None else parse_datetime(value)


def _naive_utc(value: Any) -> Any:
    return None if value is None else parse_datetime(value).replace(tzinfo=None)


def _date(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"a date must be ISO 8601 text, not {type(value).__name__}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 date") from None


def _time(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"a time must be ISO 8601 text, not {type(value).__name__}")
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 time") from None


def _interval(value: Any) -> Any:
    if value is None:
        return None
    return timedelta(seconds=_number(value))


def _number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, not {type(value).__name__}")
    return value


def _integer(bits: int) -> Convert:
    low, high = -(2**bits), 2**bits - 1

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, not {type(value).__name__}")
        if not low <= value <= high:
            raise ValueError(f"{value} does not fit a {bits + 1}-bit integer column")
        return value

    return convert


def _decimal(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a decimal number, not {type(value).__name__}")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{str(value)[:40]!r} is not a decimal number") from None
    if not result.is_finite():
        raise ValueError("a decimal must be finite")
    return result


def _bool(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected true or false, not {type(value).__name__}")


def _string(length: int | None) -> Convert:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"expected text, not {type(value).__name__}")
        if length is not None and len(value) > length:
            raise ValueError(f"{len(value)} characters do not fit a column of {length}")
        return value

    return convert


def _uuid(value: Any) -> Any:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"{str(value)[:40]!r} is not a UUID") from None


def _uuid_text(value: Any) -> Any:
    return None if value is None else str(_uuid(value))


def _unb64(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"binary data must be base64 text, not {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("binary data is not valid base64") from None


def _list(name: str) -> Convert:
    def convert(value: Any) -> Any:
        if value is not None and not isinstance(value, list):
            raise ValueError(f"expected a list, not {type(value).__name__}")
        return value

    return convert


def _choice(name: str, choices: tuple[str, ...]) -> Convert:
    def convert(value: Any) -> Any:
        if value is not None and value not in choices:
            raise ValueError(f"{str(value)[:40]!r} is not one of {list(choices)[:10]}")
        return value

    return convert


def _enum(name: str, enum_class: type[enum.Enum]) -> Codec:
    by_value = {m.value: m for m in enum_class}
    by_name = enum_class.__members__

    def to_wire(value: Any) -> Any:
        return value.value if isinstance(value, enum.Enum) else value

    def from_wire(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"expected one of {enum_class.__name__}'s values, not {type(value).__name__}")
        member = by_value.get(value)
        if member is None and isinstance(value, str):
            member = by_name.get(value)
        if member is None:
            raise ValueError(f"{str(value)[:40]!r} is not one of {[m.value for m in enum_class][:10]}")
        return member

    return Codec(name, to_wire, from_wire)
