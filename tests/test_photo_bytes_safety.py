"""The byte path at its edges (issue 15, items 4-6): only http(s) is ever fetched and staged files are the
owner's alone; a full disk is named as such, leaves no partial file and is retried by the next pass; an
object whose size is not the manifest's is a ``size_mismatch``, whatever the engine and whether a resume
with ``Range`` was tried. Real passes against the reference HO over loopback, on both byte engines; the
only thing faked is the disk (a small tmpfs, or ENOSPC injected at ``os.write`` where mounting is not
allowed)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hypothesis.strategies as st
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

import posync
from posync.errors import PhotoTransferError
from posync.migrations import upgrade
from posync.models.photo import PhotoRecord
from posync.photos import PhotoSettings, PhotoSync, build_photo_sync
from posync.stores import FileStore
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO
from posync.testing.photos.ho import HOPhoto
from posync.transfer import staged as staged_module
from posync.transfer.engine import FetchJob, FetchOutcome, TransferPolicy, make_engine
from posync.transfer.staged import RESUME_MIN, Staged

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]
ENGINES = ["curl", "urllib3"]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class TweakedHO(PhotoHO):
    """The reference HO with a manifest that can lie: another ``image_url`` or another ``size`` per photo."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: dict[str, str] = {}
        self.sizes: dict[str, int] = {}

    def photo_json(self, p: HOPhoto) -> dict[str, Any]:
        out = super().photo_json(p)
        out["image_url"] = self.urls.get(p.id, out["image_url"])
        out["size"] = self.sizes.get(p.id, out["size"])
        return out


@pytest.fixture
def ho() -> Iterator[TweakedHO]:
    photo_ho = TweakedHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        yield photo_ho


def edge(ho: PhotoHO, db_url: str, root: Path, engine_name: str, **settings: Any) -> tuple[PhotoSync, Any]:
    engine = posync.create_engine(db_url)
    upgrade(engine)
    s = PhotoSettings(ho_url=ho.base_url, username="posync", password="posync-password", photo_engine=engine_name,
                      photo_stall_timeout=2.0, **settings)
    return build_photo_sync(s, engine=engine, store=FileStore(root)), engine


def rows(engine: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(PHOTOS))}


def staged_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ".posync-staging").iterdir() if p.name.endswith((".part", ".json")))


# -- item 4: only http and https ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_file_url_in_the_manifest_fails_that_photo_without_a_request(engine_name: str, ho: TweakedHO,
                                                                      sqlite_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for HO's eyes " * 10)
    good = ho.put_photo("p1", os.urandom(20_000))
    bad = ho.put_photo("p2", secret.read_bytes())  # even with the file's own checksum and size
    ho.urls[bad] = f"file://{secret}"
    sync, engine = edge(ho, sqlite_url, tmp_path / "s", engine_name)
    try:
        report = sync.sync()
        assert report.synced == 1 and report.failed == 1 and report.byte_requests == 1, report.as_dict()
        assert [(f["photo_id"], f["reason"]) for f in report.failures] == [(bad, "unsafe_url")]
        row = rows(engine)[bad]
        assert row.sync_status == "failed" and row.sync_error.startswith("unsafe_url")
        assert str(secret) not in row.sync_error  # the reason names the scheme, not the URL
        assert rows(engine)[good].sync_status == "synced"
        assert staged_files(tmp_path / "s") == []
        assert [o.key for o in sync.store.list()] == [ho.photos[good].object_key]
    finally:
        sync.close()
        engine.dispose()


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("bad_first", [True, False])
def test_a_refused_url_fails_only_its_own_photo_never_a_twin_with_the_same_bytes(
        engine_name: str, bad_first: bool, ho: TweakedHO, sqlite_url: str, tmp_path: Path) -> None:
    """Photos with identical bytes are fetched once; a refused URL among them fails that photo alone,
    whichever comes first (found by a new user: the good twin failed with unsafe_url, pass after pass)."""
    data = os.urandom(8_000)
    ids = [ho.put_photo(f"p{n}", data, photo_id=f"{'ab'[n] if bad_first else 'ba'[n]}-photo") for n in range(2)]
    bad, good = sorted(ids)  # the group's first photo is the lower id
    if not bad_first:
        bad, good = good, bad
    ho.urls[bad] = "file:///etc/hostname"
    sync, engine = edge(ho, sqlite_url, tmp_path / "s", engine_name)
    try:
        report = sync.sync()
        assert [(f["photo_id"], f["reason"]) for f in report.failures] == [(bad, "unsafe_url")], report.as_dict()
        states = {pid: row.sync_status for pid, row in rows(engine).items()}
        assert states == {good: "synced", bad: "failed"}
        assert [o.key for o in sync.store.list()] == [ho.photos[good].object_key]
    finally:
        sync.close()
        engine.dispose()


