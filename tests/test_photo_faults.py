"""Fault modes and invariants. Every fault the reference HO injects (5xx, stalls, cut connections, short
bodies with a matching Content-Length, wrong bytes; API errors and truncated JSON) ends, once faults stop,
with the edge equal to HO byte for byte - and along the way nothing corrupt or partial is ever visible.
Hypothesis drives the decisions (pure) and a stateful model of HO edits, faults and syncs."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import posync
from posync.migrations import upgrade
from posync.models.photo import PhotoRecord
from posync.photos import PhotoSettings, build_photo_sync
from posync.services.photos.decide import PageMark, ReconcileAction, decide_reconcile, pass_shifted, plan_deletes
from posync.stores import FileStore
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def ho() -> Iterator[tuple[PhotoHO, str]]:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        yield photo_ho, server.url


def visible_is_sound(store: FileStore, engine: Any, ever: dict[str, set[str]]) -> None:
    """Every object in the store is a complete version HO once had under that key, and every synced row
    points at bytes with its checksum."""
    for obj in store.list():
        assert store.hash(obj.key) in ever.get(obj.key, set()), f"{obj.key}: bytes HO never had"
    with engine.connect() as conn:
        for r in conn.execute(sa.select(PHOTOS).where(PHOTOS.c.sync_status == "synced")):
            assert store.hash(r.stored_key) == r.stored_checksum == r.checksum, r.id


FAULTS = {
    "byte 5xx": ("bytes", {"error_rate": 0.5}),
    "stall": ("bytes", {"stall_rate": 0.4, "stall_seconds": 2.0}),
    "cut": ("bytes", {"cut_rate": 0.5}),
    "short": ("bytes", {"short_rate": 0.5}),
    "corrupt": ("bytes", {"corrupt_rate": 0.5}),
    "drip": ("bytes", {"drip_interval": 0.002}),
    "api 5xx": ("api", {"error_rate": 0.4}),
    "api truncated": ("api", {"truncate_rate": 0.4}),
}


@pytest.mark.parametrize("engine_name", ["curl", "urllib3"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_mode_converges_and_never_shows_bad_bytes(fault: str, engine_name: str, ho: tuple[PhotoHO, str],
                                                             sqlite_url: str, tmp_path: Path) -> None:
    photo_ho, url = ho
    rng = random.Random(fault)
    ever: dict[str, set[str]] = {}
    for n in range(12):
        pid = photo_ho.put_photo(f"p{n % 4}", rng.randbytes(rng.randint(10_000, 300_000)))
        ever.setdefault(photo_ho.photos[pid].object_key, set()).add(photo_ho.photos[pid].checksum)
    where, knobs = FAULTS[fault]
    (photo_ho.byte_faults if where == "bytes" else photo_ho.faults).update(seed=7, **knobs)
    engine = posync.create_engine(sqlite_url)
    upgrade(engine)
    store = FileStore(tmp_path / "s")
    s = PhotoSettings(ho_url=url, username="posync", password="posync-password", photo_engine=engine_name,
                      photo_stall_timeout=1.0, photo_attempts=3, photo_page_size=5)
    with build_photo_sync(s, engine=engine, store=store) as sync:
        injected = 0
        for _ in range(6):
            report = sync.sync(full=True)
            visible_is_sound(store, engine, ever)
            if report.ok:
                break
        injected = sum(photo_ho.byte_faults.injected.values()) + sum(photo_ho.faults.injected.values())
        photo_ho.byte_faults.reset()
        photo_ho.faults.reset()
        final = sync.sync(full=True)
        assert final.ok, final.as_dict()
        assert {o.key: b"".join(store.read(o.key)) for o in store.list()} == {
            k: d for k, (_, d) in photo_ho.expected().items()}
        assert injected > 0 or fault == "drip"
    engine.dispose()


# -- pure decisions ------------------------------------------------------------------------------------------

keys = st.text(alphabet="abc/", min_size=1, max_size=6).filter(lambda k: not k.startswith("/"))
md5s = st.sampled_from(["a" * 32, "b" * 32, "c" * 32])


@given(st.dictionaries(keys, md5s, max_size=8), st.dictionaries(keys, st.none() | md5s, max_size=8), st.booleans(),
       st.booleans())
def test_reconcile_decisions_partition_every_key_and_only_act_when_asked(
        expected: dict[str, str], actual: dict[str, str | None], remove: bool, recreate: bool) -> None:
    plan = decide_reconcile(expected, actual, listed={}, remove_orphaned=remove, recreate_missing=recreate)
    buckets = [set(plan.orphaned), set(plan.missing), set(plan.corrupt), set(plan.synced)]
    assert sum(len(b) for b in buckets) == len(set(expected) | set(actual))
    assert set().union(*buckets) == set(expected) | set(actual)
    assert set(plan.orphaned) == set(actual) - set(expected)
    assert all(actual[k] is not None and actual[k] != expected[k] for k in plan.corrupt)
    removes = {k for a, k in plan.actions if a is ReconcileAction.REMOVE_ORPHANED}
    recreates = {k for a, k in plan.actions if a is ReconcileAction.RECREATE_MISSING}
    assert removes == (set(plan.orphaned) if remove else set())
    assert recreates == (set(plan.missing) | set(plan.corrupt) if recreate else set())
    assert not removes & set(expected)  # never deletes bytes a row holds


@given(st.integers(0, 500), st.integers(0, 500), st.booleans())
def test_deletes_only_after_a_clean_pass_and_under_the_cap(wanted: int, cap: int, clean: bool) -> None:
    d = plan_deletes(wanted, cap, clean_pass=clean)
    assert d.apply == (wanted > 0 and clean and wanted <= cap)


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from([None, 40, 41])), min_size=1, max_size=6),
       st.integers(0, 2), st.booleans())
def test_a_listing_is_trusted_only_when_nothing_moved(pages: list[tuple[int, int | None]], dups: int,
                                                      complete: bool) -> None:
    marks, offset = [], 0
    for count, total in pages:
        marks.append(PageMark(offset, count, total))
        offset += count
    totals = {t for _, t in pages if t is not None}
    shifted = pass_shifted(marks, dups, complete)
    if dups or len(totals) > 1 or (complete and totals and offset != next(iter(totals))):
        assert shifted
    else:
        assert not shifted


# -- the stateful model ----------------------------------------------------------------------------------------


class PhotoReplication(RuleBasedStateMachine):
    """Any interleaving of HO updates, deletes, injected faults and syncs; after every step nothing corrupt or
    partial is visible; once faults stop, a full pass leaves the edge equal to HO byte for byte."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(__import__("tempfile").mkdtemp(prefix="posync-photo-sm-"))
        self.ho = PhotoHO()
        self.server = serve_in_thread(self.ho.app)
        self.ho.base_url = self.server.url
        self.engine = posync.create_engine(f"sqlite:///{self.tmp / 'o.db'}")
        upgrade(self.engine)
        self.store = FileStore(self.tmp / "s")
        s = PhotoSettings(ho_url=self.server.url, username="posync", password="posync-password",
                          photo_stall_timeout=0.5, photo_attempts=2, photo_page_size=4, photo_max_deletes=1000)
        self.sync = build_photo_sync(s, engine=self.engine, store=self.store)
        self.ever: dict[str, set[str]] = {}
        self.n = 0

    @initialize(count=st.integers(1, 5))
    def start(self, count: int) -> None:
        for _ in range(count):
            self.add(b"seed")

    @rule(data=st.binary(min_size=0, max_size=3000), shared=st.booleans())
    def add(self, data: bytes, shared: bool = False) -> None:
        self.n += 1
        if shared and self.ho.photos:  # identical bytes under another key
            data = next(iter(self.ho.photos.values())).data
        pid = self.ho.put_photo(f"p{self.n % 3}", data * 20)
        self._remember(pid)

    @precondition(lambda self: bool(self.ho.photos))
    @rule(pick=st.integers(0, 100), data=st.binary(min_size=1, max_size=3000))
    def update(self, pick: int, data: bytes) -> None:
        pid = sorted(self.ho.photos)[pick % len(self.ho.photos)]
        self.ho.update_photo(pid, data * 10)
        self._remember(pid)

    @precondition(lambda self: bool(self.ho.photos))
    @rule(pick=st.integers(0, 100))
    def delete(self, pick: int) -> None:
        self.ho.delete_photo(sorted(self.ho.photos)[pick % len(self.ho.photos)])

    @rule(kind=st.sampled_from(["error", "cut", "short", "corrupt", "api", "none"]), rate=st.sampled_from([0.3, 1.0]))
    def faults(self, kind: str, rate: float) -> None:
        self.ho.byte_faults.reset()
        self.ho.faults.reset()
        if kind == "api":
            self.ho.faults.update(error_rate=rate)
        elif kind != "none":
            self.ho.byte_faults.update(**{f"{kind}_rate": rate})

    @rule(full=st.booleans())
    def sync_pass(self, full: bool) -> None:
        self.sync.sync(full=full)

    @invariant()
    def nothing_corrupt_or_partial_is_visible(self) -> None:
        visible_is_sound(self.store, self.engine, self.ever)

    def _remember(self, pid: str) -> None:
        p = self.ho.photos[pid]
        self.ever.setdefault(p.object_key, set()).add(p.checksum)

    def teardown(self) -> None:
        try:
            self.ho.byte_faults.reset()
            self.ho.faults.reset()
            final = self.sync.sync(full=True)
            assert final.ok, final.as_dict()
            assert {o.key: b"".join(self.store.read(o.key)) for o in self.store.list()} == {
                k: d for k, (_, d) in self.ho.expected().items()}
        finally:
            self.sync.close()
            self.engine.dispose()
            self.server.stop()
            __import__("shutil").rmtree(self.tmp, ignore_errors=True)


PhotoReplication.TestCase.settings = settings(max_examples=12, stateful_step_count=12, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
test_replication_state_machine = PhotoReplication.TestCase
