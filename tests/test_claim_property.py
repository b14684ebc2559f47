"""Hypothesis: whatever the outbox holds, a claim takes each claimable entity's head, never two changes of
one entity, never an entity with a change in flight or set aside, and as many entities as it may.

Claim reads the due index in windows and takes an entity's only item straight from that scan
(posync/services/push/claim.py); this checks the result against a plain model of the head-of-line rule,
computed from the outbox table before each claim.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from posync import ItemStatus
from posync.demo.models import Order
from posync.ho import PushResult
from posync.models import OutboxItem
from posync.services.push import Lease, PushStats
from posync.services.push.claim import MAX_SCAN
from posync.testing import SyncHarness
from tests.support import Outlet, make_outlet

OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]
ENTITIES = [f"o{i}" for i in range(5)]

# one step: ("write", entity) edits (or creates) an order; ("claim", limit) claims; ("settle", k) settles
# the k-th oldest batch still in flight as applied; ("fail", k) gives it back as a retryable failure
steps = st.lists(st.one_of(
    st.tuples(st.just("write"), st.sampled_from(ENTITIES)),
    st.tuples(st.just("claim"), st.integers(1, 5)),
    st.tuples(st.just("settle"), st.integers(0, 3)),
    st.tuples(st.just("fail"), st.integers(0, 3)),
), min_size=1, max_size=40)


def claimable_heads(outlet: Outlet, now: float) -> tuple[dict[str, int], int]:
    """The model: per entity, its earliest unsettled item, if that one may be sent now; and how many
    pending items are due (what a claim may have to scan)."""
    with outlet.engine.connect() as conn:
        rows = conn.execute(sa.select(OUTBOX.c.entity_id, OUTBOX.c.id, OUTBOX.c.status, OUTBOX.c.available_at)
                            .order_by(OUTBOX.c.id)).all()
    items: dict[str, list[tuple[int, str, float]]] = {}
    for entity_id, item_id, status, available_at in rows:
        items.setdefault(entity_id, []).append((item_id, status, available_at))
    heads = {}
    due = sum(status == ItemStatus.PENDING.value and available_at <= now for _, _, status, available_at in rows)
    for entity_id, its in items.items():
        if any(status != ItemStatus.PENDING.value for _, status, _ in its):
            continue  # in flight or set aside: the entity waits
        head_id, _, available_at = its[0]
        if available_at <= now:
            heads[entity_id] = head_id
    return heads, due


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
# the oldest due item is a later edit of an entity in flight: the claim must read past it to find o1
@example([("write", "o0"), ("claim", 1), ("write", "o0"), ("write", "o1"), ("claim", 1)])
def test_a_claim_takes_the_heads_of_claimable_entities_and_no_more(tmp_path: Path,
                                                                   script: list[tuple[str, Any]]) -> None:
    outlet = make_outlet(f"sqlite:///{tmp_path / f'claim-{uuid.uuid4().hex}.db'}",
                         initial_backoff_seconds=0.0, max_backoff_seconds=0.0)
    push = SyncHarness(outlet.sync)
    in_flight: list[list[Lease]] = []
    totals: dict[str, int] = {}
    try:
        for kind, arg in script:
            if kind == "write":
                with outlet.Session() as s:
                    order = s.get(Order, arg)
                    if order is None:
                        s.add(Order(id=arg, total=0))
                    else:
                        order.total += 1
                    s.commit()
            elif kind == "claim":
                heads, due = claimable_heads(outlet, push.now())
                leases, _ = push.claim(arg)
                taken = [le.entity_id for le in leases]
                assert len(taken) == len(set(taken)), "two changes of one entity in one batch"
                if due <= MAX_SCAN * arg:  # the claim may read every due item: it must fill its batch
                    assert len(taken) == min(arg, len(heads)), (taken, heads)
                else:  # it reads at most MAX_SCAN items per change it may take: O(batch), maybe short
                    assert len(taken) <= min(arg, len(heads)), (taken, heads)
                for le in leases:
                    assert heads.get(le.entity_id) == le.item_id, "not the head of a claimable entity"
                if leases:
                    in_flight.append(leases)
            elif in_flight:
                batch = in_flight.pop(min(arg, len(in_flight) - 1))
                if kind == "settle":
                    results: list[PushResult] = []
                    for le in batch:
                        totals[le.entity_id] = totals.get(le.entity_id, 0) + 1
                        results.append(PushResult(status="applied", cloud_version=totals[le.entity_id]))
                else:
                    results = [PushResult(status="rejected", code="BUSY", reason="try again", retryable=True)
                               for _ in batch]
                push.settle(batch, results, PushStats(), 0.0)
    finally:
        outlet.close()
