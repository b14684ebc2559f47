"""One contract suite for the PhotoStore interface, run against every store: the filesystem, S3 (moto's
ThreadedMotoServer over real HTTP, through the minio client), the outlet database's chunked tables and the
host's own photo column (each on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine

import posync
from posync.errors import PhotoConfigError, PhotoStoreError
from posync.migrations import upgrade
from posync.models.photo import PhotoRecord
from posync.stores import (
    DatabaseStore,
    FileStore,
    HostColumnStore,
    PhotoStore,
    S3Store,
    etag_md5,
    open_store,
)
from posync.testing.photos.s3 import moto_s3

MiB = 1024 * 1024
PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]
SPEC = "db:table=product_photo,key=id,column=image_binary"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


# every key the contract tests write: the host-column store finds its rows through listed photos
CONTRACT_KEYS = ["products/p1/primary.jpg", "products/p1/other.jpg", "products/p1/a.jpg", "products/p1/b.jpg",
                 "products/p1/500ml/hero.jpg", "products/p1/500ml/info.jpg", "products/p2/primary.jpg",
                 "products/p1/1kg/hero.jpg", "products/p3/empty.jpg", "products/big/photo.jpg"]


@pytest.fixture(params=["fs", "s3", "db-sqlite", pytest.param("db-postgres", marks=pytest.mark.postgres),
                        "column-sqlite", pytest.param("column-postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PhotoStore]:
    kind = request.param
    if kind == "fs":
        yield FileStore(tmp_path / "photos")
        return
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        s3 = S3Store(endpoint, f"b-{uuid.uuid4().hex[:10]}", access_key="testing", secret_key=SecretStr("testing"),
                     region="us-east-1", staging=tmp_path / "staging", part_size=5 * 1024 * 1024)
        yield s3
        s3.close()
        return
    url = f"sqlite:///{tmp_path / 'o.db'}" if kind.endswith("sqlite") else request.getfixturevalue("pg_url")
    engine = posync.create_engine(url)
    try:
        upgrade(engine)
        if kind.startswith("column"):
            yield host_store_for(engine, CONTRACT_KEYS, tmp_path / "staging")
        else:
            yield DatabaseStore(engine, staging=tmp_path / "staging", chunk_size=64 * 1024)
    finally:
        engine.dispose()


# -- the host's side: seed 000's edge table, rows the POS's catalogue made -------------------------------------


def host_table(engine: Engine, name: str = "product_photo") -> None:
    """Seed 000's edge ``product_photo``: HO's fields plus image_binary, last_sync_at, sync_status, sync_error."""
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"""CREATE TABLE {name} (
            id {'UUID' if pg else 'VARCHAR(36)'} PRIMARY KEY, product_id VARCHAR(64) NOT NULL,
            object_key VARCHAR(500), size INTEGER, checksum VARCHAR(64), file_size INTEGER,
            image_binary {'BYTEA' if pg else 'BLOB'}, last_sync_at TIMESTAMP WITH TIME ZONE,
            sync_status VARCHAR(20) DEFAULT 'pending', sync_error TEXT)""")


def pos_rows(engine: Engine, ids: Iterable[str], table: str = "product_photo") -> None:
    """The POS's catalogue rows (no image yet)."""
    with engine.begin() as conn:
        for photo_id in ids:
            conn.execute(sa.text(f"INSERT INTO {table} (id, product_id, sync_status, sync_error) "
                                 "VALUES (:id, 'p', 'failed', 'an old error')"), {"id": photo_id})


def host_row(engine: Engine, photo_id: str, table: str = "product_photo") -> Any:
    with engine.connect() as conn:  # as a seed 000 POS reads it
        return conn.execute(sa.text(f"SELECT image_binary, checksum, file_size, sync_status, last_sync_at, "
                                    f"sync_error FROM {table} WHERE id = :id"), {"id": photo_id}).one()


def listed(engine: Engine, keys: dict[str, str]) -> None:
    """posync_photo rows as a listing leaves them: photo id -> object key."""
    with engine.begin() as conn:
        for photo_id, key in keys.items():
            conn.execute(PHOTOS.insert().values(id=photo_id, product_id="p", object_key=key, checksum="0" * 32,
                                               size=0))


