"""``ReferenceHO``: the head office posync's tests, demo and benchmarks run against, wired in one place.

    ho = ReferenceHO("sqlite:///ho.db", api_keys={"k": None}, validators={"orders": check_total})
    with serve_in_thread(ho.app) as server:      # server.url -> "http://127.0.0.1:PORT"
        ho.put("products", "p1", {"name": "Tea", "price": 42000})   # an HO-side edit
        ho.faults.drop_after_commit_rate = 0.5
        ...
    ho.close()

Two profiles (``profile=``): ``"posync"`` (default) speaks docs/protocol.md; ``"seed"`` plays the head
office of seeds 004/001 as docs/seed-profile.md describes it, naive parts included (offset paging over
the live query, no versions on the wire, hard deletes, a timestamp version, usages never deduplicated,
JWT only, no push). ``put``/``delete``/``get``/``records``/``usages`` drive either from Python.

``on_change`` is a list of callables ``fn(event: ChangeEvent)``, called after a change commits: HO-side
edits (``source="admin"``) and changes outlets pushed (``source="push"``, with the outlet id). A failing
callback is logged and never fails the write.

The HO is a guest in its host's process: it leaves the cyclic GC alone unless ``pause_gc=True`` (its own
process, ``python -m posync.testing``, turns that on).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.engine import Engine
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from posync import _gc
from posync.db import create_engine
from posync.errors import NotFoundError
from posync.testing.admin import admin_routes
from posync.testing.app import build_app
from posync.testing.auth import Authenticator
from posync.testing.changes import Rejection, Validator, canonical_json, parse_change, request_hash
from posync.testing.faults import FaultMiddleware, Faults, posync_error_body
from posync.testing.seed import build_seed_app
from posync.testing.seed_rules import error_body, seed_record
from posync.testing.seed_store import SeedStore
from posync.testing.store import HORecord, HOStore

__all__ = ["DEFAULT_API_KEY", "DEFAULT_PASSWORD", "DEFAULT_USERNAME", "ChangeEvent", "Profile", "ReferenceHO"]

Profile = Literal["posync", "seed"]

log = logging.getLogger("posync.testing")

DEFAULT_API_KEY = "posync-test-key"
DEFAULT_USERNAME = "posync"
DEFAULT_PASSWORD = "posync-password"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    type: str  # "update" | "delete"
    resource: str
    record: dict[str, Any]  # the profile's pull shape: data fields + id, (posync: version), updated_at
    source: str  # "admin" | "push"
    outlet_id: str | None = None
    change_seq: int = 0


class _CountRequests:
    def __init__(self, app: ASGIApp, counter: Counter[str]) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.counter[f"{scope['method']} {scope['path']}"] += 1
        await self.app(scope, receive, send)


class ReferenceHO:
    def __init__(
        self,
        db_url: str | None = None,
        *,
        engine: Engine | None = None,
        api_keys: Mapping[str, Collection[str] | None] | None = None,
        users: Mapping[str, str] | None = None,
        jwt_secret: str | None = None,
        access_ttl: float = 300.0,
        refresh_ttl: float = 86400.0,
        require_auth: bool = True,
        resources: Collection[str] | None = None,
        validators: Mapping[str, Validator] | None = None,
        tombstone_horizon: float | None = None,
        faults: Faults | None = None,
        profile: Profile = "posync",
        report_deletes: bool = False,
        max_limit: int | None = None,
        ignore_limit: bool = False,
        stores: Collection[str] | None = None,
        companies: Collection[str] | None = None,
        pause_gc: bool = False,
        extra_routes: list[Route] | None = None,
    ) -> None:
        """``db_url`` (an engine HO creates and disposes) or ``engine`` (the caller's; never disposed).

        ``api_keys`` maps a key to the outlet ids it may act for (``None``: any); ``users`` maps JWT
        usernames to passwords. ``resources`` limits what HO serves (``None``: any valid name).
        ``validators`` maps a resource (or ``"*"``; ``"usage"`` for usage records) to a callable that
        answers ``None``, a reason, or a :class:`~posync.testing.changes.Rejection`.

        Seed profile only (``profile="seed"``; docs/seed-profile.md): ``report_deletes`` remembers
        hard-deleted ids and lists them in ``deleted_ids``; ``max_limit`` caps a page's size;
        ``ignore_limit`` answers every row in one page; ``stores`` / ``companies``, when given, are the
        ids HO knows (others answer 404 ``STORE_NOT_FOUND`` / ``COMPANY_NOT_FOUND``). API keys are not
        part of the seed profile (only JWT is accepted).

        ``pause_gc`` holds the process's cyclic GC off while a push batch is applied (posync/_gc.py);
        off by default, since the HO usually shares a host's test process. ``extra_routes`` are
        appended to the app's routes (after the protocol's and the admin ones).
        """
        if (db_url is None) == (engine is None):
            raise ValueError("give exactly one of db_url or engine")
        if profile not in ("posync", "seed"):
            raise ValueError(f"profile must be 'posync' or 'seed', not {profile!r}")
        seed_only = {"report_deletes": report_deletes, "max_limit": max_limit is not None,
                     "ignore_limit": ignore_limit, "stores": stores is not None, "companies": companies is not None}
        if profile == "posync" and any(seed_only.values()):  # refused rather than silently ignored
            raise ValueError(f"seed-profile options given to the posync profile: "
                             f"{sorted(k for k, v in seed_only.items() if v)}")
        if profile == "seed" and tombstone_horizon is not None:
            raise ValueError("the seed profile hard-deletes: it has no tombstones to expire")
        if max_limit is not None and max_limit < 1:
            raise ValueError("max_limit must be >= 1")
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else create_engine(str(db_url))
        self.faults = faults if faults is not None else Faults()
        self.store = HOStore(self.engine, clock=self.now)
        self.store.create_schema()
        self.auth = Authenticator(
            api_keys=api_keys if api_keys is not None else {DEFAULT_API_KEY: None},
            users=users if users is not None else {DEFAULT_USERNAME: DEFAULT_PASSWORD},
            secret=jwt_secret, access_ttl=access_ttl, refresh_ttl=refresh_ttl, required=require_auth,
        )
        self.resources = frozenset(resources) if resources is not None else None
        self.validators: dict[str, Validator] = dict(validators or {})
        self.tombstone_horizon = tombstone_horizon
        self.profile: Profile = profile
        self.report_deletes = report_deletes
        self.max_limit = max_limit
        self.ignore_limit = ignore_limit
        self.stores = frozenset(stores) if stores is not None else None
        self.companies = frozenset(companies) if companies is not None else None
        self.pause_gc = pause_gc
        self.extra_routes = list(extra_routes or [])
        self.seed_store = SeedStore(self.store, track_deletes=report_deletes)
        if profile == "seed":
            self.seed_store.create_schema()
        self.on_change: list[Callable[[ChangeEvent], None]] = []
        self.requests: Counter[str] = Counter()
        self._app: ASGIApp | None = None
        self._purge_lock = threading.Lock()
        self._last_purge = 0.0

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"ReferenceHO(engine={url!r}, profile={self.profile!r})"

    def __enter__(self) -> ReferenceHO:
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
            routes = [*admin_routes(self), *self.extra_routes]
            if self.profile == "seed":  # injected errors answer in the profile's error shape too
                inner, shape = build_seed_app(self, routes), error_body
            else:
                inner, shape = build_app(self, routes), posync_error_body
            self._app = FaultMiddleware(_CountRequests(inner, self.requests), self.faults, shape)
        return self._app

    # -- protocol operations (the HTTP layer calls these in a worker thread) ----------------------

    def apply_push(self, outlet_id: str, raw_changes: list[Any]) -> list[dict[str, Any]]:
        self._posync_only("push")
        # a batch's ~10,000 containers die by reference counting; pausing the GC is the host's call (_gc.py)
        with _gc.paused(self.pause_gc):
            items = [parse_change(raw) for raw in raw_changes]
            results, changed = self.store.apply_changes(outlet_id, items, self.validators,
                                                        want_changed=bool(self.on_change))
        self._notify(changed, "push", outlet_id)
        self._maybe_purge()
        return results

    def apply_usage(self, outlet_id: str, raw_usages: list[Any]) -> list[dict[str, Any]]:
        self._posync_only("idempotent usage upload")
        items: list[tuple[str, str, dict[str, Any]] | Rejection] = []
        for raw in raw_usages:
            key = raw.get("idempotency_key") if isinstance(raw, dict) else None
            if not isinstance(raw, dict) or not isinstance(key, str) or not key or len(key) > 255:
                items.append(Rejection("VALIDATION_ERROR", "usage must be an object with an idempotency_key",
                                       key=key if isinstance(key, str) else None))
                continue
            body = {k: v for k, v in raw.items() if k != "idempotency_key"}
            items.append((key, request_hash("usage", body), body))
        return self.store.apply_usages(outlet_id, items, self.validators)

    # -- admin API (HO-side edits and inspection) ------------------------------------------------

    def put(self, resource: str, entity_id: str, data: dict[str, Any]) -> int:
        """An HO-side create/edit (re-creates a tombstone); answers the new version (the seed profile
        keeps it internally and never serves it)."""
        store = self.seed_store if self.profile == "seed" else self.store
        rec = store.put(resource, entity_id, dict(data))
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
        store = self.seed_store if self.profile == "seed" else self.store
        rec = store.delete(resource, entity_id)
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
        (seed profile: ``idempotency_key`` is the usage's ``usage_id`` or ``""``; ``outlet_id`` is
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
        """Seed profile with ``report_deletes``: id -> deletion time of each hard-deleted ``resource`` row."""
        return self.seed_store.deletions(resource) if self.profile == "seed" else {}

    def purge_tombstones(self, horizon: float | None = None) -> int:
        """Drop tombstones older than ``horizon`` (default: ``tombstone_horizon``, else all of them)."""
        h = horizon if horizon is not None else (self.tombstone_horizon or 0.0)
        return self.store.purge_tombstones(h)

    def revoke_access_tokens(self) -> None:
        self.auth.revoke_access_tokens()

    def issue_tokens(self, username: str = DEFAULT_USERNAME) -> dict[str, str]:
        return self.auth.issue(username)

    def stats(self) -> dict[str, Any]:
        return {**self.store.counts(), "requests": dict(self.requests),
                "faults": dict(self.faults.injected)}

    # -- internals -------------------------------------------------------------------------------

    def _notify(self, changed: list[HORecord], source: str, outlet_id: str | None) -> None:
        if not self.on_change:
            return
        shape = seed_record if self.profile == "seed" else HORecord.as_pull
        for rec in changed:
            event = ChangeEvent("delete" if rec.deleted else "update", rec.resource, shape(rec), source,
                                outlet_id, rec.change_seq)
            for fn in list(self.on_change):
                try:
                    fn(event)
                except Exception:
                    log.exception("reference HO on_change callback %r failed", fn)

    def _posync_only(self, what: str) -> None:
        if self.profile != "posync":
            raise RuntimeError(f"the seed profile has no {what} (docs/seed-profile.md)")

    def _maybe_purge(self) -> None:
        if self.tombstone_horizon is None:
            return
        now = time.monotonic()
        with self._purge_lock:
            if now - self._last_purge < 1.0:
                return
            self._last_purge = now
        self.store.purge_tombstones(self.tombstone_horizon)
