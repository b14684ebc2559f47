"""Offset paging (the seed HO, and any HO without cursors), and what posync does about its weak spot.

``updated_since`` + ``limit``/``offset`` reads a set that changes while it is read. A row deleted or
updated between two page reads shifts the later ones, and offset paging then skips rows silently. A pass
therefore counts: it is *whole* only when HO's ``total`` stayed the same on every page, it saw at least
``total`` distinct ids, and no record it saw changed after the pass began (HO's ``sync_timestamp`` of the
first page). A pass that is not whole is read again from the same ``updated_since`` (bounded); only a
whole pass moves the checkpoint, to its start minus an overlap, on HO's clock, never the outlet's.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from posync.codec import parse_datetime
from posync.errors import ProtocolError
from posync.ho import PullPage
from posync.registry import TrackedEntity
from posync.services.pull.context import MAX_PAGES, Listing, PassResult, PullContext

__all__ = ["MAX_PASSES", "SINCE", "OffsetPass", "is_since", "offset_listing", "offset_pass", "read_offset_pass"]

log = logging.getLogger("posync.pull")
# an offset checkpoint's prefix: the cursor column then holds the next pass's ``updated_since``
SINCE = "since:"
# how often a pass over a set that changed under it is read again before the checkpoint stays put
MAX_PASSES = 3


def is_since(cursor: str | None) -> bool:
    """Is ``cursor`` an offset checkpoint (rather than HO's cursor)?"""
    return (cursor or "").startswith(SINCE)


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


def read_offset_pass(ctx: PullContext, entity: TrackedEntity, since: str | None, *,
                     first: PullPage | None = None) -> OffsetPass:
    """One pass of pages from ``updated_since=since``, applied as they come (the checkpoint is not moved).
    The next page is fetched while this one is applied."""
    result = OffsetPass()
    page = first or ctx.fetch(entity, updated_since=since)
    offset = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="posync-pull") as prefetch:
        for _ in range(MAX_PAGES):
            upcoming: Future[PullPage] | None = None
            if page.has_more and not ctx.stopping():
                if page.next_offset is None or page.next_offset <= offset:
                    raise ProtocolError(f"{entity.resource}: HO's next_offset does not advance ({offset} -> "
                                        f"{page.next_offset})")
                offset = page.next_offset
                upcoming = prefetch.submit(ctx.fetch, entity, updated_since=since, offset=offset)
            _count(entity, result, page)
            ctx.apply(entity, page)
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


def offset_pass(ctx: PullContext, entity: TrackedEntity, cursor: str | None, *,
                first: PullPage | None = None) -> PassResult:
    """Passes from the checkpoint's ``updated_since`` until one is whole (at most ``MAX_PASSES``); then
    the checkpoint moves to that pass's start minus the overlap. Settled, with the start of the whole
    pass, only when the checkpoint moved; otherwise the next cycle reads from the same checkpoint again."""
    since = cursor[len(SINCE):] if cursor and cursor.startswith(SINCE) else None
    previous: OffsetPass | None = None
    read_again = 0
    for attempt in range(MAX_PASSES):
        result = read_offset_pass(ctx, entity, since, first=first if attempt == 0 else None)
        settled = result.whole or result.repeats(previous)
        if settled or ctx.stopping():
            break
        previous = result
        read_again += 1
        log.debug("%s: HO's records changed while they were read (totals %s, %d ids); reading again from %s",
                  entity.resource, sorted(result.totals), len(result.ids), since)
    else:
        log.info("%s: HO's records kept changing under %d passes; the checkpoint stays at %s",
                 entity.resource, MAX_PASSES, since)
        return PassResult(settled=False, read_again=read_again)
    if not settled:
        return PassResult(settled=False, read_again=read_again)
    if not result.whole:
        log.info("%s: HO's clock is behind some of its records (dated up to %s); they are read again until "
                 "it catches up", entity.resource, max(result.late.values()).isoformat())
    if result.started is None:  # HO never said when the pass began: nothing to move the checkpoint to
        return PassResult(settled=False, read_again=read_again)
    start = result.started - timedelta(seconds=ctx.since_overlap)
    ctx.outlet.save_pulled(entity.resource, cursor=SINCE + start.isoformat())
    return PassResult(settled=True, began=result.started, read_again=read_again)


def offset_listing(ctx: PullContext, entity: TrackedEntity) -> Listing:
    """Every id HO has, from whole passes with no ``updated_since`` (the checkpoint is not moved). Raises
    ProtocolError when HO's set kept changing under ``MAX_PASSES`` passes."""
    previous: OffsetPass | None = None
    pages = 0
    for _ in range(MAX_PASSES):
        listing = read_offset_pass(ctx, entity, None)
        pages += listing.pages
        if listing.whole or listing.repeats(previous):
            return Listing(listing.ids - listing.deleted, pages)
        previous = listing
    raise ProtocolError(f"{entity.resource}: HO's records kept changing while they were listed; "
                        "the reconciliation waits for the next run")


def _stamp(entity: TrackedEntity, text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError as exc:
        raise ProtocolError(f"{entity.resource}: HO sent a timestamp posync cannot read ({exc})") from None