def _run_one(engine_name: str, url: str, data: bytes, staging: Path) -> tuple[FetchOutcome, FetchJob]:
    byte_engine = make_engine(engine_name, TransferPolicy(workers=1, attempts=3, backoff_initial=0.01))
    staging.mkdir(exist_ok=True)
    job = FetchJob(md5(data), "photo-1", url, False, len(data), Staged(staging, md5(data), len(data)))
    outcomes: list[FetchOutcome] = []
    try:
        byte_engine.run([job], outcomes.append, deadline=time.monotonic() + 30, auth=lambda refresh: {})
    finally:
        byte_engine.close()
    assert len(outcomes) == 1
    return outcomes[0], job


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("scheme", ["file://", "FILE://", "dict://127.0.0.1:1/", "ftp://127.0.0.1:1"])
def test_each_engine_refuses_a_scheme_other_than_http_before_reading_a_byte(engine_name: str, scheme: str,
                                                                           tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"local bytes " * 10)
    url = f"{scheme}{secret}"
    outcome, job = _run_one(engine_name, url, secret.read_bytes(), tmp_path / "staging")
    assert isinstance(outcome.error, PhotoTransferError)
    assert outcome.error.reason == "unsafe_url" and not outcome.error.retryable
    assert job.attempts <= 1  # refused, not retried
    assert list((tmp_path / "staging").iterdir()) == []


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_redirect_to_a_local_file_is_not_followed(engine_name: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"local bytes " * 10)

    async def moved(request: Any) -> RedirectResponse:
        return RedirectResponse(f"file://{secret}", 302)

    with serve_in_thread(Starlette(routes=[Route("/x.jpg", moved)])) as server:
        outcome, _ = _run_one(engine_name, f"{server.url}/x.jpg", secret.read_bytes(), tmp_path / "staging")
    assert outcome.error is not None and outcome.error.reason == "http_302"
    assert list((tmp_path / "staging").iterdir()) == []


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_request_after_an_authenticated_one_carries_none_of_its_headers(engine_name: str, ho: TweakedHO,
                                                                          sqlite_url: str, tmp_path: Path) -> None:
    """v1 photos on HO's own origin get its token; the next photo, on HO MinIO, must not inherit it (libcurl
    keeps a handle's headers when given an empty list)."""
    seen: list[str | None] = []

    async def minio(request: Any) -> Response:
        seen.append(request.headers.get("authorization"))
        photo = next(p for p in ho.photos.values() if p.object_key == request.path_params["key"])
        return Response(photo.data, media_type=photo.content_type)

    with serve_in_thread(Starlette(routes=[Route("/product-images/{key:path}", minio)])) as objects:
        for n in range(20):
            pid = ho.put_photo(f"p{n}", os.urandom(5_000))
            if n % 2:  # the rest stay on HO's own origin: fetched with its credentials
                ho.urls[pid] = f"{objects.url}/product-images/{ho.photos[pid].object_key}"
        sync, engine = edge(ho, sqlite_url, tmp_path / "s", engine_name, photo_workers=1)
        try:
            assert sync.sync().ok
        finally:
            sync.close()
            engine.dispose()
    assert len(seen) == 10 and seen == [None] * 10


