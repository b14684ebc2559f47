"""Pulling HO's changes: :class:`~posync.services.pull.service.PullService` runs it, per resource, with the
passes of the paging HO offers (``cursor``, ``offset``), the id reconciliation (``reconcile``), and the
outlet database as they read and write it (``outlet``).

    service     pull_all / pull / reconcile / reset, each resource's backoff
    reconcile   list every id HO has, remove the local rows it no longer has
    cursor      cursor passes, the full resync
    offset      offset passes, read again until whole
    context     what a pass works with and what it answers
    outlet      pages applied in short transactions, checkpoints, rows removed
    stats       what pulling reports
"""

from posync.services.pull.service import PullService
from posync.services.pull.stats import PullStats, ResourceHealth

__all__ = ["PullService", "PullStats", "ResourceHealth"]
