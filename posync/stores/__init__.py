"""Edge stores behind one interface (:class:`PhotoStore`): the filesystem, S3/MinIO, the outlet database
(posync's chunked tables, or the host's own photo column as seed 000 has it).

``open_store("fs:/var/lib/pos/photos")``, ``open_store("s3://product-images", endpoint=...)``,
``open_store("db", engine=...)`` or ``open_store("db:table=product_photo,key=id,column=image_binary",
engine=...)`` builds one from the spec the CLI and settings use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posync.errors import PhotoConfigError
from posync.stores.base import PhotoStore, StoredObject, check_key
from posync.stores.db import DatabaseStore
from posync.stores.fs import FileStore
from posync.stores.host import HostColumn, HostColumnStore, parse_host_column
from posync.stores.s3 import S3Store, etag_md5

__all__ = ["DatabaseStore", "FileStore", "HostColumn", "HostColumnStore", "PhotoStore", "S3Store", "StoredObject",
           "check_key", "etag_md5", "open_store"]


def open_store(spec: str, *, engine: Any = None, staging: str | Path | None = None, **s3: Any) -> PhotoStore:
    """``fs:PATH`` | ``s3://BUCKET`` (``endpoint``, ``access_key``, ``secret_key``, ``secure``, ``region``,
    ``public_read`` as keywords) | ``db`` (posync's chunked tables) | ``db:table=T[,key=K][,column=C][,max_mb=N]``
    (the host's own column; both need ``engine``)."""
    if spec.startswith("fs:"):
        if not spec[3:]:
            raise PhotoConfigError("fs: store needs a path, e.g. fs:/var/lib/pos/photos")
        return FileStore(spec[3:])
    if spec.startswith("s3://"):
        bucket = spec[5:].strip("/")
        endpoint = s3.pop("endpoint", None)
        if not bucket or not endpoint:
            raise PhotoConfigError("s3:// store needs a bucket and an endpoint (host:port)")
        return S3Store(endpoint, bucket, staging=staging, **s3)
    if spec == "db" or spec.startswith("db:"):
        if engine is None:
            raise PhotoConfigError("the db store needs the outlet database's engine")
        if spec == "db":
            return DatabaseStore(engine, staging=staging)
        return HostColumnStore(engine, parse_host_column(spec[3:]), staging=staging)
    raise PhotoConfigError(f"unknown store {spec!r}: give fs:PATH, s3://BUCKET, db or db:table=T,key=K,column=C")
