"""The write gate (posync/db.py): on SQLite, the till's writes go before posync's write transactions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import posync
from posync.db import WriteGate
from posync.testing import SyncHarness

T = sa.Table("till", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))


def _engine(tmp_path: Path) -> sa.Engine:
    engine = posync.create_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    T.metadata.create_all(engine)
    return engine


def _posync_enters(gate: WriteGate, entered: list[float]) -> threading.Thread:
    def run() -> None:
        with gate.posync():
            entered.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_posync_waits_for_a_host_write_past_the_gate_whose_transaction_has_not_begun(tmp_path: Path) -> None:
    """The driver begins the host's transaction only when its first write runs: between the gate's check and
    that moment the connection is "not in a transaction", and posync must not take that for "done"."""
    engine = _engine(tmp_path)
    gate = WriteGate(patience=5.0)
    gate.attach(engine)
    entered: list[float] = []
    threads: list[threading.Thread] = []

    @sa.event.listens_for(engine, "before_cursor_execute")  # after the gate's own listener
    def posync_arrives(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT") and not threads:
            threads.append(_posync_enters(gate, entered))
            time.sleep(0.3)  # the host's statement is about to run

    with engine.connect() as conn:
        conn.execute(T.insert().values(id=1))
        time.sleep(0.2)  # the host's transaction is open and holds SQLite's write lock
        committing = time.monotonic()
        conn.commit()
    threads[0].join(10)
    assert entered and entered[0] >= committing, "posync entered while the host's write transaction was open"
    engine.dispose()


def test_a_host_write_waits_while_posync_holds_the_gate_and_posync_waits_for_an_open_host_write(
        tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    gate = WriteGate(patience=5.0)
    gate.attach(engine)
    wrote: list[float] = []

    def host() -> None:
        with engine.begin() as conn:
            conn.execute(T.insert().values(id=2))
        wrote.append(time.monotonic())

    with gate.posync():
        thread = threading.Thread(target=host)
        thread.start()
        time.sleep(0.2)
        assert not wrote  # the till waits for posync's short transaction
        released = time.monotonic()
    thread.join(10)
    assert wrote and wrote[0] >= released

    entered: list[float] = []
    with engine.connect() as conn:
        conn.execute(T.insert().values(id=3))
        waiting = _posync_enters(gate, entered)
        time.sleep(0.2)
        assert not entered  # posync waits for the till's open transaction
        conn.commit()
    waiting.join(10)
    assert entered
    engine.dispose()


def test_waits_are_bounded_by_patience(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    gate = WriteGate(patience=0.3)
    gate.attach(engine)
    entered: list[float] = []
    with engine.connect() as conn:
        conn.execute(T.insert().values(id=4))
        started = time.monotonic()
        _posync_enters(gate, entered).join(10)  # a host transaction left open: posync goes ahead after patience
        assert entered and 0.25 <= entered[0] - started < 3.0
        conn.rollback()
    engine.dispose()


def test_a_gate_never_attached_costs_nothing() -> None:
    gate = WriteGate()
    started = time.monotonic()
    with gate.posync():
        pass
    assert not gate.host_busy() and time.monotonic() - started < 0.5


def test_a_photo_write_waits_behind_a_host_write_when_posync_wires_the_photos(tmp_path: Path,
                                                                            photo_ho: Any) -> None:
    """Posync(..., photos=...) hands its gate to the photo pass: the pass's first write transaction comes to
    the gate while the till's write transaction is open, and begins only after the till committed."""
    from posync.migrations import upgrade
    from posync.photos import build_photo_sync

    photo_ho.put_photo("p1", b"x" * 2000)
    engine = _engine(tmp_path)
    upgrade(engine)
    settings = posync.PosyncSettings(ho_url=photo_ho.base_url, username="posync", password="posync-password",
                                     photo_store=f"fs:{tmp_path / 'photos'}")
    photos = build_photo_sync(settings, engine=engine)
    pos = posync.Posync(engine, posync.Registry([]), settings, photos=photos)
    events: list[str] = []
    at_gate = threading.Event()
    gate = SyncHarness(pos).gate
    enter = gate.posync

    @contextmanager
    def watched() -> Iterator[None]:
        events.append("photo pass at the gate")
        at_gate.set()
        with enter():
            yield

    @sa.event.listens_for(engine, "after_cursor_execute")
    def photo_writes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement == "BEGIN IMMEDIATE":  # SQLite gave a posync write transaction its lock
            events.append("photo write began")

    gate.posync = watched  # type: ignore[method-assign]
    reports: list[Any] = []
    passing = threading.Thread(target=lambda: reports.append(photos.sync()))
    try:
        with engine.connect() as till:
            till.execute(T.insert().values(id=1))  # the till's write transaction is open
            passing.start()
            assert at_gate.wait(30), "the photo pass wrote without passing Posync's write gate"
            events.append("till committed")
            till.commit()
        passing.join(60)
        assert reports and reports[0].ok
        assert events[:3] == ["photo pass at the gate", "till committed", "photo write began"]
    finally:
        if passing.is_alive():
            passing.join(60)
        pos.close()
        photos.close()
        engine.dispose()
