"""``SeedHO``: the head office of seeds 004/001 as docs/seed-profile.md describes it, naive parts included:
offset paging over the live query, no versions on the wire, hard deletes, a timestamp version, usages
never deduplicated, JWT only, no push. Its knobs are :class:`~posync.testing.options.SeedOptions`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy.engine import Engine
from starlette.routing import Route
from starlette.types import ASGIApp

from posync.testing.faults import Faults
from posync.testing.head_office import Profile, RecordEdits, ReferenceHO
from posync.testing.options import HOOptions, SeedOptions
from posync.testing.schema import HORecord
from posync.testing.seed_routes import seed_app
from posync.testing.seed_rules import error_body, seed_record
from posync.testing.seed_store import SeedStore

__all__ = ["SeedHO"]


class SeedHO(ReferenceHO):
    profile: ClassVar[Profile] = "seed"

    def __init__(self, db_url: str | None = None, *, engine: Engine | None = None,
                 options: HOOptions | None = None, faults: Faults | None = None,
                 seed: SeedOptions | None = None) -> None:
        super().__init__(db_url, engine=engine, options=options, faults=faults)
        self.seed = seed if seed is not None else SeedOptions()
        self.seed_store = SeedStore(self.store, track_deletes=self.seed.report_deletes)
        self.seed_store.create_schema()

    @property
    def edits(self) -> RecordEdits:
        return self.seed_store

    def _starlette_app(self, routes: list[Route]) -> ASGIApp:
        return seed_app(self, routes)

    @staticmethod
    def _error_body(code: str, message: str) -> dict[str, Any]:
        return error_body(code, message)

    @staticmethod
    def _served_shape(rec: HORecord) -> dict[str, Any]:
        return seed_record(rec)

    def apply_push(self, outlet_id: str, raw_changes: list[Any]) -> list[dict[str, Any]]:
        raise RuntimeError("the seed profile has no push (docs/seed-profile.md)")

    def apply_usage(self, outlet_id: str, raw_usages: list[Any]) -> list[dict[str, Any]]:
        raise RuntimeError("the seed profile has no idempotent usage upload (docs/seed-profile.md)")

    def deletions(self, resource: str) -> dict[str, str]:
        """With ``report_deletes``: id -> deletion time of each hard-deleted ``resource`` row."""
        return self.seed_store.deletions(resource)