@pytest.mark.parametrize("engine_name", ENGINES)
def test_staged_files_are_readable_by_their_owner_only(engine_name: str, ho: TweakedHO, sqlite_url: str,
                                                       tmp_path: Path) -> None:
    ho.put_photo("p1", os.urandom(1024 * 1024))  # resumable: a partial and its sidecar stay after a cut
    ho.byte_faults.update(cut_rate=1.0)
    sync, engine = edge(ho, sqlite_url, tmp_path / "s", engine_name, photo_attempts=1)
    try:
        assert sync.sync().failures[0]["reason"] == "short"
        staging = tmp_path / "s" / ".posync-staging"
        names = staged_files(tmp_path / "s")
        assert len(names) == 2, names
        assert {oct((staging / n).stat().st_mode & 0o777) for n in names} == {oct(0o600)}
    finally:
        sync.close()
        engine.dispose()


@pytest.mark.parametrize("engine_name", ENGINES)
def test_published_photos_are_readable_by_a_web_server_as_another_user(engine_name: str, ho: TweakedHO,
                                                                       sqlite_url: str, tmp_path: Path) -> None:
    """Staged bytes are the owner's alone; once verified and in place they get the store's mode (0644), the
    same for a fetched photo and for one copied from identical bytes."""
    data = os.urandom(5_000)
    ho.put_photo("p1", data)
    ho.put_photo("p2", data, object_key="products/p2/copy.jpg")
    sync, engine = edge(ho, sqlite_url, tmp_path / "s", engine_name)
    try:
        assert sync.sync().synced == 2
        published = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and ".posync" not in str(p)]
        assert len(published) == 2 and {oct(p.stat().st_mode & 0o777) for p in published} == {oct(0o644)}
    finally:
        sync.close()
        engine.dispose()


# -- item 5: a full disk ---------------------------------------------------------------------------------


class _FullDiskOS(SimpleNamespace):
    """``os`` for the staged module where writes fail with ENOSPC once ``budget`` bytes are written (where a
    tmpfs cannot be mounted)."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), self.budget)
        self.budget -= n
        return os.write(fd, memoryview(data)[:n])


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A 5 MB filesystem and a function that makes room on it (a tmpfs, remounted larger)."""
    root = tmp_path / "small"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m,mode=0700", "tmpfs", str(root)],
                             capture_output=True).returncode == 0
    if not mounted:
        fake = _FullDiskOS(5 * 1024 * 1024)
        monkeypatch.setattr(staged_module, "os", fake)
        yield root, lambda: setattr(fake, "budget", 1 << 40)
        return

    def make_room() -> None:
        subprocess.run(["mount", "-o", "remount,size=50m", str(root)], check=True)

    try:
        yield root, make_room
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_full_disk_is_named_leaves_no_partial_and_the_next_pass_retries(
        engine_name: str, ho: TweakedHO, sqlite_url: str, small_disk: tuple[Path, Callable[[], None]]) -> None:
    root, make_room = small_disk
    rng = random.Random(engine_name)
    for n in range(150):
        ho.put_photo(f"p{n % 3}", rng.randbytes(50_000))
    for n in range(3):
        ho.put_photo(f"p{n}", rng.randbytes(700_000))  # resumable ones: their sidecar files go too
    sync, engine = edge(ho, sqlite_url, root / "photos", engine_name)
    try:
        full = sync.sync()
        assert full.synced > 0 and full.failed > 0 and full.synced + full.failed == 153, full.as_dict()
        assert {f["reason"] for f in full.failures} == {"no_space"}
        failed = [r for r in rows(engine).values() if r.sync_status == "failed"]
        assert len(failed) == full.failed
        assert all(r.sync_error.startswith("no_space") and "No space left on device" in r.sync_error
                   for r in failed), {r.sync_error for r in failed}
        assert staged_files(root / "photos") == []  # no partial file holds the space
        make_room()
        again = sync.sync()  # an incremental pass: due at once, not after backoff
        assert again.ok and again.synced == full.failed, again.as_dict()
        assert {o.key: b"".join(sync.store.read(o.key)) for o in sync.store.list()} == {
            k: d for k, (_, d) in ho.expected().items()}
    finally:
        sync.close()
        engine.dispose()


# -- item 6: a size that is not the manifest's -----------------------------------------------------------

