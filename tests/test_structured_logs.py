"""Structured logs (issue 17, item 4): posync's important log lines carry an event name and fields beside
the human message; ``posync.logs.JsonFormatter`` (which the host installs: posync configures no logging)
writes each as one JSON object per line, and never a secret."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from posync.demo.models import Order
from posync.logs import EVENTS, JsonFormatter, event_fields
from posync.testing import ReferenceHO, Rejection, serve_in_thread
from tests.support import API_KEY, UNREACHABLE, make_outlet

ROOT = Path(__file__).resolve().parents[1]


def _record(msg: str, *args: Any, level: int = logging.WARNING, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("posync.test")
    return logger.makeRecord(logger.name, level, __file__, 1, msg, args, None, extra=extra)


def test_a_record_through_the_formatter_is_one_json_object_with_its_event_and_fields() -> None:
    record = _record("pulling %s failed", "orders", event="pull.resource_failed", resource="orders",
                     retry_in_seconds=30.0, api_key="sekrit-key", when=object())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert list(out)[:5] == ["time", "level", "logger", "event", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["time"])
    assert out["level"] == "WARNING" and out["logger"] == "posync.test"
    assert out["event"] == "pull.resource_failed" and out["message"] == "pulling orders failed"
    assert out["resource"] == "orders" and out["retry_in_seconds"] == 30.0
    assert out["api_key"] == "***" and "sekrit" not in line  # a field named like a secret is masked
    assert isinstance(out["when"], str)  # what JSON cannot hold is text, never an error


def test_a_line_without_an_event_and_one_with_a_traceback() -> None:
    plain = json.loads(JsonFormatter().format(_record("the host's own line", level=logging.INFO)))
    assert plain["event"] is None and plain["message"] == "the host's own line" and plain["level"] == "INFO"
    try:
        raise ValueError("boom")
    except ValueError:
        logger = logging.getLogger("posync.test")
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in out["exception"]


def test_ho_unreachable_carries_its_fields_and_no_secret(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    outlet = make_outlet(sqlite_url, UNREACHABLE)
    try:
        with caplog.at_level(logging.INFO, logger="posync"):
            report = outlet.sync.sync_now()
    finally:
        outlet.close()
    assert report.error
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "ho.unreachable"]
    fields = event_fields(record)
    assert fields["error"] == report.error and fields["retry_in_seconds"] > 0
    line = JsonFormatter().format(record)
    out = json.loads(line)
    assert out["event"] == "ho.unreachable" and out["logger"] == "posync.worker"
    assert "head office unreachable" in out["message"] and out["error"] == report.error
    assert API_KEY not in line


def test_a_dead_letter_names_its_change(db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None},
                     validators={"orders": lambda c: Rejection("NEGATIVE", "below zero")})
    with serve_in_thread(ho.app) as server:
        outlet = make_outlet(db_url, server.url)
        try:
            with outlet.Session() as s:
                s.add(Order(id="o1", table_no="T1", total=-1))
                s.commit()
            with caplog.at_level(logging.INFO, logger="posync"):
                outlet.sync.sync_now()
        finally:
            outlet.close()
    ho.close()
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "push.dead_letter"]
    out = json.loads(JsonFormatter().format(record))
    assert (out["resource"], out["entity_id"], out["op"]) == ("orders", "o1", "create")
    assert "NEGATIVE" in out["reason"] and out["level"] == "WARNING"


def test_every_event_posync_logs_is_in_the_catalogue() -> None:
    """``posync.logs.EVENTS`` (and the README's list) name every event a log call gives."""
    named = set()
    for path in (ROOT / "posync").rglob("*.py"):
        if "testing" in path.parts or "_migrations" in path.parts:
            continue
        named |= set(re.findall(r'extra=\{"event": "([a-z_.]+)"', path.read_text()))
    assert named, "no log call names an event"
    assert named <= set(EVENTS), named - set(EVENTS)
    assert {"ho.unreachable", "ho.reachable", "ho.auth_refused", "ho.rate_limited", "push.dead_letter",
            "conflict.opened", "photos.pass"} <= named


def test_posync_configures_no_logging() -> None:
    """A library is a guest: the host opts in to the formatter; posync adds no handler anywhere."""
    import posync.logs  # noqa: F401

    assert logging.getLogger("posync").handlers == []
    assert all(not isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
