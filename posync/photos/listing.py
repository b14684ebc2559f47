"""A manifest pass: HO's pages, streamed, turned into ``posync_photo`` rows one transaction per page.

Offset pages over a set that changes can skip rows, and an ``updated_since`` from the outlet's clock
loses updates (seed 000's ``MAX(last_sync_at)``). So the checkpoint is HO's own clock (the first page's
``sync_timestamp``, or the older API's ``Date`` header) less a small overlap; a pass whose pages shifted
(:func:`~posync.photos.decide.pass_shifted`) is listed again, and if it keeps shifting the checkpoint
stays where it was. A full pass (or the first) also marks rows HO no longer lists as deleted at HO.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from posync.db import write_transaction
from posync.errors import HOErrorResponse, TransportError
from posync.photos import repository as repo
from posync.photos.client.sources import PhotoSource
from posync.photos.decide import PageMark, pass_shifted, plan_listed
from posync.photos.report import SyncReport, Tally
from posync.photos.wire import ManifestPage, RemotePhoto

__all__ = ["Lister", "ProductLookup"]

# (conn, product ids) -> the ids the outlet has; None: every product is there
ProductLookup = Callable[[Connection, Collection[str]], set[str]]


@dataclass
class _Pass:
    marks: list[PageMark]
    seen: set[str]
    duplicates: int = 0
    first_ts: datetime | None = None
    max_updated: datetime | None = None
    complete: bool = False


class Lister:
    def __init__(self, engine: Engine, source: PhotoSource, checkpoint_key: str, *, page_size: int,
                 products: ProductLookup | None, overlap: float = 2.0, max_relists: int = 2) -> None:
        self.engine = engine
        self.source = source
        self.key = checkpoint_key
        self.page_size = page_size
        self.products = products
        self.overlap = timedelta(seconds=overlap)
        self.max_relists = max_relists

    def present(self, conn: Connection, product_ids: Collection[str]) -> set[str]:
        if self.products is None or not product_ids:
            return set(product_ids)
        return self.products(conn, product_ids)

    def run(self, report: SyncReport, tally: Tally, *, full: bool, deadline: float) -> None:
        with repo.translating("read photo checkpoint"), self.engine.connect() as conn:
            cp = repo.load_checkpoint(conn, self.key)
        since = None if full or cp is None else _utc(cp.updated_since)
        for attempt in range(self.max_relists + 1):
            state = _Pass([], set())
            try:
                self._list(since, state, report, tally, deadline)
            except (TransportError, HOErrorResponse) as exc:
                report.error = str(exc)
                return
            shifted = pass_shifted(state.marks, state.duplicates, state.complete)
            if not shifted:
                break
            report.relists = attempt + 1
        else:
            report.shifted = True  # the next pass lists from the same checkpoint again
            return
        now = datetime.now(UTC)
        with repo.translating("save photo checkpoint"), write_transaction(self.engine) as conn:
            if since is None:  # everything HO has was listed: what it no longer lists is gone there
                repo.tombstone(conn, repo.all_ids(conn) - state.seen, now)
            mark = state.first_ts or state.max_updated
            values: dict[str, Any] = {"last_full_at" if full else "last_incremental_at": now}
            if full:
                values["last_incremental_at"] = now
            if mark is not None:
                values["updated_since"] = mark - self.overlap
            repo.save_checkpoint(conn, self.key, **values)

    def _list(self, since: datetime | None, state: _Pass, report: SyncReport, tally: Tally,
              deadline: float) -> None:
        offset = 0
        for page in self.source.pages(since, self.page_size):
            state.marks.append(PageMark(offset, len(page.photos), page.total))
            offset += len(page.photos)
            if state.first_ts is None and page.sync_timestamp is not None:
                state.first_ts = _utc(page.sync_timestamp)
            self._apply(page, state, report)
            report.listed += len(page.photos)
            tally.emit()
            if time.monotonic() > deadline:
                raise TransportError("photo listing: the pass deadline ran out")
        state.complete = True

    def _apply(self, page: ManifestPage, state: _Pass, report: SyncReport) -> None:
        photos: dict[str, RemotePhoto] = {}
        for p in page.photos:
            if p.id in state.seen or p.id in photos:
                state.duplicates += 1
            photos[p.id] = p
            if p.updated_at is not None:
                u = _utc(p.updated_at)
                state.max_updated = u if state.max_updated is None or u > state.max_updated else state.max_updated
        state.seen.update(photos)
        now = datetime.now(UTC)
        with repo.translating("write listed photos"), write_transaction(self.engine) as conn:
            states = repo.local_states(conn, list(photos))
            present = self.present(conn, {p.product_id for p in photos.values()})
            inserts: list[tuple[RemotePhoto, str, str | None]] = []
            updates: list[dict[str, Any]] = []
            for p in photos.values():
                local = states.get(p.id)
                plan = plan_listed(p, local, p.product_id in present)
                if local is None:  # the common case of a first sync: a plain new row
                    inserts.append((p, plan.status, plan.error))
                    continue
                if not plan.write:
                    continue
                values: dict[str, Any] = {**p.meta(), "sync_status": plan.status, "sync_error": plan.error}
                if plan.reset_attempts:
                    values.update(attempts=0, next_attempt_at=None)
                if plan.untombstone:
                    values["ho_deleted_at"] = None
                updates.append({"b_id": p.id, **values})
            repo.insert_listed(conn, inserts)
            repo.update_rows(conn, updates)
            if page.deleted_ids:
                repo.tombstone(conn, [i for i in page.deleted_ids if i not in photos], now)
        report.changed += len(inserts) + len(updates)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