def host_store_for(engine: Engine, keys: Sequence[str], staging: Path) -> HostColumnStore:
    """The contract suite's store: a listed photo and its host row behind each key it uses."""
    host_table(engine)
    ids = {str(uuid.uuid4()): key for key in keys}
    listed(engine, ids)
    pos_rows(engine, ids)
    store = open_store(SPEC, engine=engine, staging=staging)
    assert isinstance(store, HostColumnStore)
    return store


def staged(store: PhotoStore, data: bytes) -> Path:
    path = store.staging_dir() / f"{uuid.uuid4().hex}.part"
    path.write_bytes(data)
    return path


def put(store: PhotoStore, key: str, data: bytes) -> None:
    store.put_file(key, staged(store, data), md5=md5(data), content_type="image/jpeg", consume=True)


def test_put_read_stat_hash_roundtrip(store: PhotoStore) -> None:
    data = os.urandom(200_000)
    put(store, "products/p1/primary.jpg", data)
    assert b"".join(store.read("products/p1/primary.jpg")) == data
    stat = store.stat("products/p1/primary.jpg")
    assert stat is not None and stat.size == len(data) and stat.md5 in (None, md5(data))
    assert store.hash("products/p1/primary.jpg") == md5(data)
    assert store.stat("products/p1/other.jpg") is None and store.hash("products/p1/other.jpg") is None


def test_replace_is_whole_and_consume_takes_the_file(store: PhotoStore) -> None:
    put(store, "products/p1/a.jpg", b"old" * 1000)
    new = os.urandom(70_000)
    path = staged(store, new)
    store.put_file("products/p1/a.jpg", path, md5=md5(new), content_type="image/webp", consume=True)
    assert not path.exists()
    assert b"".join(store.read("products/p1/a.jpg")) == new
    kept = staged(store, b"x" * 10)
    store.put_file("products/p1/b.jpg", kept, md5=md5(b"x" * 10), content_type="image/jpeg")
    assert kept.exists()  # without consume the caller's file stays


def test_copy_delete_and_list_by_prefix(store: PhotoStore) -> None:
    put(store, "products/p1/500ml/hero.jpg", b"hero")
    put(store, "products/p1/500ml/info.jpg", b"info")
    put(store, "products/p2/primary.jpg", b"p2")
    store.copy("products/p1/500ml/hero.jpg", "products/p1/1kg/hero.jpg")
    assert b"".join(store.read("products/p1/1kg/hero.jpg")) == b"hero"
    assert sorted(o.key for o in store.list("products/p1/")) == [
        "products/p1/1kg/hero.jpg", "products/p1/500ml/hero.jpg", "products/p1/500ml/info.jpg"]
    assert {o.key for o in store.list()} >= {"products/p2/primary.jpg"}
    assert store.delete("products/p1/500ml/hero.jpg") is True
    assert store.delete("products/p1/500ml/hero.jpg") is False
    assert "products/p1/500ml/hero.jpg" not in {o.key for o in store.list()}
    with pytest.raises(PhotoStoreError):
        b"".join(store.read("products/p1/500ml/hero.jpg"))


def test_staging_is_not_listed_and_empty_objects_work(store: PhotoStore) -> None:
    (store.staging_dir() / "abc.part").write_bytes(b"partial")
    put(store, "products/p3/empty.jpg", b"")
    assert [o.key for o in store.list()] == ["products/p3/empty.jpg"]
    assert store.hash("products/p3/empty.jpg") == md5(b"")


@pytest.mark.parametrize("key", ["", "/abs.jpg", "a/../b.jpg", "a//b.jpg", ".posync-staging/x", "a\\b.jpg"])
def test_unsafe_keys_are_refused(store: PhotoStore, key: str) -> None:
    with pytest.raises(PhotoConfigError):
        put(store, key, b"x")


def test_large_object_streams_in_chunks(store: PhotoStore) -> None:
    data = os.urandom(6 * 1024 * 1024 + 123)  # above the S3 part size here: a multipart upload
    put(store, "products/big/photo.jpg", data)
    chunks = list(store.read("products/big/photo.jpg"))
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 1024 * 1024
    assert b"".join(chunks) == data
    assert store.hash("products/big/photo.jpg") == md5(data)


