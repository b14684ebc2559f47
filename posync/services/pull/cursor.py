"""Cursor paging (posync's protocol), and what posync does about its weak spots.

Pages come after a commit-ordered cursor, each saved with its page. An HO whose cursor does not advance,
repeats, or runs backwards would loop for ever: that is a ``ProtocolError``, as is a pass that never ends.
A cursor older than HO's tombstones (``CURSOR_EXPIRED``) means a full resync: everything is read and the
local rows HO no longer has are deleted (never one with an unpushed change).
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Future, ThreadPoolExecutor

from posync.errors import ProtocolError, ResyncRequiredError
from posync.ho import PullPage
from posync.registry import TrackedEntity
from posync.services.pull.context import MAX_PAGES, Listing, PassResult, PullContext
from posync.services.pull.offset import offset_pass

__all__ = ["cursor_listing", "cursor_pass", "full_resync"]

log = logging.getLogger("posync.pull")


def _number(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    text = cursor[2:] if cursor.startswith("c:") else cursor
    return int(text) if text.isdigit() else None


def cursor_pass(ctx: PullContext, entity: TrackedEntity, cursor: str | None) -> PassResult:
    """Pages after ``cursor`` until HO has no more (a cursor pass is always whole)."""
    try:
        page = ctx.fetch(entity, cursor=cursor)
    except ResyncRequiredError:
        log.warning("%s: cursor older than HO's tombstones, reading it in full", entity.resource)
        full_resync(ctx, entity)
        return PassResult(settled=True, resynced=True)
    if page.next_cursor is None and (page.has_more or page.sync_timestamp):
        # an HO without cursors (seed 004's updated_since + offset): this pass goes the offset way, and
        # settles as a cursor pass does, whenever it began
        return dataclasses.replace(offset_pass(ctx, entity, None, first=page), began=None)
    seen = {cursor}
    # The next page is fetched while this one is applied: HTTP and the database overlap.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="posync-pull") as prefetch:
        for _ in range(MAX_PAGES):
            next_cursor = _advance(entity, cursor, page, seen)
            upcoming: Future[PullPage] | None = None
            if page.has_more and not ctx.stopping():
                upcoming = prefetch.submit(ctx.fetch, entity, cursor=next_cursor)
            ctx.apply(entity, page, cursor=next_cursor)
            cursor = next_cursor
            if upcoming is None:
                return PassResult(settled=True)
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


def cursor_listing(ctx: PullContext, entity: TrackedEntity) -> Listing:
    """Everything from an empty cursor, applied as it comes (the checkpoint is not moved)."""
    live: set[str] = set()
    cursor: str | None = None
    seen: set[str | None] = {None}
    for pages in range(1, MAX_PAGES + 1):
        page = ctx.fetch(entity, cursor=cursor)
        cursor = _advance(entity, cursor, page, seen)
        live.update(entity.record_id(r) for r in page.records)
        live.difference_update(entity.record_id(t) for t in page.deleted)
        ctx.apply(entity, page)
        if not page.has_more:
            return Listing(live, pages, cursor)
    raise ProtocolError(f"{entity.resource}: HO kept answering has_more for {MAX_PAGES:,} pages")


def full_resync(ctx: PullContext, entity: TrackedEntity) -> None:
    """Everything from an empty cursor; then the local rows HO no longer has go."""
    listing = cursor_listing(ctx, entity)
    gone = ctx.outlet.remove_gone(entity, listing.live, cap=None,
                                  checkpoint={"cursor": listing.cursor, "last_full_resync_at": ctx.outlet.now()})
    log.info("%s: full resync read %d records, removed %d local rows HO no longer has", entity.resource,
             len(listing.live), gone)
