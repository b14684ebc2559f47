"""``reference_ho(profile=...)``: one call that builds either reference HO from flat keyword options, as
the tests, the demo and ``python -m posync.testing`` do. ``"posync"`` (default) builds a
:class:`~posync.testing.posync_ho.PosyncHO`, ``"seed"`` a :class:`~posync.testing.seed_ho.SeedHO`; an
option the chosen HO does not have is refused rather than silently ignored."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy.engine import Engine
from starlette.routing import Route

from posync.testing.changes import Validator
from posync.testing.faults import Faults
from posync.testing.head_office import Profile, ReferenceHO
from posync.testing.options import HOOptions, SeedOptions
from posync.testing.posync_ho import PosyncHO
from posync.testing.seed_ho import SeedHO

__all__ = ["reference_ho"]


def reference_ho(
    db_url: str | None = None,
    *,
    engine: Engine | None = None,
    profile: Profile = "posync",
    api_keys: Mapping[str, Collection[str] | None] | None = None,
    users: Mapping[str, str] | None = None,
    jwt_secret: str | None = None,
    access_ttl: float = 300.0,
    refresh_ttl: float = 86400.0,
    require_auth: bool = True,
    resources: Collection[str] | None = None,
    validators: Mapping[str, Validator] | None = None,
    faults: Faults | None = None,
    pause_gc: bool = False,
    extra_routes: list[Route] | None = None,
    tombstone_horizon: float | None = None,
    report_deletes: bool = False,
    max_limit: int | None = None,
    ignore_limit: bool = False,
    stores: Collection[str] | None = None,
    companies: Collection[str] | None = None,
) -> ReferenceHO:
    """The HO ``profile`` names. ``tombstone_horizon`` is the posync HO's; ``report_deletes``,
    ``max_limit``, ``ignore_limit``, ``stores`` and ``companies`` are the seed HO's
    (:class:`~posync.testing.options.SeedOptions`); the rest are :class:`~posync.testing.options.HOOptions`
    (``None``: its default)."""
    if profile not in ("posync", "seed"):
        raise ValueError(f"profile must be 'posync' or 'seed', not {profile!r}")
    defaults = HOOptions()
    options = HOOptions(
        api_keys=api_keys if api_keys is not None else defaults.api_keys,
        users=users if users is not None else defaults.users,
        jwt_secret=jwt_secret, access_ttl=access_ttl, refresh_ttl=refresh_ttl, require_auth=require_auth,
        resources=resources, validators=validators or {}, pause_gc=pause_gc, extra_routes=extra_routes or (),
    )
    seed_only = {"report_deletes": report_deletes, "max_limit": max_limit is not None,
                 "ignore_limit": ignore_limit, "stores": stores is not None, "companies": companies is not None}
    if profile == "posync":
        if any(seed_only.values()):
            raise ValueError(f"seed-profile options given to the posync profile: "
                             f"{sorted(k for k, v in seed_only.items() if v)}")
        return PosyncHO(db_url, engine=engine, options=options, faults=faults, tombstone_horizon=tombstone_horizon)
    if tombstone_horizon is not None:
        raise ValueError("the seed profile hard-deletes: it has no tombstones to expire")
    seed = SeedOptions(report_deletes=report_deletes, max_limit=max_limit, ignore_limit=ignore_limit,
                       stores=frozenset(stores) if stores is not None else None,
                       companies=frozenset(companies) if companies is not None else None)
    return SeedHO(db_url, engine=engine, options=options, faults=faults, seed=seed)
