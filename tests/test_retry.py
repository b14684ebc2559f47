"""posync.retry, the one backoff and Retry-After module (issue 16), by its properties.

Every backoff is ``initial * multiplier ** (failures - 1)`` capped at ``maximum``; jittered ones stay in
``[base / 2, base]``. Retry-After is delay-seconds or an HTTP date (RFC 9110); garbage is None.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from posync.retry import OutagePolicy, RetryPolicy, backoff, backoff_base, parse_retry_after
from posync.services.photos.transfers import retry_after
from posync.transfer.engine import TransferPolicy

initials = st.floats(0.0, 1000.0)
spans = st.floats(0.0, 10_000.0)  # maximum - initial
multipliers = st.floats(1.0, 10.0)
failures = st.integers(-3, 5000)  # thousands: the power overflows a float, the cap must still hold


@given(failures, initials, spans, multipliers, st.integers(0, 2**32))
def test_jittered_backoff_is_between_half_the_base_and_the_base(n: int, initial: float, span: float,
                                                                 multiplier: float, seed: int) -> None:
    base = backoff_base(n, initial, initial + span, multiplier)
    delay = backoff(n, initial, initial + span, multiplier, random.Random(seed))
    assert base / 2 <= delay <= base <= initial + span


@given(failures, initials, spans, multipliers)
def test_the_base_never_shrinks_as_failures_grow(n: int, initial: float, span: float, multiplier: float) -> None:
    assert backoff_base(n, initial, initial + span, multiplier) <= backoff_base(n + 1, initial, initial + span,
                                                                                multiplier)


def test_the_base_doubles_from_the_first_failure() -> None:
    assert [backoff_base(n, 1.0, 10.0) for n in range(0, 7)] == [1.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_base(10**6, 30.0, 3600.0) == 3600.0
    assert backoff_base(10**6, 0.0, 3600.0) == 0.0


@given(st.integers(1, 10_000), st.integers(0, 2**32), st.none() | st.floats(0, 1000))
def test_every_policy_stays_under_its_maximum(n: int, seed: int, floor: float | None) -> None:
    rng = random.Random(seed)
    retry = RetryPolicy(max_retries=10_000)
    decision = retry.decide(n, rng)
    assert decision is not None and 0 <= decision.delay <= retry.max_backoff
    outage = OutagePolicy()
    assert outage.delay(n, floor, rng) <= max(outage.maximum, floor or 0.0)
    assert outage.delay(n, floor, rng) >= min(floor or 0.0, outage.max_retry_after)  # capped (issue 17)
    transfer = TransferPolicy()
    assert transfer.backoff_initial / 2 <= transfer.backoff(n) <= transfer.backoff_max
    assert timedelta(seconds=30) <= retry_after(n) <= timedelta(hours=1)


def test_photo_passes_back_off_without_jitter() -> None:
    assert [retry_after(n).total_seconds() for n in (0, 1, 2, 7, 100)] == [30.0, 60.0, 120.0, 3600.0, 3600.0]


@given(st.integers(0, 10**9))
def test_delay_seconds_parse_to_themselves(seconds: int) -> None:
    assert parse_retry_after(str(seconds), time.time()) == float(seconds)
    assert parse_retry_after(f"  {seconds} ", time.time()) == float(seconds)


def test_negative_seconds_are_no_wait() -> None:
    assert parse_retry_after("-5", time.time()) == 0.0


@given(st.integers(-10**6, 10**6))
def test_an_http_date_parses_to_the_seconds_until_it(ahead: int) -> None:
    now = float(int(time.time()))  # HTTP dates are whole seconds
    parsed = parse_retry_after(formatdate(now + ahead, usegmt=True), now)
    assert parsed == max(0.0, float(ahead))


def test_the_other_date_formats_of_rfc_9110() -> None:
    now = 784111777.0 - 60  # a minute before Sun, 06 Nov 1994 08:49:37 GMT
    for value in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"):
        assert parse_retry_after(value, now) == 60.0, value


@given(st.text().filter(lambda s: not s.strip().lstrip("+-").replace(".", "", 1).isdigit()))
def test_garbage_is_none(value: str) -> None:
    parsed = parse_retry_after(value, time.time())
    assert parsed is None or parsed >= 0.0  # random text can spell a date; never a negative wait


def test_absent_or_garbled_is_none() -> None:
    for value in (None, "", "soon", "1e3", "inf", "nan", "²", "١٢", "Mon, 99 Foo 2026 25:61:61 GMT"):
        assert parse_retry_after(value, time.time()) is None, value


@given(st.integers(1, 10_000), st.integers(0, 2**32), st.floats(0, 10**9))
def test_retry_after_is_obeyed_up_to_its_cap(n: int, seed: int, retry_after: float) -> None:
    """Issue 17 item 6: ``Retry-After: 86400`` no longer puts the next try a day away."""
    policy = OutagePolicy(initial=2.0, maximum=300.0, max_retry_after=900.0)
    delay = policy.delay(n, retry_after, random.Random(seed))
    assert delay <= max(300.0, 900.0)
    assert delay >= min(retry_after, 900.0)  # a Retry-After below the cap is still a floor


def test_the_cap_is_a_setting() -> None:
    import posync

    settings = posync.PosyncSettings(api_key="k", max_retry_after_seconds=60)
    assert settings.outage_policy().delay(1, 86_400, random.Random(0)) <= 60
