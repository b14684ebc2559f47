"""The pure decision functions: coalescing, retry policy, conflict strategies."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posync import ConflictStrategy, Decision, LocalSide, Op, RemoteSide, RetryPolicy
from posync.services.coalesce import coalesce
from posync.services.resolve import decide


def local_ops() -> st.SearchStrategy[tuple[bool, list[Op]]]:
    """A valid run of local ops: (does HO have the entity at the start, ops)."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[bool, list[Op]]:
        exists = draw(st.booleans())
        ops: list[Op] = []
        alive = exists
        for _ in range(draw(st.integers(1, 8))):
            op = draw(st.sampled_from([Op.UPDATE, Op.DELETE]) if alive else st.just(Op.CREATE))
            ops.append(op)
            alive = op is not Op.DELETE
        return exists, ops

    return build()


def ho_apply(exists: bool, op: Op) -> bool:
    """HO's view: whether the entity exists after ``op`` (create of existing / change of missing is illegal)."""
    if op is Op.CREATE:
        assert not exists, "create of an entity HO has"
        return True
    assert exists, f"{op} of an entity HO does not have"
    return op is not Op.DELETE


@given(local_ops())
def test_coalescing_never_changes_what_ho_ends_up_with(run: tuple[bool, list[Op]]) -> None:
    exists, ops = run
    one_by_one = exists
    for op in ops:
        one_by_one = ho_apply(one_by_one, op)
    folded = coalesce(ops)
    at_once = exists if folded is None else ho_apply(exists, folded)
    assert at_once == one_by_one  # the data sent is the latest row either way


def test_coalesce_table() -> None:
    assert coalesce([Op.CREATE, Op.UPDATE]) is Op.CREATE
    assert coalesce([Op.CREATE, Op.UPDATE, Op.DELETE]) is None
    assert coalesce([Op.UPDATE, Op.DELETE]) is Op.DELETE
    assert coalesce([Op.DELETE, Op.CREATE]) is Op.UPDATE


@given(st.integers(1, 10), st.integers(0, 2**32))
def test_retry_delays_stay_in_bounds(failures: int, seed: int) -> None:
    policy = RetryPolicy()
    decision = policy.decide(failures, random.Random(seed))
    if failures > policy.max_retries:
        assert decision is None
    else:
        assert decision is not None
        base = min(policy.max_backoff, policy.initial_backoff * policy.multiplier ** (failures - 1))
        assert base / 2 <= decision.delay <= base


def test_seed_retry_config_is_the_default() -> None:
    p = RetryPolicy()
    assert (p.max_retries, p.initial_backoff, p.max_backoff, p.multiplier) == (3, 60.0, 1800.0, 2.0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff=10, max_backoff=5)


NOW = datetime(2026, 11, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    ("strategy", "local_time", "expected"),
    [
        (ConflictStrategy.CLOUD_WINS, NOW, Decision.TAKE_REMOTE),
        (ConflictStrategy.LOCAL_WINS, NOW, Decision.KEEP_LOCAL),
        (ConflictStrategy.MANUAL, NOW, Decision.MANUAL),
        (ConflictStrategy.NEWEST_WINS, NOW + timedelta(seconds=1), Decision.KEEP_LOCAL),
        (ConflictStrategy.NEWEST_WINS, NOW - timedelta(seconds=1), Decision.TAKE_REMOTE),
        (ConflictStrategy.NEWEST_WINS, NOW, Decision.TAKE_REMOTE),  # a tie goes to HO, deterministically
    ],
)
def test_strategies(strategy: ConflictStrategy, local_time: datetime, expected: Decision) -> None:
    local = LocalSide(Op.UPDATE, {"id": "1"}, local_time)
    remote = RemoteSide(3, False, {"id": "1"}, NOW)
    assert decide(strategy, local, remote) is expected


def test_newest_wins_treats_naive_local_time_as_utc() -> None:
    local = LocalSide(Op.UPDATE, {}, (NOW + timedelta(seconds=5)).replace(tzinfo=None))
    assert decide(ConflictStrategy.NEWEST_WINS, local, RemoteSide(1, False, {}, NOW)) is Decision.KEEP_LOCAL
