"""Database errors become posync's at the repository boundary (procrastinate's ``wrap_exceptions`` shape).

Every public method of a repository class decorated with :func:`storage_errors` turns SQLAlchemy's and
the driver's errors, and the Python errors a driver raises while binding a value (an integer too large,
a wrong type), into :class:`~posync.errors.StorageError` naming the operation. posync's own errors pass
through untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from posync.errors import PosyncError, StorageError

__all__ = ["storage_errors"]

C = TypeVar("C", bound=type)

_DRIVER_VALUE_ERRORS = (OverflowError, TypeError, ValueError)


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first[:200]}" if first else type(orig).__name__


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PosyncError:
            raise
        except (sa.exc.SQLAlchemyError, *_DRIVER_VALUE_ERRORS) as exc:
            raise StorageError(name, _describe(exc)) from exc

    return wrapper


def storage_errors(cls: C) -> C:
    """Class decorator: translate database errors in every public method."""
    for attr, value in list(vars(cls).items()):
        if not attr.startswith("_") and callable(value) and not isinstance(value, (staticmethod, classmethod)):
            setattr(cls, attr, _wrap(f"{cls.__name__.removesuffix('Repository').lower()}.{attr}", value))
    return cls
