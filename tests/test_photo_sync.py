"""Photo replication end to end, over real sockets: the reference HO's photo side (both APIs, objects on
its own HTTP or on moto's S3), an outlet on SQLite and PostgreSQL, into each of the three stores."""

from __future__ import annotations

import hashlib
import os
import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine

import posync
from posync.migrations import upgrade
from posync.models.photo import PhotoRecord
from posync.photos import PhotoSettings, PhotoSync, build_photo_sync
from posync.stores import DatabaseStore, FileStore, PhotoStore, S3Store
from posync.stores.base import store_identity
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO, S3Target
from posync.testing.photos.s3 import moto_s3

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


class Edge:
    """An outlet: its database, its store, and a PhotoSync wired by build_photo_sync."""

    def __init__(self, db_url: str, ho_url: str, store: PhotoStore | str, api: str = "v1", **settings: Any) -> None:
        self.engine: Engine = posync.create_engine(db_url)
        upgrade(self.engine)
        staging = settings.pop("staging", None)  # the db store's; the others were built with theirs
        if store == "db":
            store = DatabaseStore(self.engine, staging=staging)
        assert not isinstance(store, str)
        self.store = store
        settings.setdefault("photo_stall_timeout", 2.0)
        self.settings = PhotoSettings(ho_url=ho_url, username="posync", password="posync-password", photo_api=api,
                                      company_id="c1", store_id="s1", **settings)
        self.products = settings.get("products")
        self.sync: PhotoSync = build_photo_sync(self.settings, engine=self.engine, store=store,
                                                products=getattr(self, "_products", None))

    def rows(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {r.id: r for r in conn.execute(sa.select(PHOTOS))}

    def contents(self) -> dict[str, bytes]:
        return {o.key: b"".join(self.store.read(o.key)) for o in self.store.list()}

    def close(self) -> None:
        self.sync.close()
        self.engine.dispose()


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> PhotoStore | str:
    if kind == "fs":
        return FileStore(tmp_path / "edge-photos")
    if kind == "s3":
        return S3Store(request.getfixturevalue("s3_endpoint"), f"edge-{uuid.uuid4().hex[:8]}", access_key="testing",
                       secret_key=SecretStr("testing"), region="us-east-1", staging=tmp_path / "staging")
    return "db"


@pytest.fixture
def ho() -> Iterator[tuple[PhotoHO, str]]:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        yield photo_ho, server.url


def seed(ho: PhotoHO, n: int, rng: random.Random) -> list[str]:
    ids = [ho.put_photo(f"prod-{i % 7}", rng.randbytes(rng.randint(1_000, 120_000)), sort_order=i) for i in range(n)]
    ho.put_photo("prod-dup", ho.photos[ids[0]].data, object_key="products/prod-dup/same-bytes.jpg")
    return ids


def assert_equal_to_ho(edge: Edge, ho: PhotoHO) -> None:
    expected = {k: data for k, (_, data) in ho.expected().items()}
    assert edge.contents() == expected
    rows = edge.rows()
    assert {r.object_key for r in rows.values()} == set(expected)
    assert all(r.sync_status == "synced" and r.stored_checksum == r.checksum for r in rows.values())


@pytest.mark.parametrize("api", ["v1", "legacy"])
@pytest.mark.parametrize("store_kind", ["fs", "s3", "db"])
def test_replicates_into_each_store_and_a_noop_resync_is_one_request(
        api: str, store_kind: str, db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    photo_ho = PhotoHO()
    if store_kind == "s3" and api == "v1":  # HO's objects on an S3 endpoint too (seed 001: HO MinIO)
        photo_ho.s3 = S3Target(request.getfixturevalue("s3_endpoint"), bucket=f"ho-{uuid.uuid4().hex[:8]}")
    rng = random.Random(f"{api}{store_kind}")
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        ids = seed(photo_ho, 25, rng)
        edge = Edge(db_url, server.url, make_store(store_kind, tmp_path, request), api, staging=tmp_path / "staging")
        try:
            first = edge.sync.sync()
            assert first.ok and first.synced == 26 and first.fetched == 25, first.as_dict()  # duplicate bytes once
            assert_equal_to_ho(edge, photo_ho)
            before = photo_ho.requests["total"]
            again = edge.sync.sync()
            assert again.ok and again.synced == 0 and again.byte_requests == 0
            assert photo_ho.requests["total"] - before == 1  # a no-op incremental: one listing request
            photo_ho.update_photo(ids[1], rng.randbytes(50_000))
            photo_ho.update_photo(ids[2], sort_order=99)  # metadata only: no download
            photo_ho.delete_photo(ids[3])
            new = photo_ho.put_photo("prod-new", rng.randbytes(30_000))
            third = edge.sync.sync(full=api == "legacy")  # the older API has no deleted_ids: the full pass sees it
            assert third.ok and third.fetched == 2 and third.deleted == 1, third.as_dict()
            assert_equal_to_ho(edge, photo_ho)
            assert edge.rows()[ids[2]].sort_order == 99 and new in edge.rows()
            if api == "legacy":  # seed 000: per-photo results reported back to HO
                assert {r["photo_id"] for r in photo_ho.reports} >= {ids[1], new}
                assert all(r["status"] == "synced" for r in photo_ho.reports)
        finally:
            edge.close()


def test_an_interrupted_download_resumes_with_range_and_if_range(ho: tuple[PhotoHO, str], sqlite_url: str,
                                                                 tmp_path: Path) -> None:
    photo_ho, url = ho
    data = os.urandom(3 * 1024 * 1024)
    pid = photo_ho.put_photo("p1", data)
    photo_ho.byte_faults.update(cut_rate=1.0)
    edge = Edge(sqlite_url, url, FileStore(tmp_path / "s"), photo_attempts=1)
    try:
        failed = edge.sync.sync()
        assert failed.failed == 1 and failed.failures[0]["reason"] == "short"
        assert not (tmp_path / "s" / photo_ho.photos[pid].object_key).exists()  # nothing half-written visible
        partial = tmp_path / "s" / ".posync-staging" / f"{md5(data)}.part"
        have = partial.stat().st_size
        assert 0 < have < len(data)
        photo_ho.byte_faults.reset()
        done = edge.sync.sync(full=True)
        assert done.ok and done.synced == 1
        assert photo_ho.ranges[-1] == f"bytes={have}-"
        assert (tmp_path / "s" / photo_ho.photos[pid].object_key).read_bytes() == data
        assert not partial.exists()
    finally:
        edge.close()


def test_a_changed_object_is_not_resumed_from_stale_bytes(ho: tuple[PhotoHO, str], sqlite_url: str,
                                                          tmp_path: Path) -> None:
    photo_ho, url = ho
    data = os.urandom(1024 * 1024)
    pid = photo_ho.put_photo("p1", data, object_key="products/p1/a.jpg")
    photo_ho.byte_faults.update(cut_rate=1.0)
    edge = Edge(sqlite_url, url, FileStore(tmp_path / "s"), photo_attempts=1)
    try:
        assert edge.sync.sync().failed == 1
        # the same bytes come back under a new validator (HO re-uploaded them): If-Range fails, 200 starts over
        photo_ho.update_photo(pid, data)
        photo_ho.byte_faults.reset()
        assert edge.sync.sync(full=True).ok
        assert (tmp_path / "s" / "products/p1/a.jpg").read_bytes() == data
    finally:
        edge.close()


def test_corrupt_bytes_never_replace_the_good_copy(ho: tuple[PhotoHO, str], sqlite_url: str, tmp_path: Path) -> None:
    photo_ho, url = ho
    good = os.urandom(100_000)
    pid = photo_ho.put_photo("p1", good, object_key="products/p1/primary.jpg")
    edge = Edge(sqlite_url, url, FileStore(tmp_path / "s"), photo_attempts=2)
    try:
        assert edge.sync.sync().ok
        photo_ho.update_photo(pid, os.urandom(100_000))
        photo_ho.byte_faults.update(corrupt_rate=1.0)
        bad = edge.sync.sync()
        assert bad.failed == 1 and bad.failures[0]["reason"] == "checksum" and not bad.ok
        assert (tmp_path / "s" / "products/p1/primary.jpg").read_bytes() == good
        row = edge.rows()[pid]
        assert row.sync_status == "failed" and "checksum" in row.sync_error and row.stored_checksum == md5(good)
        said = re.search(r"expected MD5 ([0-9a-f]{32}), got ([0-9a-f]{32})", row.sync_error)  # both, in hex
        assert said is not None and said[1] == photo_ho.photos[pid].checksum and said[2] != said[1], row.sync_error
        assert said[0] in bad.failures[0]["detail"]
        assert edge.sync.sync().synced == 0  # backing off: not retried at once by an incremental pass
        photo_ho.byte_faults.reset()
        assert edge.sync.sync(full=True).synced == 1  # the full check retries failed photos at once
        assert (tmp_path / "s" / "products/p1/primary.jpg").read_bytes() == photo_ho.photos[pid].data
    finally:
        edge.close()


def test_identical_bytes_are_fetched_once_and_then_copied_locally(ho: tuple[PhotoHO, str], sqlite_url: str,
                                                                 tmp_path: Path) -> None:
    photo_ho, url = ho
    logo = os.urandom(40_000)
    for n in range(5):
        photo_ho.put_photo(f"p{n}", logo, object_key=f"products/p{n}/logo.jpg")
    edge = Edge(sqlite_url, url, FileStore(tmp_path / "s"))
    try:
        first = edge.sync.sync()
        assert first.ok and first.synced == 5 and first.fetched == 1 and first.byte_requests == 1
        photo_ho.put_photo("p9", logo, object_key="products/p9/logo.jpg")
        later = edge.sync.sync()
        assert later.synced == 1 and later.copied == 1 and later.byte_requests == 0
        assert_equal_to_ho(edge, photo_ho)
    finally:
        edge.close()


def test_deletes_wait_for_a_clean_pass_and_respect_the_cap(ho: tuple[PhotoHO, str], db_url: str,
                                                           tmp_path: Path) -> None:
    photo_ho, url = ho
    ids = [photo_ho.put_photo(f"p{n}", os.urandom(5_000)) for n in range(6)]
    edge = Edge(db_url, url, FileStore(tmp_path / "s"), photo_max_deletes=2, photo_attempts=1)
    try:
        assert edge.sync.sync().ok
        for pid in ids[:3]:
            photo_ho.delete_photo(pid)
        held = edge.sync.sync()
        assert held.deleted == 0 and held.deletes_held == 3 and not held.ok and "cap" in (held.delete_note or "")
        assert len(edge.contents()) == 6  # a misconfigured HO does not wipe the outlet
        photo_ho.update_photo(ids[4], os.urandom(5_000))
        photo_ho.byte_faults.update(error_rate=1.0)
        failing = edge.sync.sync(max_deletes=10)
        assert failing.failed == 1 and failing.deleted == 0  # not after a pass with errors
        photo_ho.byte_faults.reset()
        allowed = edge.sync.sync(full=True, max_deletes=10)
        assert allowed.ok and allowed.deleted == 3
        assert_equal_to_ho(edge, photo_ho)
    finally:
        edge.close()


def test_photos_of_a_product_not_here_yet_wait_and_are_never_dropped(ho: tuple[PhotoHO, str], sqlite_url: str,
                                                                    tmp_path: Path) -> None:
    photo_ho, url = ho
    here: set[str] = {"p1"}
    photo_ho.put_photo("p1", b"one" * 1000)
    waiting = photo_ho.put_photo("p2", b"two" * 1000)
    edge = Edge(sqlite_url, url, FileStore(tmp_path / "s"))
    edge.sync.lister.products = lambda conn, ids: {i for i in ids if i in here}
    try:
        first = edge.sync.sync()
        assert first.ok and first.synced == 1 and first.waiting_product == 1
        row = edge.rows()[waiting]
        assert row.sync_status == "pending" and row.sync_error == "waiting for product"
        assert edge.sync.status()["photos"]["waiting_product"] == 1
        here.add("p2")  # the product arrives (the core's pull); HO's photos did not change
        later = edge.sync.sync()
        assert later.synced == 1 and later.waiting_product == 0
        assert_equal_to_ho(edge, photo_ho)
    finally:
        edge.close()


def test_a_listing_that_shifts_under_its_offsets_is_listed_again(ho: tuple[PhotoHO, str], sqlite_url: str,
                                                                 tmp_path: Path) -> None:
    photo_ho, url = ho
    ids = [photo_ho.put_photo(f"p{n}", os.urandom(2_000)) for n in range(12)]
    edited: list[int] = []

    def edit_once(offset: int) -> None:  # an HO edit while the outlet pages: the first row moves to the end
        if offset == 0 and not edited:
            edited.append(1)
            photo_ho.update_photo(ids[0], os.urandom(2_000))

    photo_ho.on_list = edit_once
    edge = Edge(sqlite_url, url, FileStore(tmp_path / "s"), photo_page_size=5)
    try:
        report = edge.sync.sync()
        assert report.ok and report.relists >= 1
        assert_equal_to_ho(edge, photo_ho)
    finally:
        edge.close()


def test_a_revoked_token_is_renewed_and_object_urls_get_no_credentials(sqlite_url: str, tmp_path: Path) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as api, serve_in_thread(photo_ho.app) as objects:
        photo_ho.base_url = objects.url  # HO MinIO: another origin than the API
        photo_ho.put_photo("p1", os.urandom(10_000))
        for flavour in ("v1", "legacy"):
            edge = Edge(sqlite_url.replace("outlet", flavour), api.url, FileStore(tmp_path / flavour), flavour)
            try:
                assert edge.sync.sync().ok
                photo_ho.auth.revoke_access_tokens()
                photo_ho.put_photo("p2" + flavour, os.urandom(10_000))
                assert edge.sync.sync().ok  # listing and the older API's authenticated download renew the token
            finally:
                edge.close()
        assert photo_ho.authorized_object_gets == 0


def test_settings_never_show_secrets() -> None:
    s = PhotoSettings(username="u", password="pw-sekrit", photo_s3_secret_key="s3-sekrit")
    assert "sekrit" not in repr(s) and "sekrit" not in str(s.model_dump())
    with pytest.raises(posync.ConfigurationError, match="username and password") as info:
        PhotoSettings(username=None, password=None, api_key=None)
    assert "sekrit" not in str(info.value)


@pytest.mark.parametrize("switch", [("fs", "db"), ("db", "fs"), ("fs", "fs-elsewhere")])
def test_a_pass_that_finds_another_store_checks_every_photo_against_it(
        switch: tuple[str, str], ho: tuple[PhotoHO, str], db_url: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The outlet's photo store is switched (fs to db, say): the next incremental pass notices that the rows'
    synced state is another store's and fetches into the new one what it lacks, as a full pass does; once."""
    photo_ho, url = ho
    for n in range(3):
        photo_ho.put_photo(f"r{n}", os.urandom(3_000 + n))

    def store(kind: str) -> PhotoStore | str:
        return "db" if kind == "db" else FileStore(tmp_path / kind)

    edge = Edge(db_url, url, store(switch[0]), staging=tmp_path / "staging")
    try:
        assert edge.sync.sync().ok
    finally:
        edge.close()
    edge = Edge(db_url, url, store(switch[1]), staging=tmp_path / "staging")
    try:
        with caplog.at_level("WARNING", logger="posync.photos"):
            switched = edge.sync.sync()
            assert switched.ok and switched.full and switched.requeued == 3 and switched.fetched == 3, \
                switched.as_dict()
            assert_equal_to_ho(edge, photo_ho)
            again = edge.sync.sync()
            assert again.ok and not again.full and again.requeued == 0 and again.byte_requests == 0
        changed = [r for r in caplog.records if getattr(r, "event", None) == "photos.store_changed"]
        assert len(changed) == 1  # logged once
        assert edge.sync.status()["last_pass"]["store"] == store_identity(edge.store)
    finally:
        edge.close()


def test_a_stores_identity_names_its_kind_and_place_never_a_secret(tmp_path: Path, sqlite_url: str) -> None:
    s3 = S3Store("127.0.0.1:9000", "edge", access_key="ak-sekrit", secret_key=SecretStr("sk-sekrit"))
    assert store_identity(s3) == "s3:127.0.0.1:9000/edge"
    assert store_identity(FileStore(tmp_path / "p")) == f"fs:{(tmp_path / 'p').resolve()}"
    engine = posync.create_engine(sqlite_url)
    try:
        assert store_identity(DatabaseStore(engine)) == "db"
    finally:
        engine.dispose()
