"""The edge side of photos: serving (URL helper, ASGI and WSGI over real sockets), store + database as one
(seed 002's compensation, cascades, prefix move), reconciliation, the CLI, the scheduler jobs, migrations."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import posync
from posync.http.photos import PhotoURLs, asgi_app, wsgi_app
from posync.migrations import downgrade, upgrade
from posync.models import posync_tables
from posync.models.photo import PhotoRecord, RemotePhoto
from posync.photos import PhotoSettings, PhotoStoreError, build_photo_sync
from posync.services.photos.ops import delete_photo, delete_prefix, delete_product, move_prefix, write_photo
from posync.stores import DatabaseStore, FileStore, PhotoStore
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]
ROOT = Path(__file__).resolve().parent.parent


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    e = posync.create_engine(db_url)
    upgrade(e)
    yield e
    e.dispose()


@pytest.fixture(params=["fs", "db"])
def store(request: pytest.FixtureRequest, engine: Any, tmp_path: Path) -> PhotoStore:
    return FileStore(tmp_path / "s") if request.param == "fs" else DatabaseStore(engine, staging=tmp_path / "st")


def remote(pid: str, product: str, key: str, data: bytes, **kw: Any) -> RemotePhoto:
    return RemotePhoto(pid, product, key, key.rsplit("/", 1)[-1], len(data), kw.pop("content_type", "image/jpeg"),
                       md5(data), 1, kw.pop("is_primary", True), kw.pop("sort_order", 0), None,
                       kw.pop("image_url", None))


def write(engine: Any, store: PhotoStore, tmp_path: Path, photo: RemotePhoto, data: bytes) -> None:
    path = tmp_path / f"{photo.id}.bin"
    path.write_bytes(data)
    write_photo(engine, store, photo, path)


def test_migrations_produce_the_photo_tables_the_models_describe(db_url: str) -> None:
    e = posync.create_engine(db_url)
    try:
        upgrade(e)
        md = sa.MetaData()
        for table in posync_tables():
            table.to_metadata(md)
        with e.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "version_table": "posync_alembic_version"})
            diff = [d for d in compare_metadata(ctx, md) if "photo" in str(d)]
        assert diff == []
        downgrade(e, "0003")
        assert not [n for n in sa.inspect(e).get_table_names() if n.startswith("posync_photo")]
    finally:
        e.dispose()


# -- serving -------------------------------------------------------------------------------------------------


def test_url_helper_local_then_ho_fallback_then_placeholder(engine: Any, store: PhotoStore, tmp_path: Path) -> None:
    urls = PhotoURLs(engine, "http://edge:8000/photos", placeholder="/static/images/no-image.png")
    data = os.urandom(1000)
    write(engine, store, tmp_path, remote("ph1", "p1", "products/p1/primary.jpg", data), data)
    assert urls.for_product("p1") == f"http://edge:8000/photos/products/p1/primary.jpg?v={md5(data)[:8]}"
    with engine.begin() as conn:  # known, not local yet: HO's own URL (already cache-busted)
        conn.execute(PHOTOS.insert().values(id="ph2", product_id="p2", object_key="products/p2/x.jpg", filename="x",
                                            size=1, content_type="image/jpeg", checksum="0" * 32, version=1,
                                            is_primary=True, sort_order=0, sync_status="pending", attempts=0,
                                            image_url="http://ho:9000/product-images/products/p2/x.jpg?v=00000000"))
    assert urls.for_product("p2") == "http://ho:9000/product-images/products/p2/x.jpg?v=00000000"
    assert urls.for_product("p3") == "/static/images/no-image.png"


def _serve_wsgi(app: Any) -> tuple[str, Any, threading.Thread]:
    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server, thread


@pytest.mark.parametrize("flavour", ["asgi", "wsgi"])
def test_endpoints_serve_with_etag_cache_control_and_304(flavour: str, engine: Any, store: PhotoStore,
                                                         tmp_path: Path) -> None:
    data = os.urandom(300_000)
    write(engine, store, tmp_path, remote("ph1", "p1", "products/p1/primary.webp", data, content_type="image/webp"),
          data)
    if isinstance(store, FileStore):  # a stray file no row owns is never served
        (tmp_path / "s" / "products" / "p1" / "stray.jpg").write_bytes(b"stray")
    if flavour == "asgi":
        handle = serve_in_thread(asgi_app(engine, store))
        url, stop = handle.url, handle.stop
    else:
        url, server, thread = _serve_wsgi(wsgi_app(engine, store))

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            r = http.get(f"/products/p1/primary.webp?v={md5(data)[:8]}")
            assert r.status_code == 200 and r.content == data
            assert r.headers["content-type"] == "image/webp" and r.headers["etag"] == f'"{md5(data)}"'
            assert "immutable" in r.headers["cache-control"]
            plain = http.get("/products/p1/primary.webp")
            assert plain.headers["cache-control"] == "public, max-age=86400"
            again = http.get("/products/p1/primary.webp", headers={"If-None-Match": f'"{md5(data)}"'})
            assert again.status_code == 304 and again.content == b""
            assert http.head("/products/p1/primary.webp").headers["content-length"] == str(len(data))
            assert http.get("/products/p1/stray.jpg").status_code == 404
            assert http.get("/products/p1/none.jpg").status_code == 404
            assert http.post("/products/p1/primary.webp").status_code == 405
    finally:
        stop()


# -- store and database as one (seed 002) ------------------------------------------------------------------


class FailingRows(FileStore):
    """A store whose deletes fail, to prove a delete brings its row back."""

    def delete(self, key: str) -> bool:
        raise PhotoStoreError(self.kind, "delete", key, "disk gone")


def rows(engine: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(PHOTOS))}


def test_a_failed_row_write_removes_the_bytes_it_added(engine: Any, store: PhotoStore, tmp_path: Path) -> None:
    data = b"x" * 5000
    bad = remote("ph1", "p1", "products/p1/a.jpg", data)
    bad = RemotePhoto(**{**{f: getattr(bad, f) for f in bad.__dataclass_fields__}, "product_id": "p" * 100})
    with pytest.raises(posync.PosyncError) if engine.dialect.name == "postgresql" else _row_fails(engine):
        write(engine, store, tmp_path, bad, data)
    assert store.stat("products/p1/a.jpg") is None and rows(engine) == {}


class _row_fails:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TRIGGER no_photos BEFORE INSERT ON posync_photo "
                                 "BEGIN SELECT RAISE(ABORT, 'refused'); END")

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        with self.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER no_photos")
        return kind is not None and issubclass(kind, posync.PosyncError)


def test_a_delete_keeps_the_row_when_the_bytes_cannot_go(engine: Any, tmp_path: Path) -> None:
    failing = FailingRows(tmp_path / "s")
    data = b"y" * 4000
    write(engine, failing, tmp_path, remote("ph1", "p1", "products/p1/a.jpg", data), data)
    with pytest.raises(PhotoStoreError):
        delete_photo(engine, failing, "ph1")
    assert "ph1" in rows(engine) and failing.stat("products/p1/a.jpg") is not None
    ok = FileStore(tmp_path / "s")
    assert delete_photo(engine, ok, "ph1") and rows(engine) == {} and ok.stat("products/p1/a.jpg") is None


def test_cascades_and_the_variant_rename(engine: Any, store: PhotoStore, tmp_path: Path) -> None:
    files = {"products/p1/500ml/hero.jpg": b"hero", "products/p1/500ml/info.jpg": b"info",
             "products/p1/1l/hero.jpg": b"big", "products/p2/primary.jpg": b"p2"}
    for n, (key, data) in enumerate(files.items()):
        write(engine, store, tmp_path, remote(f"ph{n}", key.split("/")[1], key, data), data)
    moved = move_prefix(engine, store, "products/p1/500ml/", "products/p1/1kg/")
    assert moved.objects == 2 and moved.rows == 2
    keys = {r.object_key for r in rows(engine).values()}
    assert keys == {"products/p1/1kg/hero.jpg", "products/p1/1kg/info.jpg", "products/p1/1l/hero.jpg",
                    "products/p2/primary.jpg"}
    assert {o.key for o in store.list()} == keys
    assert b"".join(store.read("products/p1/1kg/info.jpg")) == b"info"
    assert all(r.stored_key == r.object_key for r in rows(engine).values())
    assert delete_prefix(engine, store, "products/p1/1kg") == 2  # a variant deleted
    assert delete_product(engine, store, "p1") == 1  # the product deleted: its last photo goes
    assert {o.key for o in store.list()} == {"products/p2/primary.jpg"} and set(rows(engine)) == {"ph3"}


# -- reconciliation ----------------------------------------------------------------------------------------


def test_reconcile_dry_run_then_fix_and_missing_bytes_come_again_from_ho(db_url: str, tmp_path: Path) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        ids = [photo_ho.put_photo(f"p{n}", os.urandom(3000)) for n in range(4)]
        settings = PhotoSettings(ho_url=server.url, username="posync", password="posync-password",
                                 photo_store=f"fs:{tmp_path / 's'}")
        e = posync.create_engine(db_url)
        upgrade(e)
        with build_photo_sync(settings, engine=e) as sync:
            assert sync.sync().ok
            root = tmp_path / "s"
            keys = {i: photo_ho.photos[i].object_key for i in ids}
            (root / keys[ids[0]]).unlink()  # missing
            (root / keys[ids[1]]).write_bytes(b"bit rot")  # corrupt
            (root / "products" / "p9").mkdir(parents=True)
            (root / "products" / "p9" / "orphan.jpg").write_bytes(b"orphan")  # orphaned
            clean = {"orphaned": 0, "unjudged": 0, "adopt": 0, "fetch": 0, "missing": 0, "corrupt": 0, "synced": 4,
                     "actions": 0}
            check = sync.reconcile()
            assert check.plan.counts() == {**clean, "orphaned": 1, "missing": 1, "corrupt": 1, "synced": 2}
            assert (root / "products/p9/orphan.jpg").exists()  # a dry run changes nothing
            one = sync.reconcile(product_id="p9")
            assert one.plan.orphaned == ["products/p9/orphan.jpg"] and one.plan.synced == []
            fixed = sync.reconcile(fix=True)
            assert fixed.removed == 1 and fixed.requeued == 2
            assert fixed.pass_report is not None and fixed.pass_report.synced == 2  # fetched again from HO
            assert fixed.ok and sync.sync().synced == 0
            after = sync.reconcile()
            assert after.plan.counts() == clean
        e.dispose()


# -- operating it: CLI and scheduler -------------------------------------------------------------------------


def test_cli_sync_reconcile_status_and_the_exit_code(tmp_path: Path) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        for n in range(5):
            photo_ho.put_photo(f"p{n}", os.urandom(4000))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POSYNC_HO_URL": server.url,
               "POSYNC_USERNAME": "posync", "POSYNC_PASSWORD": "posync-password",
               "POSYNC_DB_URL": f"sqlite:///{tmp_path / 'o.db'}", "POSYNC_PHOTO_STORE": f"fs:{tmp_path / 's'}"}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "posync.cli.photos", *args], capture_output=True, text=True,
                                  timeout=120, env=env, cwd=ROOT)

        done = run("--api", "legacy", "sync", "--no-progress", "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout[done.stdout.index("{"):])
        assert summary["synced"] == 5 and summary["ok"] is True
        assert "posync-password" not in done.stdout + done.stderr
        photo_ho.put_photo("p9", os.urandom(4000))
        photo_ho.byte_faults.update(error_rate=1.0)
        failed = run("--api", "legacy", "sync", "--no-progress", "--json")
        assert failed.returncode == 1 and json.loads(failed.stdout)["failed"] == 1
        status = run("--api", "legacy", "status", "--json")
        assert json.loads(status.stdout)["photos"]["failed"] == 1
        check = run("--api", "legacy", "reconcile", "--json")
        assert check.returncode == 0 and json.loads(check.stdout)["synced"] == 5
        bad = run("--api", "nope", "sync")
        assert bad.returncode == 2 and "bad photo settings" in bad.stderr


def test_scheduler_jobs_hourly_incremental_and_nightly_full(engine: Any, tmp_path: Path) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from posync.workers.photo_jobs import FULL_JOB_ID, INCREMENTAL_JOB_ID, photo_jobs, remove_photo_jobs, run_pass

    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        photo_ho.put_photo("p1", os.urandom(2000))
        settings = PhotoSettings(ho_url=server.url, username="posync", password="posync-password",
                                 photo_store=f"fs:{tmp_path / 's'}")
        with build_photo_sync(settings, engine=engine) as sync:
            scheduler = BackgroundScheduler(timezone="UTC")
            assert photo_jobs(scheduler, sync, full_hour=3) == [INCREMENTAL_JOB_ID, FULL_JOB_ID]
            jobs = {j.id: j for j in scheduler.get_jobs()}
            assert str(jobs[INCREMENTAL_JOB_ID].trigger) == "cron[minute='0']"
            assert str(jobs[FULL_JOB_ID].trigger) == "cron[hour='3', minute='0']"
            assert jobs[FULL_JOB_ID].args[1] is True and jobs[INCREMENTAL_JOB_ID].max_instances == 1
            remove_photo_jobs(scheduler)
            assert scheduler.get_jobs() == []
            result = run_pass(sync, True)
            assert result is not None and result["synced"] == 1
            status = sync.status()
            assert status["photos"]["synced"] == 1 and status["last_full_at"] and status["last_pass"]["ok"]
