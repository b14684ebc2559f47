"""Reconciliation against HO's listing (issue 15, item 3): a file whose key HO still lists is adopted or
fetched again, never removed; only keys HO does not list are orphans; with HO out of reach nothing is
removed. Over real sockets (the shipped PhotoHO), on SQLite and PostgreSQL, into the file and database
stores; the decision itself property-tested."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

import posync
from posync.migrations import upgrade
from posync.models.photo import PhotoRecord
from posync.photos import PhotoSettings, PhotoSync, build_photo_sync
from posync.services.photos.decide import ReconcileAction, decide_reconcile
from posync.stores import DatabaseStore, FileStore, PhotoStore
from posync.testing.photos import PhotoHO

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Outlet:
    def __init__(self, db_url: str, ho_url: str, store_kind: str, tmp_path: Path, **settings: Any) -> None:
        self.engine = posync.create_engine(db_url)
        upgrade(self.engine)
        self.store: PhotoStore = (FileStore(tmp_path / "s") if store_kind == "fs"
                                  else DatabaseStore(self.engine, staging=tmp_path / "st"))
        settings = PhotoSettings(ho_url=ho_url, username="posync", password="posync-password", company_id="c1",
                                 store_id="s1", photo_stall_timeout=2.0, **settings)
        self.sync: PhotoSync = build_photo_sync(settings, engine=self.engine, store=self.store)

    def contents(self) -> dict[str, bytes]:
        return {o.key: b"".join(self.store.read(o.key)) for o in self.store.list()}

    def rows(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {r.id: r for r in conn.execute(sa.select(PHOTOS))}

    def forget(self, ids: list[str]) -> None:
        """The local rows are gone (a restored database, a hand edit); the bytes stay in the store."""
        with self.engine.begin() as conn:
            conn.execute(PHOTOS.delete().where(PHOTOS.c.id.in_(ids)))

    def put(self, key: str, data: bytes) -> None:
        staged = Path(self.store.staging_dir()) / "hand.tmp"
        staged.write_bytes(data)
        self.store.put_file(key, staged, md5=md5(data), content_type="image/jpeg", consume=True)

    def close(self) -> None:
        self.sync.close()
        self.engine.dispose()


def backdate(ho: PhotoHO, photo_id: str) -> None:
    """Older than the checkpoint and its overlap: an incremental pass never lists it again."""
    ho.photos[photo_id].updated_at -= timedelta(hours=1)


def equal_to_ho(outlet: Outlet, ho: PhotoHO) -> None:
    assert outlet.contents() == {k: d for k, (_, d) in ho.expected().items()}
    rows = outlet.rows()
    assert set(rows) == set(ho.photos)
    assert all(r.sync_status == "synced" and r.stored_checksum == r.checksum for r in rows.values())


def test_a_photo_whose_row_is_gone_is_never_left_missing(photo_ho: PhotoHO, sqlite_url: str,
                                                         tmp_path: Path) -> None:
    """The issue's reproduction: an old photo's row is gone, its file stays; after the fix and any later
    incremental pass the outlet still equals HO."""
    old = photo_ho.put_photo("p1", os.urandom(3000))
    photo_ho.put_photo("p2", os.urandom(3000))
    backdate(photo_ho, old)
    outlet = Outlet(sqlite_url, photo_ho.base_url, "fs", tmp_path)
    try:
        assert outlet.sync.sync().ok
        outlet.forget([old])
        outlet.sync.reconcile(fix=True)
        outlet.sync.sync()
        equal_to_ho(outlet, photo_ho)
    finally:
        outlet.close()


@pytest.mark.parametrize("store_kind", ["fs", "db"])
def test_fix_adopts_or_refetches_what_ho_lists_and_removes_only_what_it_does_not(
        photo_ho: PhotoHO, db_url: str, store_kind: str, tmp_path: Path) -> None:
    old = photo_ho.put_photo("p1", os.urandom(3000))
    rotten = photo_ho.put_photo("p2", os.urandom(3000))
    kept = photo_ho.put_photo("p3", os.urandom(3000))
    young = photo_ho.put_photo("p4", os.urandom(3000))
    for pid in (old, rotten, kept):
        backdate(photo_ho, pid)
    outlet = Outlet(db_url, photo_ho.base_url, store_kind, tmp_path)
    try:
        assert outlet.sync.sync().ok
        key = {pid: p.object_key for pid, p in photo_ho.photos.items()}
        outlet.forget([old, rotten, young])
        outlet.put(key[rotten], b"not what HO has")  # a row-less file under a listed key, wrong bytes
        outlet.put("products/p9/orphan.jpg", b"nobody lists me")
        before = outlet.contents()

        dry = outlet.sync.reconcile()
        assert dry.plan.adopt == sorted([key[old], key[young]])
        assert dry.plan.fetch == [key[rotten]]
        assert dry.plan.orphaned == ["products/p9/orphan.jpg"] and dry.plan.synced == [key[kept]]
        assert dry.plan.actions == [] and dry.removed == 0
        assert dry.as_dict()["fix_would"] == {"adopt": 2, "fetch": 1, "remove": 1}
        assert outlet.contents() == before and set(outlet.rows()) == {kept}  # a dry run changes nothing

        downloads = photo_ho.requests["total"]
        fixed = outlet.sync.reconcile(fix=True)
        assert fixed.removed == 1 and fixed.listing_error is None
        assert fixed.pass_report is not None and fixed.pass_report.ok, fixed.as_dict()
        assert fixed.pass_report.adopted == 2 and fixed.pass_report.fetched == 1  # good bytes kept
        assert photo_ho.requests["total"] - downloads <= 3  # the listing twice, one download
        equal_to_ho(outlet, photo_ho)

        again = outlet.sync.sync()  # incremental: nothing left for it, whatever the photos' ages
        assert again.ok and again.synced == 0
        equal_to_ho(outlet, photo_ho)
        clean = outlet.sync.reconcile()
        assert clean.plan.counts()["synced"] == 4 and clean.as_dict()["fix_would"] == {"adopt": 0, "fetch": 0,
                                                                                       "remove": 0}
    finally:
        outlet.close()


def test_fix_without_hos_listing_removes_nothing(photo_ho: PhotoHO, sqlite_url: str, tmp_path: Path) -> None:
    ids = [photo_ho.put_photo(f"p{n}", os.urandom(2000)) for n in range(3)]
    for pid in ids:
        backdate(photo_ho, pid)
    outlet = Outlet(sqlite_url, photo_ho.base_url, "fs", tmp_path)
    try:
        assert outlet.sync.sync().ok
        outlet.forget(ids[:2])
        outlet.put("products/p9/orphan.jpg", b"unknown")
        before = outlet.contents()
        photo_ho.faults.update(error_rate=1.0, error_status=503)  # HO's API out of reach
        fixed = outlet.sync.reconcile(fix=True)
        assert fixed.removed == 0 and fixed.listing_error and not fixed.ok
        assert fixed.plan.orphaned == [] and len(fixed.plan.unjudged) == 3  # kept: nobody can tell
        assert not any(a is ReconcileAction.REMOVE_ORPHANED for a, _ in fixed.plan.actions)
        assert outlet.contents() == before
        photo_ho.faults.update(error_rate=0.0)
        assert outlet.sync.reconcile(fix=True).ok  # HO back: rows rebuilt, the orphan goes
        assert outlet.contents() == {k: d for k, (_, d) in photo_ho.expected().items()}
    finally:
        outlet.close()


def test_a_listing_that_keeps_shifting_judges_nothing(photo_ho: PhotoHO, sqlite_url: str, tmp_path: Path) -> None:
    """Offset pages over a set HO edits meanwhile skip rows: a skipped key must not look like an orphan."""
    ids = [photo_ho.put_photo(f"p{n}", os.urandom(2000)) for n in range(6)]
    outlet = Outlet(sqlite_url, photo_ho.base_url, "fs", tmp_path, photo_page_size=2)
    try:
        assert outlet.sync.sync().ok
        outlet.forget(ids)  # every file now has no row: only HO's listing can vouch for them
        before = outlet.contents()

        def edit(offset: int) -> None:  # each first page: HO edits the oldest photo, which moves to the end
            if offset == 0:
                oldest = min(photo_ho.photos.values(), key=lambda p: p.updated_at)
                photo_ho.update_photo(oldest.id, sort_order=oldest.sort_order + 1)

        photo_ho.on_list = edit
        shifting = outlet.sync.reconcile(fix=True, recreate_missing=False)
        assert shifting.listing_error and "shifting" in shifting.listing_error
        assert shifting.removed == 0 and outlet.contents() == before
        photo_ho.on_list = None
        fixed = outlet.sync.reconcile(fix=True)
        assert fixed.ok and fixed.removed == 0 and fixed.pass_report is not None
        assert fixed.pass_report.adopted == 6
        assert outlet.contents() == before and len(outlet.rows()) == 6
    finally:
        outlet.close()


def test_a_refused_photo_is_listed_and_its_key_kept(photo_ho: PhotoHO, db_url: str, tmp_path: Path) -> None:
    """A photo posync refuses (an unsafe key, a field that does not fit) is still a row HO lists: the listing
    is not taken for one that shifted, orphans are removed, and the refused photo's key (where it is safe to
    name) is never removed."""
    ids = [photo_ho.put_photo(f"p{n}", os.urandom(2000)) for n in range(4)]
    unsafe, invalid = ids[2], ids[3]
    held = photo_ho.photos[invalid].object_key
    photo_ho.tamper(unsafe, object_key="../x.jpg")
    photo_ho.tamper(invalid, checksum="not an md5")
    outlet = Outlet(db_url, photo_ho.base_url, "fs", tmp_path, photo_page_size=3)
    try:
        outlet.sync.sync()
        outlet.put("products/p9/orphan.jpg", b"nobody lists me")
        outlet.put(held, photo_ho.photos[invalid].data)  # bytes under the refused photo's key, no row holds
        dry = outlet.sync.reconcile()
        assert dry.ok and dry.listing_error is None, dry.as_dict()
        assert dry.plan.orphaned == ["products/p9/orphan.jpg"] and dry.plan.unjudged == [held]
        fixed = outlet.sync.reconcile(fix=True)
        assert fixed.listing_error is None and fixed.removed == 1 and not fixed.errors, fixed.as_dict()
        assert set(outlet.contents()) == {photo_ho.photos[i].object_key for i in ids[:2]} | {held}
    finally:
        outlet.close()


def test_any_other_file_in_the_store_is_an_orphan_the_dry_run_names_first(photo_ho: PhotoHO, sqlite_url: str,
                                                                          tmp_path: Path) -> None:
    """The README's rule: the store's root holds only posync's photos. A file of someone else's there is one
    HO does not list: the dry run names it (and changes nothing), the fix removes it."""
    photo_ho.put_photo("p1", os.urandom(2000))
    outlet = Outlet(sqlite_url, photo_ho.base_url, "fs", tmp_path)
    try:
        assert outlet.sync.sync().ok
        outlet.put("other/notes.txt", b"the manager's notes")
        dry = outlet.sync.reconcile()
        assert dry.as_dict()["orphaned_files"] == ["other/notes.txt"] and dry.as_dict()["fix_would"]["remove"] == 1
        assert "other/notes.txt" in outlet.contents()
        assert outlet.sync.reconcile(fix=True).removed == 1
        assert "other/notes.txt" not in outlet.contents()
    finally:
        outlet.close()


def test_reconcile_never_runs_beside_a_pass(photo_ho: PhotoHO, sqlite_url: str, tmp_path: Path) -> None:
    photo_ho.put_photo("p1", os.urandom(2000))
    outlet = Outlet(sqlite_url, photo_ho.base_url, "fs", tmp_path)
    try:
        assert outlet.sync.sync().ok
        outlet.put("products/p9/orphan.jpg", b"orphan")
        held, done = threading.Event(), threading.Event()

        def a_pass_elsewhere() -> None:  # another thread holding the pass lock, as a running pass does
            with outlet.sync._exclusive() as got:
                assert got
                held.set()
                done.wait(30)

        worker = threading.Thread(target=a_pass_elsewhere)
        worker.start()
        try:
            assert held.wait(30)
            busy = outlet.sync.reconcile(fix=True)
            assert busy.busy and not busy.ok and busy.removed == 0
        finally:
            done.set()
            worker.join(30)
        assert outlet.sync.reconcile(fix=True).removed == 1
    finally:
        outlet.close()


# -- the decision ----------------------------------------------------------------------------------------

keys = st.text(alphabet="abc/", min_size=1, max_size=5).filter(lambda k: not k.startswith("/"))
md5s = st.sampled_from(["a" * 32, "b" * 32, "c" * 32])


@given(st.dictionaries(keys, md5s, max_size=8), st.dictionaries(keys, st.none() | md5s, max_size=8),
       st.none() | st.dictionaries(keys, md5s, max_size=8), st.booleans(), st.booleans(), st.sets(keys, max_size=4))
def test_nothing_ho_lists_is_ever_removed(expected: dict[str, str], actual: dict[str, str | None],
                                          listed: dict[str, str] | None, remove: bool, recreate: bool,
                                          held: set[str]) -> None:
    plan = decide_reconcile(expected, actual, listed=listed, remove_orphaned=remove, recreate_missing=recreate,
                            held=held)
    removes = {k for a, k in plan.actions if a is ReconcileAction.REMOVE_ORPHANED}
    assert not removes & set(listed or ())  # nothing HO lists is ever removed
    assert not removes & held  # nor a refused photo's key
    assert not removes & set(expected)  # nor bytes a row holds
    if listed is None:
        assert not removes and not plan.orphaned  # HO's listing unknown: no key is judged an orphan
    buckets = [plan.orphaned, plan.unjudged, plan.adopt, plan.fetch, plan.missing, plan.corrupt, plan.synced]
    everything = set(expected) | set(actual) | set(listed or ())
    assert sorted(k for b in buckets for k in b) == sorted(everything)  # each key in exactly one bucket
    assert set(plan.orphaned) == ((set(actual) - set(expected) - set(listed) - held) if listed is not None
                                  else set())
    assert removes == (set(plan.orphaned) if remove else set())
    for key in plan.adopt:  # HO lists it, the store has it and nothing says its bytes differ
        assert listed is not None and key in actual and actual[key] in (None, listed[key])
    recreates = {k for a, k in plan.actions if a is ReconcileAction.RECREATE_MISSING}
    assert recreates == (set(plan.missing) | set(plan.corrupt) if recreate else set())
