"""Edge MinIO/S3 through the ``minio`` client (seed 001): the same ``object_key`` as HO, the bucket created
when missing, seed 001's public-read policy on request.

A PUT is atomic on S3 (readers see the old object or the new one) and the client signs the payload's
SHA-256, so the server refuses bytes that changed on the way. After a single-part PUT the returned ETag
must equal our MD5; a multipart ETag (``<hex>-<parts>``) is not an MD5 and is never compared as one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from posync.errors import PhotoStoreError
from posync.stores.base import (
    CHUNK,
    StoredObject,
    StrPath,
    check_key,
    default_staging,
    md5_of_chunks,
    private_dir,
    stat_each,
)

__all__ = ["PART_SIZE", "S3Store", "etag_md5"]

# A photo up to one part is a single verified PUT (its ETag is its MD5); a larger one is uploaded a part
# at a time, so a put holds about two parts in memory whatever the photo's size.
PART_SIZE = 8 * 1024 * 1024


def etag_md5(etag: str | None) -> str | None:
    """The MD5 an ETag stands for, or None when it is a multipart (``-N``) or otherwise opaque ETag."""
    if not etag:
        return None
    value = etag.strip('"').lower()
    if "-" in value or len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        return None
    return value


def public_read_policy(bucket: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/*"]}]})


class S3Store:
    kind = "s3"

    def __init__(self, endpoint: str, bucket: str, *, access_key: str | None = None,
                 secret_key: SecretStr | None = None, secure: bool = False, region: str | None = None,
                 public_read: bool = False, staging: str | Path | None = None, timeout: float = 30.0,
                 part_size: int = PART_SIZE) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self._access_key = access_key
        self._secret_key = secret_key
        self._secure = secure
        self._region = region
        self._public_read = public_read
        self._timeout = timeout
        self._part_size = part_size
        self._staging = Path(staging) if staging else default_staging(f"s3:{endpoint}/{bucket}")
        self._client: Any = None
        self._http: Any = None

    def __repr__(self) -> str:  # never the keys
        return f"S3Store(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    @property
    def identity(self) -> str:  # never the keys
        return f"s3:{self.endpoint}/{self.bucket}"

    # -- connection (made on first use, never at construction) ---------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            import urllib3
            from minio import Minio

            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=min(10.0, self._timeout), read=self._timeout), maxsize=16,
                retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))
            client = Minio(self.endpoint, access_key=self._access_key,
                           secret_key=self._secret_key.get_secret_value() if self._secret_key else None,
                           secure=self._secure, region=self._region, http_client=http)
            self._ensure_bucket(client)
            self._http, self._client = http, client
        return self._client

    def _ensure_bucket(self, client: Any) -> None:
        from minio.error import S3Error

        try:
            if not client.bucket_exists(self.bucket):
                try:
                    client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                if self._public_read:
                    client.set_bucket_policy(self.bucket, public_read_policy(self.bucket))
        except Exception as exc:
            raise PhotoStoreError(self.kind, "open bucket", self.bucket, type(exc).__name__) from exc

    def _fail(self, op: str, key: str, exc: Exception) -> PhotoStoreError:
        return PhotoStoreError(self.kind, op, key, getattr(exc, "code", None) or type(exc).__name__)

    # -- the interface ---------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        return private_dir(self._staging)

    def put_file(self, key: str, path: StrPath, *, md5: str, content_type: str, consume: bool = False,
                 durable: bool = True, synced: bool = False) -> None:
        check_key(key)
        try:
            # one part in flight: minio's default of 3 parallel parts kept ~4 in memory (bench_photo_misc rss)
            result = self.client.fput_object(self.bucket, key, os.fspath(path), content_type=content_type,
                                             metadata={"posync-md5": md5}, part_size=self._part_size,
                                             num_parallel_uploads=1)
        except PhotoStoreError:
            raise
        except Exception as exc:
            raise self._fail("write", key, exc) from exc
        got = etag_md5(result.etag)
        if got is not None and got != md5:
            raise PhotoStoreError(self.kind, "write", key, "ETag does not match the verified MD5")
        if got is None:  # multipart: the size is what we can check without reading back
            stat = self.stat(key)
            if stat is None or stat.size != os.stat(path).st_size:
                raise PhotoStoreError(self.kind, "write", key, "stored size differs after upload")
        if consume:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def flush(self) -> None:
        return None  # a PUT is durable when it is answered

    def read(self, key: str) -> Iterator[bytes]:
        check_key(key)
        try:
            response = self.client.get_object(self.bucket, key)
        except PhotoStoreError:
            raise
        except Exception as exc:
            raise self._fail("read", key, exc) from exc
        return self._chunks(response, key)

    def _chunks(self, response: Any, key: str) -> Iterator[bytes]:
        try:
            yield from response.stream(CHUNK)
        except Exception as exc:
            raise self._fail("read", key, exc) from exc
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> StoredObject | None:
        from minio.error import S3Error

        check_key(key)
        try:
            obj = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"):
                return None
            raise self._fail("stat", key, exc) from exc
        except PhotoStoreError:
            raise
        except Exception as exc:
            raise self._fail("stat", key, exc) from exc
        return StoredObject(key, int(obj.size or 0), etag_md5(obj.etag))

    def stat_many(self, keys: Collection[str]) -> dict[str, StoredObject]:
        return stat_each(self, keys)

    def hash(self, key: str) -> str | None:
        stat = self.stat(key)
        if stat is None:
            return None
        return stat.md5 if stat.md5 is not None else md5_of_chunks(self.read(key))

    def copy(self, src: str, dst: str) -> None:
        from minio.commonconfig import CopySource

        check_key(src)
        check_key(dst)
        try:
            self.client.copy_object(self.bucket, dst, CopySource(self.bucket, src))
        except PhotoStoreError:
            raise
        except Exception as exc:
            raise self._fail("copy", f"{src} -> {dst}", exc) from exc

    def delete(self, key: str) -> bool:
        if self.stat(key) is None:
            return False
        try:
            self.client.remove_object(self.bucket, key)
        except Exception as exc:
            raise self._fail("delete", key, exc) from exc
        return True

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                if not obj.is_dir:
                    yield StoredObject(obj.object_name, int(obj.size or 0), etag_md5(obj.etag))
        except PhotoStoreError:
            raise
        except Exception as exc:
            raise self._fail("list", prefix or "/", exc) from exc

    def close(self) -> None:
        if self._http is not None:
            self._http.clear()
        self._http = self._client = None
