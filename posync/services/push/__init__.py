"""Push: claim a batch from the outbox, send it to HO, settle each result.

Claiming (one transaction, ``claim``): reclaim expired leases; take due items oldest first; per entity
only the head, and only if nothing of that entity is in flight or set aside; fold the head's never-sent
followers into one change. Leasing (``lease``): freeze change + idempotency key (``keys``) under a lease.
Sending (``send``) happens outside any transaction. Settling (one transaction, ``settle``) only touches
items whose lease we still hold. A drain (``pipeline``) overlaps the outlet's database work with HO's.

Failure handling:
- HO unreachable / 429 / 503 / truncated answer: leases released untouched (same key, same payload,
  no attempt counted); the caller backs off. An outage never dead-letters anything.
- 500 on a batch: HO's version endpoint is asked whether HO is up at all. If not, it is an outage (as
  above). If it is, some change in the batch makes HO fail: the batch is bisected until the culprit
  stands alone; it counts a failed attempt, the rest are settled normally.
- per-change ``rejected``: ``retryable`` -> RetryPolicy decides (backoff or dead); otherwise dead at once.
  A dead change blocks only its own entity.
"""

from posync.services.push.lease import Lease
from posync.services.push.options import PushOptions
from posync.services.push.service import PushService
from posync.services.push.stats import PushStats

__all__ = ["Lease", "PushOptions", "PushService", "PushStats"]