SIZES = [  # (manifest, object, bytes a previous run left in staging)
    (1000, 1200, 0), (1000, 800, 0),
    (1_000_000, 1_200_000, 0), (1_000_000, 800_000, 0),
    (1_000_000, 1_200_000, 600_000), (1_000_000, 800_000, 600_000), (1_000_000, 500_000, 600_000),
]


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize(("claimed", "actual", "have"), SIZES)
def test_an_object_of_another_size_than_the_manifest_is_a_size_mismatch(
        engine_name: str, claimed: int, actual: int, have: int, ho: TweakedHO, sqlite_url: str,
        tmp_path: Path) -> None:
    rng = random.Random(f"{claimed}-{actual}-{have}")
    data = rng.randbytes(max(actual, have))
    pid = ho.put_photo("p1", data[:actual])
    ho.sizes[pid] = claimed
    root = tmp_path / "s"
    sync, engine = edge(ho, sqlite_url, root, engine_name, photo_attempts=2)
    try:
        if have:  # a run that was cut left a prefix and the object's validator
            staging = sync.store.staging_dir()
            (staging / f"{md5(data[:actual])}.part").write_bytes(data[:have])
            (staging / f"{md5(data[:actual])}.part.json").write_text(f'{{"validator": "\\"{md5(data[:actual])}\\""}}')
        report = sync.sync()
        assert [f["reason"] for f in report.failures] == ["size_mismatch"], report.as_dict()
        if have:
            assert ho.ranges and ho.ranges[0] == f"bytes={have}-"
        row = rows(engine)[pid]
        assert row.sync_status == "failed" and row.sync_error.startswith("size_mismatch")
        assert f"{actual} bytes" in row.sync_error and str(claimed) in row.sync_error, row.sync_error
        assert staged_files(root) == []  # bytes of the wrong object are never resumed from
        assert list(sync.store.list()) == []
    finally:
        sync.close()
        engine.dispose()


sizes = st.one_of(st.integers(0, 4000), st.integers(RESUME_MIN, RESUME_MIN + 100_000))


@pytest.mark.parametrize("engine_name", ENGINES)
def test_any_size_but_the_manifest_s_is_a_size_mismatch_and_leaves_nothing_staged(engine_name: str) -> None:
    """The invariant under item 6, on each engine against the reference HO: whatever the manifest's size,
    the object's and the prefix an earlier run left, the answer is the photo or ``size_mismatch``."""
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server, tempfile.TemporaryDirectory() as tmp:
        photo_ho.base_url = server.url
        byte_engine = make_engine(engine_name, TransferPolicy(workers=1, attempts=2, backoff_initial=0.001))

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(claimed=sizes, actual=sizes, have=st.integers(0, RESUME_MIN + 120_000), seed=st.integers(0, 9))
        def fetch(claimed: int, actual: int, have: int, seed: int) -> None:
            data = random.Random(seed).randbytes(max(actual, have))
            pid = photo_ho.put_photo("p1", data[:actual], photo_id="p1")
            staging = Path(tmp) / uuid.uuid4().hex
            staging.mkdir()
            checksum = md5(data[:actual])
            if have:  # what a cut left: a prefix of the object and its validator
                (staging / f"{checksum}.part").write_bytes(data[:have])
                (staging / f"{checksum}.part.json").write_text(json.dumps({"validator": f'"{checksum}"'}))
            job = FetchJob(checksum, pid, photo_ho.image_url(photo_ho.photos[pid]), False, claimed,
                           Staged(staging, checksum, claimed))
            outcomes: list[FetchOutcome] = []
            byte_engine.run([job], outcomes.append, deadline=time.monotonic() + 30, auth=lambda refresh: {})
            (outcome,) = outcomes
            if claimed == actual:
                assert outcome.error is None
                assert (staging / f"{checksum}.part").read_bytes() == data[:actual]
            else:
                assert outcome.error is not None and outcome.error.reason == "size_mismatch", outcome.error
                assert f"the manifest says {claimed}" in str(outcome.error)
                assert sorted(p.name for p in staging.iterdir()) == []

        try:
            fetch()
        finally:
            byte_engine.close()
