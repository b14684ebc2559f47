"""What pulling reports: the pages it applied, a pull's outcome per resource, a failing resource's health."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from posync.services.apply import ApplyStats

__all__ = ["PageTally", "PullStats", "ResourceHealth"]


@dataclass
class PageTally:
    """The pages applied so far, counted as they are applied: a pass that fails half way still counts
    what it wrote."""

    pages: int = 0
    applied: ApplyStats = field(default_factory=ApplyStats)


@dataclass
class PullStats(PageTally):
    skipped_resources: list[str] = field(default_factory=list)
    resynced: list[str] = field(default_factory=list)
    # resources that failed this time (resource -> the error) or wait out an earlier failure
    failed: dict[str, str] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    passes_read_again: int = 0


@dataclass
class ResourceHealth:
    """One resource's pull failures (in this process): they back off on their own."""

    failures: int = 0
    since: datetime | None = None
    last_error: str | None = None
    not_before: float = 0.0  # time.monotonic()

    def as_dict(self) -> dict[str, Any]:
        return {"failures": self.failures, "failing_since": self.since.isoformat() if self.since else None,
                "last_error": self.last_error,
                "next_attempt_in": max(0.0, round(self.not_before - time.monotonic(), 1))}
