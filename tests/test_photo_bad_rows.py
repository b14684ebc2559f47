"""One bad row at HO never stops the rest (issue 15, items 1 and 2).

A photo HO lists with a key that could escape the store, or with a field that does not fit (a negative size, a
checksum that is not 32 hex digits), fails alone: ``failed`` with its id and reason in the report and in status,
its existing bytes kept, every other photo synced, and the checkpoint held at or before it so that once HO
fixes the row the next incremental pass fetches it. Rows an older posync wrote with an unsafe key fail alone
too. Both APIs, the three stores, SQLite and PostgreSQL, the CLI; hypothesis for any mix on a page.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from posync.errors import ProtocolError
from posync.ho.photos.wire import parse_legacy_page, parse_v1_page
from posync.http.photos import PhotoURLs
from posync.models.photo import LocalPhoto, RemotePhoto, is_refusal
from posync.services.photos.decide import plan_listed
from posync.stores import FileStore
from posync.testing import serve_in_thread
from posync.testing.photos import ABSENT, PhotoHO
from tests.test_photo_sync import PHOTOS, Edge, assert_equal_to_ho, make_store, s3_endpoint  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
UNSAFE = ["../../etc/x", "/etc/x.jpg", "products/../../../x"]


def failures(report: Any) -> dict[str | None, str]:
    return {f["photo_id"]: f["reason"] for f in report.failures}


def files_outside(tmp_path: Path) -> list[Path]:
    """Files beside the test's own folder (where ``../../x`` from the store would land)."""
    return [p for p in tmp_path.parent.rglob("*") if p.is_file() and tmp_path not in p.parents]


def status_failures(edge: Edge) -> dict[str, str]:
    return {f["photo_id"]: f["reason"] for f in edge.sync.status()["failures"]}


# -- item 1: an unsafe object_key ----------------------------------------------------------------------------


def unsafe_key_fails_alone(db_url: str, api: str, store_kind: str, tmp_path: Path,
                           request: pytest.FixtureRequest) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        ids = [photo_ho.put_photo(f"p{n}", os.urandom(3_000 + n)) for n in range(20)]
        bad = ids[3:6]
        for pid, key in zip(bad, UNSAFE, strict=True):
            photo_ho.tamper(pid, object_key=key)
        before_outside = files_outside(tmp_path)
        edge = Edge(db_url, server.url, make_store(store_kind, tmp_path, request), api, staging=tmp_path / "staging")
        try:
            for full in (False, False, True):  # the first pass, a later one, and --full: each syncs the rest
                report = edge.sync.sync(full=full)
                assert report.error is None and not report.ok and report.failed == 3, report.as_dict()
                assert failures(report) == dict.fromkeys(bad, "unsafe_key")
                good = {photo_ho.photos[i].object_key: photo_ho.photos[i].data for i in ids if i not in bad}
                assert edge.contents() == good
                rows = edge.rows()
                assert all(rows[i].sync_status == "synced" for i in ids if i not in bad)
                for pid in bad:
                    assert rows[pid].sync_status == "failed" and rows[pid].sync_error.startswith("unsafe_key")
                    assert rows[pid].stored_key is None
                status = edge.sync.status()
                assert status["photos"]["failed"] == 3 and status["photos"]["syncing"] == 0
                assert status_failures(edge) == {pid: rows[pid].sync_error for pid in bad}
            assert files_outside(tmp_path) == before_outside  # nothing written outside the store
            for pid in bad:  # HO fixes the rows in place: the next incremental pass fetches them
                photo_ho.untamper(pid)
            fixed = edge.sync.sync()
            assert fixed.ok and fixed.synced == 3, fixed.as_dict()
            assert_equal_to_ho(edge, photo_ho)
            assert edge.sync.status()["failures"] == []
        finally:
            edge.close()