def test_multipart_etag_is_never_taken_for_an_md5() -> None:
    assert etag_md5('"5cd6a73f49b355a6fd4347f5dd0a2338"') == "5cd6a73f49b355a6fd4347f5dd0a2338"
    assert etag_md5('"5cd6a73f49b355a6fd4347f5dd0a2338-2"') is None
    assert etag_md5("W/opaque") is None and etag_md5(None) is None


def test_s3_multipart_object_reports_no_md5_but_hashes_right(s3_endpoint: str, tmp_path: Path) -> None:
    s3 = S3Store(s3_endpoint, "multipart-check", access_key="testing", secret_key=SecretStr("testing"),
                 region="us-east-1", staging=tmp_path, part_size=5 * 1024 * 1024)
    data = os.urandom(11 * 1024 * 1024)
    put(s3, "products/m/p.jpg", data)
    stat = s3.stat("products/m/p.jpg")
    assert stat is not None and stat.md5 is None  # a "-N" ETag
    assert s3.hash("products/m/p.jpg") == md5(data)
    assert "testing" not in repr(s3)
    s3.close()


def test_open_store_specs(tmp_path: Path, sqlite_url: str) -> None:
    assert isinstance(open_store(f"fs:{tmp_path}"), FileStore)
    engine = posync.create_engine(sqlite_url)
    assert isinstance(open_store("db", engine=engine), DatabaseStore)
    assert isinstance(open_store("s3://bucket", endpoint="127.0.0.1:9"), S3Store)  # nothing connects yet
    for bad in ("fs:", "s3://bucket", "ftp://x", "db"):
        with pytest.raises(PhotoConfigError):
            open_store(bad)
    engine.dispose()


@contextmanager
def moto_s3_process() -> Iterator[str]:
    """moto's server in a process of its own: what it keeps of an upload is not this process's memory."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, "moto's server exited"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_s3_put_of_a_large_photo_holds_about_two_parts_in_memory(tmp_path: Path) -> None:
    """Issue 15 item 11: minio's default (3 parts of 16 MiB uploading in parallel, one more being read)
    held ~4 parts at once; the store uploads one part at a time."""
    path, h = tmp_path / "big.part", hashlib.md5(usedforsecurity=False)
    with open(path, "wb") as f:
        for _ in range(48):
            block = os.urandom(MiB)
            h.update(block)
            f.write(block)
    del block
    with moto_s3_process() as endpoint:
        s3 = S3Store(endpoint, "memory-check", access_key="testing", secret_key=SecretStr("testing"),
                     region="us-east-1", staging=tmp_path)  # the default part size
        s3.stat("products/none.jpg")  # connected and the bucket made before measuring
        tracemalloc.start()
        try:
            s3.put_file("products/big/p.jpg", path, md5=h.hexdigest(), content_type="image/jpeg")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert s3.hash("products/big/p.jpg") == h.hexdigest()
        s3.close()
    assert peak < 24 * MiB, f"{peak / MiB:.1f} MiB traced during the put"


def test_two_outlets_stores_never_share_a_staging_directory_and_a_swapped_one_is_refused(tmp_path: Path) -> None:
    """A new-user trial: the db and S3 stores staged in /tmp/posync-photos-<database or bucket name>, shared
    by every outlet whose database (on any server) or bucket had that name, and by every user. Now one
    per store and user; a staging path that is a symlink (someone else's swap) is refused."""
    from posync.stores import DatabaseStore, S3Store

    one = sa.create_engine("postgresql+psycopg://pos:pw@10.0.0.1:5432/pos")  # not connected: only the URL counts
    two = sa.create_engine("postgresql+psycopg://pos:pw@10.0.0.2:5432/pos")
    stagings = {DatabaseStore(one)._staging, DatabaseStore(two)._staging,
                S3Store("10.0.0.1:9000", "edge")._staging, S3Store("10.0.0.2:9000", "edge")._staging}
    assert len(stagings) == 4
    assert all("pw" not in str(path) and str(os.getuid()) in path.name for path in stagings)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    swapped = tmp_path / "swapped"
    swapped.symlink_to(elsewhere)
    with pytest.raises(PhotoConfigError, match="not this user's own directory"):
        S3Store("10.0.0.1:9000", "edge", staging=swapped).staging_dir()
    fresh = S3Store("10.0.0.1:9000", "edge", staging=tmp_path / "mine").staging_dir()
    assert fresh.is_dir() and (fresh.stat().st_mode & 0o777) == 0o700
