"""What a reference HO is built with besides its database: :class:`HOOptions` (either HO) and
:class:`SeedOptions` (the seed HO's naive parts, docs/seed-profile.md)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from starlette.routing import Route

from posync.testing.changes import Validator

__all__ = ["DEFAULT_API_KEY", "DEFAULT_PASSWORD", "DEFAULT_USERNAME", "HOOptions", "SeedOptions"]

DEFAULT_API_KEY = "posync-test-key"
DEFAULT_USERNAME = "posync"
DEFAULT_PASSWORD = "posync-password"


@dataclass(frozen=True, slots=True)
class HOOptions:
    """``api_keys`` maps a key to the outlet ids it may act for (``None``: any; the seed HO accepts JWT
    only); ``users`` maps JWT usernames to passwords. ``resources`` limits what HO serves (``None``: any
    valid name). ``validators`` maps a resource (or ``"*"``; ``"usage"`` for usage records) to a callable
    that answers ``None``, a reason, or a :class:`~posync.testing.changes.Rejection`.

    ``pause_gc`` holds the process's cyclic GC off while a push batch is applied (posync/_gc.py); off by
    default, since the HO usually shares a host's test process. ``extra_routes`` are appended to the
    app's routes (after the protocol's and the admin ones).
    """

    api_keys: Mapping[str, Collection[str] | None] = field(default_factory=lambda: {DEFAULT_API_KEY: None})
    users: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_USERNAME: DEFAULT_PASSWORD})
    jwt_secret: str | None = None
    access_ttl: float = 300.0
    refresh_ttl: float = 86400.0
    require_auth: bool = True
    resources: Collection[str] | None = None
    validators: Mapping[str, Validator] = field(default_factory=dict)
    pause_gc: bool = False
    extra_routes: Sequence[Route] = ()


@dataclass(frozen=True, slots=True)
class SeedOptions:
    """``report_deletes`` remembers hard-deleted ids and lists them in ``deleted_ids``; ``max_limit`` caps
    a page's size; ``ignore_limit`` answers every row in one page; ``stores`` / ``companies``, when given,
    are the ids HO knows (others answer 404 ``STORE_NOT_FOUND`` / ``COMPANY_NOT_FOUND``)."""

    report_deletes: bool = False
    max_limit: int | None = None
    ignore_limit: bool = False
    stores: frozenset[str] | None = None
    companies: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.max_limit is not None and self.max_limit < 1:
            raise ValueError("max_limit must be >= 1")

    def page_limit(self, asked: int) -> int | None:
        """The page size HO answers with: ``None`` (every row) when it ignores the limit, else capped."""
        if self.ignore_limit:
            return None
        return asked if self.max_limit is None else min(asked, self.max_limit)
