"""What a pass works with (:class:`PullContext`) and what it answers (:class:`PassResult`, :class:`Listing`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from posync.errors import HOErrorResponse
from posync.ho import HOClient, PullPage, VersionInfo
from posync.registry import TrackedEntity
from posync.services.pull.outlet import PullOutlet
from posync.services.pull.stats import PageTally

__all__ = ["MAX_PAGES", "Listing", "PassResult", "PullContext", "ho_versions"]

# a pass that would need more pages than this is an HO that never says "no more"
MAX_PAGES = 20_000


def ho_versions(client: HOClient) -> VersionInfo | None:
    try:
        return client.version()
    except HOErrorResponse:  # an HO without the version endpoint: pull every time
        return None


@dataclass(frozen=True)
class PullContext:
    """One pull's HO, outlet and settings, as the passes see them."""

    client: HOClient
    outlet: PullOutlet
    page_size: int
    since_overlap: float  # seconds an offset checkpoint stays behind the start of HO's whole pass
    stopping: Callable[[], bool]
    tally: PageTally  # every page applied is counted here

    def fetch(self, entity: TrackedEntity, *, cursor: str | None = None, updated_since: str | None = None,
              offset: int | None = None) -> PullPage:
        return self.client.pull(entity, self.page_size, cursor=cursor, updated_since=updated_since, offset=offset)

    def apply(self, entity: TrackedEntity, page: PullPage, **checkpoint: Any) -> None:
        self.outlet.apply_page(entity, page.records, page.deleted, self.tally, **checkpoint)


@dataclass(frozen=True)
class PassResult:
    """What a pass read. ``settled``: everything HO had when it began, and the checkpoint moved past it;
    ``began``: when that was on HO's clock, if the pass depends on it (offset paging)."""

    settled: bool
    began: datetime | None = None
    read_again: int = 0  # passes read again because HO's records changed under them
    resynced: bool = False  # read in full after HO's tombstones outgrew the cursor

    def vouches_for(self, version: str) -> bool:
        """May the next pull be skipped while HO's version is ``version``? The seed HO's version is the
        epoch second of its latest save: a save later in that same second keeps the number. A pass that
        began before that second was over might have missed it."""
        if not self.settled or self.began is None:
            return self.settled
        try:
            number = float(version)
        except ValueError:
            return True
        if 1e9 <= number <= 1e10:  # looks like epoch seconds
            return self.began.timestamp() >= number + 1
        return True


class Listing(NamedTuple):
    """Every id HO has, read in full (and applied as it came)."""

    live: set[str]
    pages: int
    cursor: str | None = None  # where a cursor listing ended
