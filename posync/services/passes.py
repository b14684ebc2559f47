"""The two ways a resource's changes are read, and what posync does about each one's weak spots.

**Cursor** (posync's protocol): pages after a commit-ordered cursor, each saved with its page. An HO whose
cursor does not advance, repeats, or runs backwards would loop for ever: that is a ``ProtocolError``,
as is a pass that never ends. A cursor older than HO's tombstones (``CURSOR_EXPIRED``) means a full
resync: everything is read and the local rows HO no longer has are deleted (never one with an unpushed
change).

**Offset** (the seed HO, and any HO without cursors): ``updated_since`` + ``limit``/``offset`` over a set
that changes while it is read. A row deleted or updated between two page reads shifts the later ones,
and offset paging then skips rows silently. A pass therefore counts: it is *whole* only when HO's
``total`` stayed the same on every page, it saw at least ``total`` distinct ids, and no record it saw
changed after the pass began (HO's ``sync_timestamp`` of the first page). A pass that is not whole is read
again from the same ``updated_since`` (bounded); only a whole pass moves the checkpoint, to its start
minus an overlap, on HO's clock, never the outlet's.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from posync.codec import parse_datetime
from posync.errors import ProtocolError, ResyncRequiredError
from posync.ho import PullPage
from posync.registry import TrackedEntity

if TYPE_CHECKING:
    from posync.services.pull import PullService, PullStats

__all__ = ["SINCE", "OffsetPass", "cursor_listing", "cursor_pass", "full_resync", "offset_pass", "read_offset_pass",
           "version_settled"]

log = logging.getLogger("posync.pull")
SINCE = "since:"
# a pass that would need more pages than this is an HO that never says "no more"
MAX_PAGES = 20_000
# how often a pass over a set that changed under it is read again before the checkpoint stays put
MAX_PASSES = 3


def _number(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    text = cursor[2:] if cursor.startswith("c:") else cursor
    return int(text) if text.isdigit() else None


# -- cursor ---------------------------------------------------------------------------------------------------


def cursor_pass(service: PullService, entity: TrackedEntity, cursor: str | None, stats: PullStats) -> bool:
    """Pages after ``cursor`` until HO has no more; answers True (a cursor pass is always whole)."""
    try:
        page = service.client.pull(entity, service.page_size, cursor=cursor)
    except ResyncRequiredError:
        log.warning("%s: cursor older than HO's tombstones, reading it in full", entity.resource)
        full_resync(service, entity, stats)
        return True
    if page.next_cursor is None and (page.has_more or page.sync_timestamp):
        # an HO without cursors (seed 004's updated_since + offset): this pass goes the offset way
        return offset_pass(service, entity, None, stats, first=page) is not None
    seen = {cursor}
    # The next page is fetched while this one is applied: HTTP and the database overlap.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="posync-pull") as prefetch:
        for _ in range(MAX_PAGES):
            next_cursor = _advance(entity, cursor, page, seen)
            upcoming: Future[PullPage] | None = None
            if page.has_more and not service.stopping():
                upcoming = prefetch.submit(service.client.pull, entity, service.page_size, cursor=next_cursor)
            service.apply_page(entity, page.records, page.deleted, stats, cursor=next_cursor)
            cursor = next_cursor
            if upcoming is None:
                return True
            page = upcoming.result()
    raise ProtocolError(f"{entity.resource}: HO kept answering has_more for {MAX_PAGES:,} pages")


def _advance(entity: TrackedEntity, cursor: str | None, page: PullPage, seen: set[str | None]) -> str | None:
    """The cursor after ``page``; one that does not move on while HO says there is more is a protocol error."""
    next_cursor = page.next_cursor or cursor
    if page.has_more:
        if next_cursor in seen:
            raise ProtocolError(f"{entity.resource}: HO's cursor did not advance ({str(next_cursor)[:40]!r} "
                                "again, with has_more)")
        before, after = _number(cursor), _number(next_cursor)
        if before is not None and after is not None and after < before:
            raise ProtocolError(f"{entity.resource}: HO's cursor went backwards ({before} -> {after})")
    seen.add(next_cursor)
    return next_cursor


def cursor_listing(service: PullService, entity: TrackedEntity, stats: PullStats) -> tuple[set[str], str | None, int]:
    """Everything from an empty cursor, applied as it comes: (the ids HO has, the cursor at the end,
    the pages read)."""
    live: set[str] = set()
    cursor: str | None = None
    seen: set[str | None] = {None}
    for pages in range(1, MAX_PAGES + 1):
        page = service.client.pull(entity, service.page_size, cursor=cursor)
        cursor = _advance(entity, cursor, page, seen)
        live.update(entity.record_id(r) for r in page.records)
        live.difference_update(entity.record_id(t) for t in page.deleted)
        service.apply_page(entity, page.records, page.deleted, stats)
        if not page.has_more:
            return live, cursor, pages
    raise ProtocolError(f"{entity.resource}: HO kept answering has_more for {MAX_PAGES:,} pages")


def full_resync(service: PullService, entity: TrackedEntity, stats: PullStats) -> None:
    """Everything from an empty cursor; then the local rows HO no longer has go."""
    from posync.services.reconcile import remove_gone

    live, cursor, _ = cursor_listing(service, entity, stats)
    gone = remove_gone(service, entity, live, cap=None,
                       checkpoint={"cursor": cursor, "last_full_resync_at": service.now()})
    stats.resynced.append(entity.resource)
    log.info("%s: full resync read %d records, removed %d local rows HO no longer has", entity.resource,
             len(live), gone)


# -- offset ---------------------------------------------------------------------------------------------------


@dataclass
class OffsetPass:
    started: datetime | None = None  # HO's sync_timestamp on the first page
    ids: set[str] = field(default_factory=set)
    totals: set[int] = field(default_factory=set)
    latest: datetime | None = None  # the newest updated_at among the records read
    late: dict[str, datetime] = field(default_factory=dict)  # records dated at or after ``started``
    deleted: set[str] = field(default_factory=set)
    pages: int = 0

    @property
    def whole(self) -> bool:
        """Read over a set that did not change under it (see the module docstring)."""
        if len(self.totals) > 1:
            return False
        if self.totals and len(self.ids) < next(iter(self.totals)):
            return False
        return not (self.started is not None and self.latest is not None and self.latest >= self.started)

    def repeats(self, previous: OffsetPass | None) -> bool:
        """Whole but for records dated after its start that the previous pass read with the same dates:
        HO's clock is behind its data (it was stepped back), nothing changed. Without this, every pass
        until HO's clock catches up would look changed: the checkpoint would never move and the
        reconciliation never run."""
        if previous is None or not self.late or self.late != previous.late or self.ids != previous.ids:
            return False
        if len(self.totals | previous.totals) > 1:
            return False
        return not (self.totals and len(self.ids) < next(iter(self.totals)))


def read_offset_pass(service: PullService, entity: TrackedEntity, since: str | None, stats: PullStats, *,
                     first: PullPage | None = None, apply: bool = True) -> OffsetPass:
    """One pass of pages from ``updated_since=since``, applied as they come (the checkpoint is not moved).
    The next page is fetched while this one is applied."""
    result = OffsetPass()
    page = first or service.client.pull(entity, service.page_size, updated_since=since)
    offset = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="posync-pull") as prefetch:
        for _ in range(MAX_PAGES):
            upcoming: Future[PullPage] | None = None
            if page.has_more and not service.stopping():
                if page.next_offset is None or page.next_offset <= offset:
                    raise ProtocolError(f"{entity.resource}: HO's next_offset does not advance ({offset} -> "
                                        f"{page.next_offset})")
                offset = page.next_offset
                upcoming = prefetch.submit(service.client.pull, entity, service.page_size, updated_since=since,
                                           offset=offset)
            _count(entity, result, page)
            if apply:
                service.apply_page(entity, page.records, page.deleted, stats)
            if upcoming is None:
                return result
            page = upcoming.result()
    raise ProtocolError(f"{entity.resource}: HO kept answering has_more for {MAX_PAGES:,} pages")


def _count(entity: TrackedEntity, result: OffsetPass, page: PullPage) -> None:
    """What a page tells about the pass: HO's start, its totals, the ids, the newest save."""
    if result.started is None and page.sync_timestamp:
        result.started = _stamp(entity, page.sync_timestamp)
    if page.total is not None:
        result.totals.add(page.total)
    for record in page.records:
        result.ids.add(entity.record_id(record))
        stamp = record.get("updated_at")
        if isinstance(stamp, str):
            moment = _stamp(entity, stamp)
            if result.latest is None or moment > result.latest:
                result.latest = moment
            if result.started is not None and moment >= result.started:
                result.late[entity.record_id(record)] = moment
    result.deleted.update(entity.record_id(t) for t in page.deleted)
    result.pages += 1


