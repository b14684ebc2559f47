"""Seed 000's own shape (issue 15 item 10): the verified image in the host's ``product_photo.image_binary``
(BYTEA on PostgreSQL, BLOB on SQLite) with the seed's metadata columns, in one transaction, never captured
as an outlet edit. The PhotoStore contract suite (tests/test_photo_stores.py) runs against this store too."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Field

import posync
from posync import ConflictStrategy, Direction, Registry, Tracked, TrackedEntity
from posync.capture import install, suppressed
from posync.errors import PhotoConfigError, PhotoStoreError
from posync.migrations import upgrade
from posync.models.photo import PhotoBlob, PhotoChunk, PhotoRecord
from posync.photos import PhotoSettings, build_photo_sync
from posync.stores import HostColumn, HostColumnStore, PhotoStore, open_store
from posync.stores.host import parse_host_column
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO
from tests.test_photo_stores import SPEC, host_row, host_store_for, host_table, listed, pos_rows

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = posync.create_engine(db_url)
    upgrade(e)
    yield e
    e.dispose()


def put(store: PhotoStore, key: str, data: bytes, **kw: Any) -> Path:
    path = store.staging_dir() / f"{uuid.uuid4().hex}.part"
    path.write_bytes(data)
    store.put_file(key, path, md5=md5(data), content_type="image/jpeg", **kw)
    return path


# -- a pass into the host's column ------------------------------------------------------------------------------


def test_a_pass_writes_each_photo_into_the_hosts_own_column(engine: Engine, tmp_path: Path) -> None:
    ho = PhotoHO()
    with serve_in_thread(ho.app) as server:
        ho.base_url = server.url
        photos = {ho.put_photo(f"prod-{i}", os.urandom(1000 + 5000 * i)): i for i in range(4)}
        photos[ho.put_photo("prod-empty", b"")] = 9
        host_table(engine)
        pos_rows(engine, photos)
        settings = PhotoSettings(ho_url=server.url, username="posync", password="posync-password",
                                 photo_store=SPEC, photo_staging_dir=str(tmp_path / "staging"))
        with build_photo_sync(settings, engine=engine) as sync:
            assert sync.store.kind == "db-column"
            report = sync.sync()
            assert report.ok and report.synced == 5, report.as_dict()
            for photo_id in photos:
                row = host_row(engine, photo_id)
                assert bytes(row.image_binary) == ho.photos[photo_id].data
                assert (row.checksum, row.file_size) == (md5(ho.photos[photo_id].data), len(ho.photos[photo_id].data))
                assert (row.sync_status, row.sync_error) == ("synced", None) and row.last_sync_at is not None
            with engine.connect() as conn:  # nothing in posync's own chunk tables
                for model in (PhotoBlob, PhotoChunk):
                    assert conn.execute(sa.select(sa.func.count()).select_from(model.__table__)).scalar() == 0
            again = sync.sync()
            assert again.ok and again.synced == 0 and again.byte_requests == 0
            check = sync.reconcile()
            assert check.plan.counts() == {"orphaned": 0, "missing": 0, "corrupt": 0, "synced": 5, "actions": 0,
                                           "adopt": 0, "fetch": 0, "unjudged": 0}


def test_a_photo_ho_deleted_leaves_the_hosts_column_empty(engine: Engine, tmp_path: Path) -> None:
    """HO's delete reaches the host's column: the image goes, the host's row stays."""
    ho = PhotoHO()
    with serve_in_thread(ho.app) as server:
        ho.base_url = server.url
        kept, gone = ho.put_photo("prod-1", os.urandom(3000)), ho.put_photo("prod-2", os.urandom(4000))
        host_table(engine)
        pos_rows(engine, [kept, gone])
        settings = PhotoSettings(ho_url=server.url, username="posync", password="posync-password",
                                 photo_store=SPEC, photo_staging_dir=str(tmp_path / "staging"))
        with build_photo_sync(settings, engine=engine) as sync:
            assert sync.sync().synced == 2
            ho.delete_photo(gone)
            report = sync.sync(full=True)
            assert report.ok and report.deleted == 1, report.as_dict()
        assert host_row(engine, gone).image_binary is None
        assert bytes(host_row(engine, kept).image_binary) == ho.photos[kept].data