@pytest.mark.parametrize("api", ["v1", "legacy"])
@pytest.mark.parametrize("store_kind", ["fs", "s3", "db"])
def test_an_unsafe_key_fails_that_photo_alone(api: str, store_kind: str, sqlite_url: str, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    unsafe_key_fails_alone(sqlite_url, api, store_kind, tmp_path, request)


@pytest.mark.postgres
def test_an_unsafe_key_fails_that_photo_alone_on_postgresql(pg_url: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    unsafe_key_fails_alone(pg_url, "v1", "db", tmp_path, request)


def insert_left_row(edge: Edge, pid: str, key: str, status: str) -> None:
    """A row as posync 7b5145a left it: HO's unsafe key listed as it came, its pass aborted mid-way."""
    with edge.engine.begin() as conn:
        conn.execute(PHOTOS.insert().values(id=pid, product_id="old", object_key=key, filename="x", size=10,
                                            content_type="image/jpeg", checksum="0" * 32, version=1,
                                            is_primary=True, sort_order=0, sync_status=status, attempts=0,
                                            image_url=f"http://127.0.0.1:9/product-images/{key}"))


@pytest.mark.parametrize(("db", "store_kind"), [("sqlite", "fs"), ("sqlite", "s3"), ("sqlite", "db"),
                                                 pytest.param("pg", "fs", marks=pytest.mark.postgres)])
def test_rows_an_older_posync_left_with_an_unsafe_key_fail_alone(db: str, store_kind: str, tmp_path: Path,
                                                                  request: pytest.FixtureRequest) -> None:
    db_url = str(request.getfixturevalue(f"{db}_url"))
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        for n in range(5):
            photo_ho.put_photo(f"p{n}", os.urandom(2_000))
        edge = Edge(db_url, server.url, make_store(store_kind, tmp_path, request), "v1", staging=tmp_path / "staging")
        try:
            assert edge.sync.sync().ok
            left = {"old-1": ("../../etc/x", "syncing"), "old-2": ("/etc/x.jpg", "pending"),
                    "old-3": ("products/../../../x", "failed")}
            for pid, (key, status) in left.items():
                insert_left_row(edge, pid, key, status)
            new = photo_ho.put_photo("p9", os.urandom(2_000))
            report = edge.sync.sync()  # incremental: HO does not list the old rows again
            assert report.error is None and report.synced == 1 and failures(report) == dict.fromkeys(left,
                                                                                                     "unsafe_key")
            rows = edge.rows()
            assert rows[new].sync_status == "synced"
            assert all(rows[i].sync_status == "failed" and rows[i].sync_error.startswith("unsafe_key") for i in left)
            again = edge.sync.sync()  # refused once; not handed to the byte pass again, still not synced
            assert (again.failed, again.byte_requests, again.unsynced) == (0, 0, 3), again.as_dict()
            assert edge.sync.reconcile().errors == []  # the reconciliation reads past them
            cleared = edge.sync.sync(full=True)  # HO no longer lists them: deleted after this clean pass
            assert cleared.ok and cleared.deleted == 3, cleared.as_dict()
            assert_equal_to_ho(edge, photo_ho)
        finally:
            edge.close()


# -- item 2: a malformed row -----------------------------------------------------------------------------------


@pytest.mark.parametrize("long_at", [0, 4, 8])
def test_a_key_the_store_refuses_fails_alone_among_photos_with_the_same_bytes(long_at: int, db_url: str,
                                                                              tmp_path: Path) -> None:
    """Nine photos share their bytes (a placeholder image), fetched once; one key is too long for the
    filesystem: that photo fails with its own error, the eight others are synced."""
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        data = os.urandom(2_500)
        long_key = f"products/k/{'a' * 300}.jpg"
        ids = [photo_ho.put_photo(f"k{n}", data, photo_id=f"k{n}",
                                  object_key=long_key if n == long_at else None) for n in range(9)]
        long_id = ids[long_at]
        edge = Edge(db_url, server.url, FileStore(tmp_path / "edge-photos"))
        try:
            for full in (False, True):
                report = edge.sync.sync(full=full)
                assert report.failed == 1 and set(failures(report)) == {long_id}, report.as_dict()
                rows = edge.rows()
                assert all(rows[i].sync_status == "synced" for i in ids if i != long_id)
                assert rows[long_id].sync_status == "failed" and "too long" in rows[long_id].sync_error
                assert edge.contents() == {photo_ho.photos[i].object_key: data for i in ids if i != long_id}
        finally:
            edge.close()


@pytest.mark.parametrize("api", ["v1", "legacy"])
def test_a_malformed_row_fails_alone_and_is_fetched_once_ho_fixes_it(api: str, db_url: str, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        kept = photo_ho.put_photo("p0", os.urandom(5_000))
        kept_key = photo_ho.put_photo("p1", os.urandom(5_000))
        others = [photo_ho.put_photo(f"p{n}", os.urandom(5_000)) for n in range(2, 6)]
        edge = Edge(db_url, server.url, FileStore(tmp_path / "s"), api, photo_page_size=3)
        try:
            assert edge.sync.sync().ok
            good_bytes = edge.contents()
            negative, odd, empty, both = (photo_ho.put_photo(f"q{n}", os.urandom(4_000)) for n in range(4))
            later = photo_ho.put_photo("q9", os.urandom(4_000))
            photo_ho.tamper(kept, size=-1)  # photos the edge holds already
            photo_ho.tamper(kept_key, object_key="../../etc/passwd")
            photo_ho.tamper(negative, size=-5)
            photo_ho.tamper(odd, checksum="not-an-md5")
            photo_ho.tamper(empty, checksum="")
            photo_ho.tamper(both, checksum="", size=-1)
            caplog.set_level(logging.INFO, "posync.photos")
            report = edge.sync.sync()
            assert report.error is None and report.synced == 1 and report.failed == 6, report.as_dict()
            assert failures(report) == {kept: "invalid: size", kept_key: "unsafe_key", negative: "invalid: size",
                                        odd: "invalid: checksum", empty: "invalid: checksum",
                                        both: "invalid: checksum, size"}
            bad = (kept, kept_key, negative, odd, empty, both)
            assert all(pid in caplog.text for pid in bad)  # named in the log
            rows = edge.rows()
            assert rows[later].sync_status == "synced" and all(rows[i].sync_status == "synced" for i in others)
            assert rows[kept].sync_status == "failed" and rows[kept].sync_error.startswith("invalid: size")
            assert edge.contents() == {**good_bytes, photo_ho.photos[later].object_key: photo_ho.photos[later].data}
            for pid in (kept, kept_key):  # their good bytes stay, under their key, and are still served
                assert rows[pid].stored_checksum == photo_ho.photos[pid].checksum
                assert rows[pid].object_key == rows[pid].stored_key == photo_ho.photos[pid].object_key
                assert PhotoURLs(edge.engine).for_photo(pid).startswith(f"/photos/{rows[pid].stored_key}?v=")
            since = edge.sync.status()["updated_since"]
            assert since is not None and since <= photo_ho.photos[negative].updated_at.isoformat()
            assert set(status_failures(edge)) == set(bad)
            if api == "legacy":  # seed 000's status call tells HO which rows it must fix
                assert {r["photo_id"] for r in photo_ho.reports if r["status"] == "failed"} == set(bad)
            gone = others[0]
            photo_ho.delete_photo(gone)  # a refused photo holds back no delete: it failed alone
            again = edge.sync.sync(full=api == "legacy")  # the older API has no deleted_ids: a full pass sees it
            assert again.failed == 6 and again.deleted == 1 and gone not in edge.rows(), again.as_dict()
            for pid in bad:  # fixed in place: updated_at does not move
                photo_ho.untamper(pid)
            fixed = edge.sync.sync()
            assert fixed.ok and fixed.synced == 4 and fixed.fetched == 4, fixed.as_dict()  # the kept need no bytes
            assert_equal_to_ho(edge, photo_ho)
        finally:
            edge.close()


@pytest.mark.parametrize("api", ["v1", "legacy"])
def test_rows_without_a_usable_id_are_counted_and_hold_the_checkpoint(api: str, sqlite_url: str,
                                                                      tmp_path: Path) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        ids = [photo_ho.put_photo(f"p{n}", os.urandom(2_000)) for n in range(6)]
        edge = Edge(sqlite_url, server.url, FileStore(tmp_path / "s"), api)
        try:
            assert edge.sync.sync().ok
            garbage, no_id, int_id, no_time = (photo_ho.put_photo(f"q{n}", os.urandom(2_000)) for n in range(4))
            photo_ho.tamper_raw(garbage, "not a photo")
            photo_ho.tamper(no_id, id=ABSENT)
            photo_ho.tamper(int_id, id=12345)
            photo_ho.tamper(no_time, id=ABSENT, updated_at="yesterday")
            before = edge.sync.status()["updated_since"]
            for full in (False, True):  # a full pass that cannot tell which rows these are removes nothing
                report = edge.sync.sync(full=full)
                assert report.error is None and report.failed == 4 and report.synced == 0, report.as_dict()
                assert [f["photo_id"] for f in report.failures] == [None] * 4
                assert sorted(f["reason"] for f in report.failures) == ["invalid: id", "invalid: id",
                                                                        "invalid: id, updated_at", "invalid: photo"]
                assert set(edge.rows()) == set(ids) and all(r.ho_deleted_at is None for r in edge.rows().values())
                assert edge.sync.status()["updated_since"] == before  # a row without a time: nowhere to move to
            for pid in (garbage, no_id, int_id, no_time):
                photo_ho.untamper(pid)
            fixed = edge.sync.sync()
            assert fixed.ok and fixed.synced == 4, fixed.as_dict()
            assert_equal_to_ho(edge, photo_ho)
        finally:
            edge.close()


def test_a_refused_photo_from_year_one_moves_the_checkpoint_to_the_start_of_time(sqlite_url: str,
                                                                                  tmp_path: Path) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        ids = [photo_ho.put_photo(f"p{n}", os.urandom(2_000)) for n in range(3)]
        photo_ho.tamper(ids[1], size=-1, updated_at="0001-01-01T00:00:00Z")
        edge = Edge(sqlite_url, server.url, FileStore(tmp_path / "s"))
        try:
            report = edge.sync.sync()
            assert report.error is None and failures(report) == {ids[1]: "invalid: size"} and report.synced == 2
            assert edge.sync.status()["updated_since"] == "0001-01-01T00:00:00+00:00"
            photo_ho.untamper(ids[1])
            assert edge.sync.sync().ok
            assert_equal_to_ho(edge, photo_ho)
        finally:
            edge.close()


# -- any mix on a page -------------------------------------------------------------------------------------------

SPOILERS: dict[str, dict[str, Any] | str] = {
    "size": {"size": -1}, "checksum": {"checksum": "xyz"}, "empty checksum": {"checksum": ""},
    "size text": {"size": "big"}, "no product": {"product_id": ABSENT}, "unsafe key": {"object_key": "../up.jpg"},
    "absolute key": {"object_key": "/etc/passwd"}, "no id": {"id": ABSENT}, "int id": {"id": 7},
    "bad time": {"updated_at": "soon"}, "year one": {"size": -1, "updated_at": "0001-01-01T00:00:00Z"},
    "not an object": "raw",
}


@pytest.fixture(scope="module")
def shared_ho() -> Any:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        yield photo_ho, server.url


@settings(max_examples=25, deadline=None)
@given(plan=st.lists(st.sampled_from([None, *SPOILERS]), min_size=1, max_size=12), page=st.integers(1, 5),
       api=st.sampled_from(["v1", "legacy"]))
def test_any_mix_syncs_exactly_the_good_rows_and_reports_exactly_the_bad(
        shared_ho: tuple[PhotoHO, str], plan: list[str | None], page: int, api: str) -> None:
    photo_ho, url = shared_ho
    photo_ho.photos.clear()
    photo_ho.deleted.clear()
    photo_ho.tampered.clear()
    ids = [photo_ho.put_photo(f"p{n}", os.urandom(500 + n)) for n in range(len(plan))]
    bad = {pid: spoil for pid, spoil in zip(ids, plan, strict=True) if spoil is not None}
    for pid, spoil in bad.items():
        how = SPOILERS[spoil]
        if isinstance(how, dict):
            photo_ho.tamper(pid, **how)
        else:
            photo_ho.tamper_raw(pid, how)
    with_id = {pid for pid, spoil in bad.items() if spoil not in ("no id", "int id", "not an object")}
    with tempfile.TemporaryDirectory() as tmp:
        edge = Edge(f"sqlite:///{tmp}/o.db", url, FileStore(Path(tmp) / "s"), api, photo_page_size=page)
        try:
            report = edge.sync.sync()
            assert report.error is None and report.failed == len(bad), report.as_dict()
            assert report.synced == len(ids) - len(bad)
            assert {f["photo_id"] for f in report.failures} - {None} == with_id
            assert sum(f["photo_id"] is None for f in report.failures) == len(bad) - len(with_id)
            rows = edge.rows()
            assert {i for i, r in rows.items() if r.sync_status == "synced"} == set(ids) - set(bad)
            assert {i for i, r in rows.items() if r.sync_status == "failed"} == with_id
            assert all(r.stored_key is None for i, r in rows.items() if i in bad)
            photo_ho.tampered.clear()  # HO fixes every row in place
            fixed = edge.sync.sync()
            assert fixed.ok and fixed.synced == len(bad), fixed.as_dict()
            assert_equal_to_ho(edge, photo_ho)
        finally:
            edge.close()


# -- the wire: the envelope strictly, each photo on its own -------------------------------------------------------


def good_photo(n: int) -> dict[str, Any]:
    return {"id": f"ph{n}", "product_id": "p1", "object_key": f"products/p1/{n}.jpg", "size": 10,
            "checksum": "a" * 32, "updated_at": "2026-01-01T00:00:00Z"}


def test_a_page_that_is_not_a_page_is_one_protocol_error() -> None:
    for body in ([], {"photos": "x"}, {"photos": [good_photo(1)], "has_more": "maybe"}, None):
        with pytest.raises(ProtocolError, match="v1 photo page"):
            parse_v1_page(body)
    with pytest.raises(ProtocolError, match="photo page"):
        parse_legacy_page({"status": "success", "data": {"photos": {}}}, None)
    with pytest.raises(ProtocolError, match="status 'error'"):
        parse_legacy_page({"status": "error", "data": {"photos": []}}, None)


@given(st.lists(st.sampled_from([None, *SPOILERS]), max_size=20))
def test_each_photo_is_parsed_on_its_own(plan: list[str | None]) -> None:
    elements: list[Any] = []
    for n, spoil in enumerate(plan):
        how = SPOILERS[spoil] if spoil is not None else {}
        photo = {k: v for k, v in {**good_photo(n), **how}.items() if v is not ABSENT} if isinstance(how, dict) else how
        elements.append(photo)
    for page in (parse_v1_page({"photos": elements}),
                 parse_legacy_page({"status": "success", "data": {"photos": elements}}, None)):
        assert [p.id for p in page.photos] == [f"ph{n}" for n, s in enumerate(plan) if s is None]
        assert [r.position for r in page.rejected] == [n for n, s in enumerate(plan) if s is not None]
        assert page.count == len(plan)


# -- the decision: a refused row waits for HO, and HO's fix is taken at once ----------------------------------------

md5s = st.sampled_from(["a" * 32, "b" * 32])
refusals = st.sampled_from(["unsafe_key: object key '../x' is not a safe relative path", "invalid: size: too small",
                            "invalid: checksum, size: no"])


@given(md5s, st.sampled_from(["k/1.jpg", "k/2.jpg"]), md5s, st.sampled_from(["k/1.jpg", "k/2.jpg", ""]),
       st.none() | md5s, refusals, st.booleans(), st.booleans())
def test_a_refused_row_listed_right_again_is_taken_at_once(remote_md5: str, remote_key: str, local_md5: str,
                                                           local_key: str, stored: str | None, refusal: str,
                                                           present: bool, tombstoned: bool) -> None:
    remote = RemotePhoto("ph1", "p1", remote_key, "f", 10, "image/jpeg", remote_md5, 1, True, 0, None, None)
    local = LocalPhoto("ph1", "p1", local_key, local_md5, (), local_key if stored else None, stored, "failed",
                       refusal, tombstoned)
    plan = plan_listed(remote, local, present)
    assert plan.write and plan.status != "failed" and plan.reset_attempts and not is_refusal(plan.error)
    assert plan.untombstone == tombstoned


# -- the CLI ---------------------------------------------------------------------------------------------------------


def test_cli_sync_prints_its_report_with_the_refused_photos(tmp_path: Path) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        ids = [photo_ho.put_photo(f"p{n}", os.urandom(3_000)) for n in range(6)]
        photo_ho.tamper(ids[1], object_key="../../etc/x")
        photo_ho.tamper(ids[2], checksum="")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POSYNC_HO_URL": server.url,
               "POSYNC_USERNAME": "posync", "POSYNC_PASSWORD": "posync-password",
               "POSYNC_DB_URL": f"sqlite:///{tmp_path / 'o.db'}", "POSYNC_PHOTO_STORE": f"fs:{tmp_path / 's'}",
               "PYTHONPATH": str(ROOT)}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "posync.cli.photos", *args], capture_output=True, text=True,
                                  timeout=120, env=env, cwd=ROOT)

        for api in ("v1", "legacy"):
            done = run("--api", api, "sync", "--no-progress", "--full", "--json")
            assert done.returncode == 1, done.stderr
            summary = json.loads(done.stdout[done.stdout.index("{"):])
            assert summary["ok"] is False and summary["failed"] == 2
            assert summary["synced"] == (4 if api == "v1" else 0)
            assert {f["photo_id"]: f["reason"] for f in summary["failures"]} == {
                ids[1]: "unsafe_key", ids[2]: "invalid: checksum"}
        status = json.loads(run("status", "--json").stdout)
        assert status["photos"]["failed"] == 2 and status["photos"]["synced"] == 4
        assert {f["photo_id"] for f in status["failures"]} == {ids[1], ids[2]}
        assert not (tmp_path.parent / "etc").exists()

