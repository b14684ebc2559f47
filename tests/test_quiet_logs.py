"""A library is a guest (issue 17, item 4): an idle outlet's posync logs nothing per cycle at INFO, its
scheduler's jobs run on threads named ``posync-job...``, and the host's logging configuration is left as
it was."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from posync.testing import ReferenceHO, serve_in_thread
from tests.support import API_KEY, make_outlet


@pytest.fixture
def ho_url(tmp_path: Path) -> Iterator[str]:
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None})
    with serve_in_thread(ho.app) as server:
        yield server.url
    ho.close()


def test_an_idle_outlet_logs_nothing_per_cycle_and_names_its_threads(
        sqlite_url: str, ho_url: str, caplog: pytest.LogCaptureFixture) -> None:
    outlet = make_outlet(sqlite_url, ho_url, sync_interval_seconds=0.2)
    names: set[str] = set()
    try:
        with caplog.at_level(logging.INFO):
            outlet.sync.start()
            end = time.monotonic() + 2.0  # about ten idle cycles
            while time.monotonic() < end:
                names.update(t.name for t in threading.enumerate())
                time.sleep(0.02)
            ours = [r for r in caplog.records
                    if r.name.startswith(("posync", "apscheduler")) and r.levelno >= logging.INFO]
        assert ours == [], [f"{r.name}: {r.getMessage()}" for r in ours]
        assert any(n.startswith("posync-job") for n in names), sorted(names)
        assert not any(n.startswith("ThreadPoolExecutor") for n in names), sorted(names)
    finally:
        outlet.close()
    # only posync's own logger was given a level; the host's loggers and the root are as they were
    assert logging.getLogger("posync.jobs").level == logging.WARNING
    assert logging.getLogger("apscheduler").level == logging.NOTSET


def test_a_host_that_wants_the_job_lines_gets_them(sqlite_url: str, ho_url: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    jobs = logging.getLogger("posync.jobs")
    before = jobs.level
    jobs.setLevel(logging.INFO)  # the host's choice, made before start(), is kept
    outlet = make_outlet(sqlite_url, ho_url, sync_interval_seconds=0.2)
    try:
        with caplog.at_level(logging.INFO):
            outlet.sync.start()
            time.sleep(1.0)
        assert any(r.name == "posync.jobs" and "Running job" in r.getMessage() for r in caplog.records)
    finally:
        outlet.close()
        jobs.setLevel(before)


def test_a_first_migration_logs_one_line_not_alembics_and_alembic_warnings_still_pass(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import sqlalchemy as sa

    from posync.migrations import HEAD, upgrade

    engine = sa.create_engine(db_url)
    try:
        with caplog.at_level(logging.INFO):
            upgrade(engine)  # a new database: every script runs
            logging.getLogger("alembic.runtime.migration").warning("a warning of Alembic's")
        lines = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
        assert lines == [("posync.migrations", f"posync tables: upgrade none -> {HEAD}"),
                         ("alembic.runtime.migration", "a warning of Alembic's")], lines
        caplog.clear()
        with caplog.at_level(logging.INFO):
            upgrade(engine)  # already at HEAD: nothing to say
        assert not [r for r in caplog.records if r.levelno >= logging.INFO]
        assert not logging.getLogger("alembic.runtime.migration").filters  # the host's loggers as they were
    finally:
        engine.dispose()