def test_a_photo_without_its_host_row_waits_and_is_not_fetched_again(engine: Engine, tmp_path: Path) -> None:
    """The POS's catalogue makes the host's row; until then the photo fails with no_host_row and its verified
    bytes wait in staging, so the retry once the row exists needs no download."""
    ho = PhotoHO()
    with serve_in_thread(ho.app) as server:
        ho.base_url = server.url
        here, later = ho.put_photo("prod-1", os.urandom(3000)), ho.put_photo("prod-2", os.urandom(4000))
        host_table(engine)
        pos_rows(engine, [here])
        settings = PhotoSettings(ho_url=server.url, username="posync", password="posync-password",
                                 photo_store=SPEC, photo_staging_dir=str(tmp_path / "staging"))
        with build_photo_sync(settings, engine=engine) as sync:
            first = sync.sync()
            assert (first.synced, first.failed) == (1, 1)
            assert [(f["photo_id"], f["reason"]) for f in first.failures] == [(later, "no_host_row")]
            assert "no_host_row" in first.failures[0]["detail"]
            with engine.connect() as conn:
                row = conn.execute(sa.select(PHOTOS.c.sync_status, PHOTOS.c.sync_error)
                                   .where(PHOTOS.c.id == later)).one()
            assert row.sync_status == "failed" and "no_host_row" in row.sync_error and later in row.sync_error
            assert bytes(host_row(engine, here).image_binary) == ho.photos[here].data
            pos_rows(engine, [later])
            second = sync.sync(full=True)  # the nightly pass retries at once
            assert second.ok and second.synced == 1 and second.byte_requests == 0, second.as_dict()
            assert bytes(host_row(engine, later).image_binary) == ho.photos[later].data


# -- the store's own rules ---------------------------------------------------------------------------------------


def test_an_image_above_the_cap_is_refused_and_nothing_is_written(engine: Engine, tmp_path: Path) -> None:
    host_table(engine)
    photo_id = str(uuid.uuid4())
    listed(engine, {photo_id: "products/p/big.jpg"})
    pos_rows(engine, [photo_id])
    store = open_store(SPEC + ",max_mb=1", engine=engine, staging=tmp_path)
    with pytest.raises(PhotoStoreError, match="too_large"):
        put(store, "products/p/big.jpg", os.urandom(1024 * 1024 + 1), consume=True)
    assert host_row(engine, photo_id).image_binary is None
    assert [p.stat().st_size for p in tmp_path.glob("*.part")] == [1024 * 1024 + 1]  # the caller keeps its file
    path = put(store, "products/p/big.jpg", b"x" * 1024 * 1024)  # exactly the cap
    assert host_row(engine, photo_id).file_size == 1024 * 1024 and path.exists()


def test_delete_clears_the_column_and_keeps_the_hosts_row(engine: Engine, tmp_path: Path) -> None:
    store = host_store_for(engine, ["products/p/a.jpg"], tmp_path)
    put(store, "products/p/a.jpg", b"image")
    assert store.delete("products/p/a.jpg") is True and store.delete("products/p/a.jpg") is False
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT image_binary, sync_status, checksum, file_size FROM product_photo")).all()
    assert [tuple(r) for r in rows] == [(None, "pending", None, None)]


def test_a_key_no_listed_photo_has_is_refused(engine: Engine, tmp_path: Path) -> None:
    store = host_store_for(engine, ["products/p/a.jpg"], tmp_path)
    with pytest.raises(PhotoStoreError, match="no_photo_row"):
        put(store, "products/p/unknown.jpg", b"x")
    assert store.stat("products/p/unknown.jpg") is None


