"""A manifest pass: HO's pages, streamed, turned into ``posync_photo`` rows one transaction per page.

Offset pages over a set that changes can skip rows, and an ``updated_since`` from the outlet's clock
loses updates (seed 000's ``MAX(last_sync_at)``). So the checkpoint is HO's own clock (the first page's
``sync_timestamp``, or the older API's ``Date`` header) less a small overlap; a pass whose pages shifted
(:func:`~posync.services.photos.decide.pass_shifted`) is listed again, and if it keeps shifting the checkpoint
stays where it was. A full pass (or the first) also marks rows HO no longer lists as deleted at HO.

A photo the page parser refused (:class:`~posync.ho.photos.wire.RejectedPhoto`: malformed, or a key that could
escape the store) fails alone (issue 15): its row says ``failed`` with the reason (a row the outlet had keeps
its metadata and its bytes, still servable), the report and the older API's status call name it, and the
checkpoint stays at or before its ``updated_at`` (where it has none, it does not move) so that the next
incremental pass lists it again and takes it once HO has fixed it. A refused element without a usable id is
counted and reported by its position; a full pass that met one marks nothing deleted (it may be any row).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from posync.db import WriteGate
from posync.errors import HOErrorResponse, TransportError
from posync.ho.photos.sources import PhotoReport, PhotoSource
from posync.ho.photos.wire import ManifestPage, RejectedPhoto
from posync.models.photo import LocalPhoto, PhotoSyncStatus, RemotePhoto
from posync.repositories import photos as repo
from posync.services.photos.decide import PageMark, pass_shifted, plan_listed
from posync.services.photos.report import SyncReport, Tally
from posync.services.photos.writes import photo_write

__all__ = ["Lister", "ProductLookup"]

log = logging.getLogger("posync.photos")

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
    refused: dict[str, RejectedPhoto] = field(default_factory=dict)  # by id
    anonymous: list[tuple[int, RejectedPhoto]] = field(default_factory=list)  # (position in the pass, photo)
    refused_since: datetime | None = None  # the oldest refused photo's updated_at
    hold: bool = False  # a refused photo without a usable updated_at: the checkpoint cannot move

    def refuse(self, offset: int, photo: RejectedPhoto) -> None:
        if photo.photo_id is None:
            self.anonymous.append((offset + photo.position, photo))
        else:
            self.refused[photo.photo_id] = photo
        when = _utc(photo.updated_at)
        if when is None:
            self.hold = True
        elif self.refused_since is None or when < self.refused_since:
            self.refused_since = when


class Lister:
    def __init__(self, engine: Engine, source: PhotoSource, checkpoint_key: str, *, page_size: int,
                 products: ProductLookup | None, overlap: float = 2.0, max_relists: int = 2,
                 gate: WriteGate | None = None) -> None:
        self.engine = engine
        self.source = source
        self.key = checkpoint_key
        self.page_size = page_size
        self.products = products
        self.overlap = timedelta(seconds=overlap)
        self.max_relists = max_relists
        self.gate = gate  # Posync's write gate, when it wired these photos
        self.reports: list[PhotoReport] = []  # the refused photos of the last run, for the older API's status call

    def present(self, conn: Connection, product_ids: Collection[str]) -> set[str]:
        if self.products is None or not product_ids:
            return set(product_ids)
        return self.products(conn, product_ids)

    def run(self, report: SyncReport, tally: Tally, *, full: bool, deadline: float) -> None:
        with repo.translating("read photo checkpoint"), self.engine.connect() as conn:
            cp = repo.load_checkpoint(conn, self.key)
        since = None if full or cp is None else _utc(cp.updated_since)
        state = self._list_steady(since, report, tally, deadline)
        self._report_refused(state, report)
        if report.error is not None or report.shifted:
            return  # the next pass lists from the same checkpoint again
        now = datetime.now(UTC)
        with photo_write(self.engine, self.gate, "save photo checkpoint") as conn:
            if since is None and not state.anonymous:  # all HO has was listed: what it no longer lists is gone
                repo.tombstone(conn, repo.all_ids(conn) - state.seen, now)
            mark = state.first_ts or state.max_updated
            values: dict[str, Any] = {"last_full_at" if full else "last_incremental_at": now}
            if full:
                values["last_incremental_at"] = now
            if mark is not None and not state.hold:  # never past a refused photo: listed again until fixed
                if state.refused_since is not None:
                    mark = min(mark, state.refused_since)
                values["updated_since"] = _earlier(mark, self.overlap)
            repo.save_checkpoint(conn, self.key, **values)

    def _list_steady(self, since: datetime | None, report: SyncReport, tally: Tally, deadline: float) -> _Pass:
        """List until a pass did not shift (at most ``max_relists`` again); the last pass's state."""
        for attempt in range(self.max_relists + 1):
            state = _Pass([], set())
            try:
                self._list(since, state, report, tally, deadline)
            except (TransportError, HOErrorResponse) as exc:
                report.error = str(exc)
                return state
            if not pass_shifted(state.marks, state.duplicates, state.complete):
                return state
            report.relists = attempt + 1
        report.shifted = True
        return state

    def _list(self, since: datetime | None, state: _Pass, report: SyncReport, tally: Tally,
              deadline: float) -> None:
        offset = 0
        for page in self.source.pages(since, self.page_size):
            state.marks.append(PageMark(offset, page.count, page.total))
            if state.first_ts is None and page.sync_timestamp is not None:
                state.first_ts = _utc(page.sync_timestamp)
            self._apply(page, offset, state, report)
            offset += page.count
            report.listed += page.count
            tally.emit()
            if time.monotonic() > deadline:
                raise TransportError("photo listing: the pass deadline ran out")
        state.complete = True

    def _apply(self, page: ManifestPage, offset: int, state: _Pass, report: SyncReport) -> None:
        photos: dict[str, RemotePhoto] = {}
        for p in page.photos:
            if p.id in state.seen or p.id in photos:
                state.duplicates += 1
            photos[p.id] = p
            u = _utc(p.updated_at)
            if u is not None and (state.max_updated is None or u > state.max_updated):
                state.max_updated = u
        refused: dict[str, RejectedPhoto] = {}
        for r in page.rejected:
            state.refuse(offset, r)
            if r.photo_id is not None:
                if r.photo_id in state.seen or r.photo_id in photos or r.photo_id in refused:
                    state.duplicates += 1
                photos.pop(r.photo_id, None)  # listed twice on one page, once refused: the refusal stands
                refused[r.photo_id] = r
        state.seen.update(photos)
        state.seen.update(refused)
        now = datetime.now(UTC)
        with photo_write(self.engine, self.gate, "write listed photos") as conn:
            states = repo.local_states(conn, [*photos, *refused])
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
            changed = self._write_refused(conn, refused, states)
            if page.deleted_ids:
                repo.tombstone(conn, [i for i in page.deleted_ids if i not in photos and i not in refused], now)
        report.changed += len(inserts) + len(updates) + changed

    @staticmethod
    def _write_refused(conn: Connection, refused: dict[str, RejectedPhoto], states: dict[str, LocalPhoto]) -> int:
        new: list[tuple[str, str, datetime | None]] = []
        known: list[tuple[str, str]] = []
        for photo_id, r in refused.items():
            error = f"{r.reason}: {r.detail}"
            local = states.get(photo_id)
            if local is None:
                new.append((photo_id, error, _utc(r.updated_at)))
            elif local.sync_status != PhotoSyncStatus.FAILED or local.sync_error != error[:500] or local.tombstoned:
                known.append((photo_id, error))
        repo.insert_refused(conn, new)
        repo.mark_refused(conn, known)
        return len(new) + len(known)

    def _report_refused(self, state: _Pass, report: SyncReport) -> None:
        """The pass's refused photos, once each (a relisted pass meets them again), into the report and the log."""
        self.reports = [PhotoReport(i, "failed", None, f"{r.reason}: {r.detail}") for i, r in state.refused.items()]
        entries: list[dict[str, Any]] = [{"photo_id": i, "reason": r.reason, "detail": r.detail}
                                         for i, r in state.refused.items()]
        entries += [{"photo_id": None, "position": at, "reason": r.reason, "detail": r.detail}
                    for at, r in state.anonymous]
        if not entries:
            return
        report.add_failures(entries, refused=True)
        shown = "; ".join(f"{e['photo_id'] or '#' + str(e['position'])}: {e['reason']} ({e['detail']})"
                          for e in entries[:10])
        log.warning("photos: %d listed photos refused, each fails alone until HO fixes it: %s%s", len(entries),
                    shown, "; ..." if len(entries) > 10 else "")


def _earlier(mark: datetime, by: timedelta) -> datetime:
    """``mark - by``, or the earliest time there is (a refused photo may say it was updated in year 1)."""
    try:
        return mark - by
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
