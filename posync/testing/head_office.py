"""``ReferenceHO``: what the two reference head offices share. :class:`~posync.testing.posync_ho.PosyncHO`
speaks docs/protocol.md; :class:`~posync.testing.seed_ho.SeedHO` plays the seeds' HO (docs/seed-profile.md).
``ReferenceHO(db_url, profile=..., **options)`` (or, typed, :func:`~posync.testing.profiles.reference_ho`)
builds the one a profile names.

    ho = ReferenceHO("sqlite:///ho.db", api_keys={"k": None})   # or PosyncHO(url, options=HOOptions(...))
    with serve_in_thread(ho.app) as server:      # server.url -> "http://127.0.0.1:PORT"
        ho.put("products", "p1", {"name": "Tea", "price": 42000})   # an HO-side edit
        ho.faults.drop_after_commit_rate = 0.5
        ...
    ho.close()

Shared: the database and its store, authentication, fault injection, request counting, the admin API
(``put``/``delete``/``get``/``records``/``usages`` from Python, ``/_admin`` over HTTP) and ``on_change``: a
list of callables ``fn(event: ChangeEvent)``, called after a change commits, HO-side edits
(``source="admin"``) and changes outlets pushed (``source="push"``, with the outlet id). A failing
callback is logged and never fails the write.
"""

from __future__ import annotations

import logging
from abc import ABCMeta, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, Protocol, Self

from sqlalchemy.engine import Engine
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from posync.db import create_engine
from posync.errors import NotFoundError
from posync.testing.admin_routes import admin_routes
from posync.testing.auth import Authenticator
from posync.testing.changes import Validator, canonical_json
from posync.testing.fault_middleware import ErrorBody, FaultMiddleware
from posync.testing.faults import Faults
from posync.testing.options import DEFAULT_USERNAME, HOOptions
from posync.testing.schema import HORecord
from posync.testing.store import HOStore

__all__ = ["ChangeEvent", "Profile", "RecordEdits", "ReferenceHO"]

Profile = Literal["posync", "seed"]

log = logging.getLogger("posync.testing")


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    type: str  # "update" | "delete"
    resource: str
    record: dict[str, Any]  # the HO's pull shape: data fields + id, (posync: version), updated_at
    source: str  # "admin" | "push"
    outlet_id: str | None = None
    change_seq: int = 0


class RecordEdits(Protocol):
    """How an HO edits its records from the admin side (tombstones for posync, hard deletes for the seed)."""

    def put(self, resource: str, entity_id: str, data: dict[str, Any]) -> HORecord: ...

    def delete(self, resource: str, entity_id: str) -> HORecord | None: ...


class _CountRequests:
    def __init__(self, app: ASGIApp, counter: Counter[str]) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.counter[f"{scope['method']} {scope['path']}"] += 1
        await self.app(scope, receive, send)