def offset_pass(service: PullService, entity: TrackedEntity, cursor: str | None, stats: PullStats, *,
                first: PullPage | None = None) -> datetime | None:
    """Passes from the checkpoint's ``updated_since`` until one is whole (at most ``MAX_PASSES``); then
    the checkpoint moves to that pass's start minus the overlap. Answers the start of the whole pass,
    or None when none was whole (the checkpoint stays, the next cycle reads from it again)."""
    since = cursor[len(SINCE):] if cursor and cursor.startswith(SINCE) else None
    previous: OffsetPass | None = None
    for attempt in range(MAX_PASSES):
        result = read_offset_pass(service, entity, since, stats, first=first if attempt == 0 else None)
        settled = result.whole or result.repeats(previous)
        if settled or service.stopping():
            break
        previous = result
        stats.passes_read_again += 1
        log.debug("%s: HO's records changed while they were read (totals %s, %d ids); reading again from %s",
                  entity.resource, sorted(result.totals), len(result.ids), since)
    else:
        log.info("%s: HO's records kept changing under %d passes; the checkpoint stays at %s",
                 entity.resource, MAX_PASSES, since)
        return None
    if not settled:
        return None
    if not result.whole:
        log.info("%s: HO's clock is behind some of its records (dated up to %s); they are read again until "
                 "it catches up", entity.resource, max(result.late.values()).isoformat())
    if result.started is not None:
        start = result.started - timedelta(seconds=service.since_overlap)
        with service.transaction() as conn:
            service.checkpoints.save(conn, entity.resource, cursor=SINCE + start.isoformat(),
                                      last_pull_at=service.now())
    return result.started


def _stamp(entity: TrackedEntity, text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError as exc:
        raise ProtocolError(f"{entity.resource}: HO sent a timestamp posync cannot read ({exc})") from None


def version_settled(version: str, settled: Any) -> bool:
    """May a pull that read everything up to ``settled`` be skipped next time HO's version is ``version``?
    The seed HO's version is the epoch second of its latest save: a save later in that same second keeps
    the number. A pass that began before that second was over might have missed it."""
    if settled is True or not isinstance(settled, datetime):
        return bool(settled)
    try:
        number = float(version)
    except ValueError:
        return True
    if 1e9 <= number <= 1e10:  # looks like epoch seconds
        return settled.timestamp() >= number + 1
    return True
