"""What an outlet's log says when HO answers a cycle with an error (issue 17, item 6): a 429 is a rate
limit, not 'head office unreachable'; either is said once per outage, not per attempt."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from posync.errors import HOUnavailableError
from posync.workers.sync_worker import SyncWorker


class _HO:
    def __init__(self, status: int) -> None:
        self.status = status

    def drain(self, *args: Any, **kwargs: Any) -> Any:
        raise HOUnavailableError(f"POST /api/v1/sync/push/: HO answered {self.status}", status=self.status,
                                 retry_after=1.0)

    def pull_all(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the push failed first")


@pytest.mark.parametrize(("status", "said", "not_said"), [(429, "rate limit", "unreachable"),
                                                          (503, "unreachable", "rate limit")])
def test_a_rate_limit_is_told_apart_from_an_outage(caplog: pytest.LogCaptureFixture, status: int, said: str,
                                                   not_said: str) -> None:
    ho = _HO(status)
    worker = SyncWorker(ho, ho)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="posync.worker"):
        for _ in range(3):
            report = worker.run_cycle(force=True)
            assert report.error is not None and str(status) in report.error
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and said in warnings[0] and not_said not in warnings[0]