class _ProfilePicksTheHO(ABCMeta):
    """``ReferenceHO(db_url, profile=..., **options)`` builds the HO the profile names, as
    :func:`~posync.testing.profiles.reference_ho` does: the call callers and host apps' tests have always
    made. Calling a subclass (``PosyncHO(...)``) builds it directly."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is ReferenceHO:
            from posync.testing.profiles import reference_ho  # it imports the subclasses, which import this

            return reference_ho(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class ReferenceHO(metaclass=_ProfilePicksTheHO):
    """The state and admin API both HOs share; a subclass adds its wire dialect (routes, error shape, the
    record shape it serves) and how it edits records. ``ReferenceHO(...)`` itself is the profile factory
    (untyped: typed code calls :func:`~posync.testing.profiles.reference_ho` or a subclass)."""

    profile: ClassVar[Profile]

    def __init__(self, db_url: str | None = None, *, engine: Engine | None = None,
                 options: HOOptions | None = None, faults: Faults | None = None) -> None:
        """``db_url`` (an engine HO creates and disposes) or ``engine`` (the caller's; never disposed)."""
        if (db_url is None) == (engine is None):
            raise ValueError("give exactly one of db_url or engine")
        opts = options if options is not None else HOOptions()
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else create_engine(str(db_url))
        self.faults = faults if faults is not None else Faults()
        self.store = HOStore(self.engine, clock=self.now)
        self.store.create_schema()
        self.auth = Authenticator(api_keys=opts.api_keys, users=opts.users, secret=opts.jwt_secret,
                                  access_ttl=opts.access_ttl, refresh_ttl=opts.refresh_ttl,
                                  required=opts.require_auth)
        self.resources = frozenset(opts.resources) if opts.resources is not None else None
        self.validators: dict[str, Validator] = dict(opts.validators)  # tests add to it live
        self.pause_gc = opts.pause_gc
        self.extra_routes = list(opts.extra_routes)
        self.on_change: list[Callable[[ChangeEvent], None]] = []
        self.requests: Counter[str] = Counter()
        self._app: ASGIApp | None = None

    # -- what a dialect supplies ------------------------------------------------------------------

    @property
    @abstractmethod
    def edits(self) -> RecordEdits:
        """Where HO-side puts and deletes go."""

    @abstractmethod
    def _starlette_app(self, routes: list[Route]) -> ASGIApp:
        """The dialect's routes, then ``routes`` (the admin ones and ``extra_routes``)."""

    @staticmethod
    @abstractmethod
    def _error_body(code: str, message: str) -> dict[str, Any]:
        """The dialect's error body, for the answers fault injection makes up."""

    @staticmethod
    @abstractmethod
    def _served_shape(rec: HORecord) -> dict[str, Any]:
        """A record as the dialect's pull pages (and so ``on_change`` events) carry it."""

    @abstractmethod
    def apply_push(self, outlet_id: str, raw_changes: list[Any]) -> list[dict[str, Any]]: ...

    @abstractmethod
    def apply_usage(self, outlet_id: str, raw_usages: list[Any]) -> list[dict[str, Any]]: ...

    # -- life cycle -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}(engine={url!r}, profile={self.profile!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def now(self) -> datetime:
        """HO's clock: UTC plus ``faults.clock_skew`` seconds."""
        return datetime.now(UTC) + timedelta(seconds=self.faults.clock_skew)

    @property
    def app(self) -> ASGIApp:
        """The ASGI app (built once): fault injection outermost, then request counting, then Starlette."""
        if self._app is None:
            inner = self._starlette_app([*admin_routes(self), *self.extra_routes])
            error_body: ErrorBody = self._error_body  # injected errors answer in the dialect's shape too
            self._app = FaultMiddleware(_CountRequests(inner, self.requests), self.faults, error_body)
        return self._app

    # -- admin API (HO-side edits and inspection) ------------------------------------------------

    def put(self, resource: str, entity_id: str, data: dict[str, Any]) -> int:
        """An HO-side create/edit (re-creates a tombstone); answers the new version (the seed HO keeps it
        internally and never serves it)."""
        rec = self.edits.put(resource, entity_id, dict(data))
        self._notify([rec], "admin", None)
        return rec.version

    def delete(self, resource: str, entity_id: str) -> int:
        """An HO-side delete: tombstones the record and answers the tombstone's version (posync), or
        removes the row and answers the version it had (seed)."""
        rec = self.delete_record(resource, entity_id)
        if rec is None:
            raise NotFoundError(f"HO {resource} record", entity_id)
        return rec.version

    def delete_record(self, resource: str, entity_id: str) -> HORecord | None:
        rec = self.edits.delete(resource, entity_id)
        if rec is not None:
            self._notify([rec], "admin", None)
        return rec

    def get(self, resource: str, entity_id: str) -> HORecord | None:
        return self.store.get(resource, entity_id)

    def records(self, resource: str, *, include_deleted: bool = True) -> dict[str, HORecord]:
        rows = self.store.all_records(resource)
        return rows if include_deleted else {k: v for k, v in rows.items() if not v.deleted}

    def applied_counts(self, outlet_id: str | None = None,
                       idempotency_key: str | None = None) -> dict[tuple[str, str], int]:
        """How many times each (outlet_id, idempotency_key) was applied, from the append-only audit."""
        return self.store.applied_counts(outlet_id, idempotency_key)

    def applied_count(self, outlet_id: str, idempotency_key: str) -> int:
        return self.store.applied_counts(outlet_id, idempotency_key).get((outlet_id, idempotency_key), 0)

    def usages(self) -> list[dict[str, Any]]:
        """Every stored usage in arrival order: ``{"outlet_id", "idempotency_key", "data", "received_at"}``
        (seed HO: ``idempotency_key`` is the usage's ``usage_id`` or ``""``; ``outlet_id`` is
        ``X-Outlet-ID`` or ``""``)."""
        return self.store.usages()

    def usage_counts(self, field: str = "usage_id") -> Counter[Any]:
        """How many stored usages carry each value of ``field`` (a usage without it is not counted).
        The seed HO never deduplicates, so a usage delivered twice counts 2."""
        counts: Counter[Any] = Counter()
        for u in self.store.usages():
            data = u["data"] or {}
            value = data[field] if field in data else u.get(field)
            if value is not None:
                counts[value if isinstance(value, str | int | float | bool) else canonical_json(value)] += 1
        return counts

    def duplicate_usages(self, field: str = "usage_id") -> dict[Any, int]:
        """The values of ``field`` stored more than once, with their counts."""
        return {k: n for k, n in self.usage_counts(field).items() if n > 1}

    def deletions(self, resource: str) -> dict[str, str]:
        """id -> deletion time of each tracked hard delete (only a seed HO with ``report_deletes`` has any)."""
        return {}

    def purge_tombstones(self, horizon: float | None = None) -> int:
        """Drop tombstones older than ``horizon`` (default: all of them)."""
        return self.store.purge_tombstones(horizon if horizon is not None else 0.0)

    def revoke_access_tokens(self) -> None:
        self.auth.revoke_access_tokens()

    def issue_tokens(self, username: str = DEFAULT_USERNAME) -> dict[str, str]:
        return self.auth.issue(username)

    def stats(self) -> dict[str, Any]:
        return {**self.store.counts(), "requests": dict(self.requests),
                "faults": dict(self.faults.injected)}

    def _notify(self, changed: list[HORecord], source: str, outlet_id: str | None) -> None:
        if not self.on_change:
            return
        for rec in changed:
            event = ChangeEvent("delete" if rec.deleted else "update", rec.resource, self._served_shape(rec),
                                source, outlet_id, rec.change_seq)
            for fn in list(self.on_change):
                try:
                    fn(event)
                except Exception:
                    log.exception("reference HO on_change callback %r failed", fn)