def test_a_bare_table_with_an_integer_key_takes_only_the_image(tmp_path: Path, sqlite_url: str) -> None:
    """Metadata columns are written only where they exist; an integer key takes HO's numeric ids."""
    engine = posync.create_engine(sqlite_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE pos_image (photo_no INTEGER PRIMARY KEY, label TEXT, img BLOB)")
        conn.exec_driver_sql("INSERT INTO pos_image (photo_no, label) VALUES (42, 'kept')")
    listed(engine, {"42": "products/p/42.jpg", "not-a-number": "products/p/x.jpg"})
    store = open_store("db:table=pos_image,key=photo_no,column=img", engine=engine, staging=tmp_path)
    put(store, "products/p/42.jpg", b"forty-two")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT photo_no, label, img FROM pos_image").all() == [(42, "kept", b"forty-two")]
    assert store.hash("products/p/42.jpg") == md5(b"forty-two")
    with pytest.raises(PhotoStoreError, match="no_host_row"):
        put(store, "products/p/x.jpg", b"x")
    engine.dispose()


@pytest.mark.parametrize("spec, message", [
    ("db:table=nope", "does not exist"),
    ("db:table=product_photo,key=photo_id", "no column .photo_id. \\(its key=\\)"),
    ("db:table=product_photo,column=image", "no column .image. \\(its column=\\)"),
])
def test_a_table_that_does_not_fit_is_a_config_error_before_any_bytes(
        engine: Engine, tmp_path: Path, spec: str, message: str) -> None:
    host_table(engine)
    store = open_store(spec, engine=engine, staging=tmp_path)
    with pytest.raises(PhotoConfigError, match=message):
        store.stat_many(["products/p/a.jpg"])
    with pytest.raises(PhotoConfigError, match=message):
        put(store, "products/p/a.jpg", b"x")


@pytest.mark.postgres
def test_a_text_column_is_not_an_image_column(pg_url: str, tmp_path: Path) -> None:
    engine = posync.create_engine(pg_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE product_photo (id UUID PRIMARY KEY, image_binary TEXT)")
    with pytest.raises(PhotoConfigError, match="not a binary column"):
        open_store(SPEC, engine=engine, staging=tmp_path).stat("products/p/a.jpg")
    engine.dispose()


@pytest.mark.parametrize("options", [
    "", "key=id", "table=product_photo;DROP TABLE x", 'table=a"b', "table=public.product_photo", "table=1abc",
    "table=product_photo,colour=red", "table=a,table=b", "table=a,max_mb=ten", "table=a,max_mb=0",
    "table=a,key=img,column=img", "table=a,key=", "table=" + "x" * 64,
])
def test_spec_options_are_refused_unless_plain(options: str) -> None:
    with pytest.raises(PhotoConfigError):
        parse_host_column(options)


@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=30))
def test_only_plain_identifiers_ever_reach_sql(table: str, key: str, column: str) -> None:
    try:
        target = parse_host_column(f"table={table},key={key},column={column}")
    except PhotoConfigError:
        return
    for name in (target.table, target.key, target.column):
        assert name.isascii() and (name[0].isalpha() or name[0] == "_") and name.replace("_", "").isalnum()


def test_open_store_takes_the_host_column_spec(sqlite_url: str) -> None:
    engine = posync.create_engine(sqlite_url)
    store = open_store("db:table=product_photo , key = photo_id,column=img,max_mb=4", engine=engine)
    assert isinstance(store, HostColumnStore)
    assert store.target == HostColumn("product_photo", "photo_id", "img", 4 * 1024 * 1024)
    assert "img" in repr(store) and store.kind == "db-column"
    with pytest.raises(PhotoConfigError):
        open_store(SPEC)  # no engine
    engine.dispose()


# -- a table posync tracks -----------------------------------------------------------------------------------------


class TrackedPhoto(Tracked, table=True):
    __tablename__ = "test_tracked_product_photo"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    caption: str = Field(default="", max_length=40)
    checksum: str | None = Field(default=None, max_length=64)
    image_binary: bytes | None = None
    last_sync_at: datetime | None = None


def test_a_tracked_host_table_is_written_with_capture_suppressed(engine: Engine, tmp_path: Path) -> None:
    """posync's write is not an outlet edit: no outbox item, and the row's own sync state stays as it was."""
    TrackedPhoto.__table__.create(engine)  # type: ignore[attr-defined]
    table = TrackedPhoto.__table__  # type: ignore[attr-defined]
    install(engine, Registry([TrackedEntity(TrackedPhoto, "product_photos", Direction.BOTH,
                                            ConflictStrategy.CLOUD_WINS)]))
    photo_id = uuid.uuid4()
    with engine.begin() as conn, suppressed(conn):  # as HO's pull leaves it: synced at version 3
        conn.execute(table.insert().values(id=photo_id, caption="front", cloud_version=3, sync_status="synced"))
    listed(engine, {str(photo_id): "products/p/front.jpg"})
    store = open_store(f"db:table={table.name},key=id,column=image_binary", engine=engine, staging=tmp_path)

    def outbox() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM posync_outbox").scalar_one())

    put(store, "products/p/front.jpg", b"front image")
    store.delete("products/p/front.jpg")
    put(store, "products/p/front.jpg", b"front image, again")
    assert outbox() == 0
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == photo_id)).one()
    assert row.image_binary == b"front image, again" and row.checksum == md5(b"front image, again")
    assert (row.sync_status, row.cloud_version, row.version) == ("synced", 3, 1) and row.last_sync_at is not None
    with engine.begin() as conn:  # the triggers are live: the host's own edit is captured
        conn.execute(table.update().where(table.c.id == photo_id).values(caption="back"))
    assert outbox() == 1
