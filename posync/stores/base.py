"""The edge store interface: three real implementations (filesystem, S3/MinIO, outlet database).

A store only ever holds verified, complete bytes: callers stage and verify a file first, and
:meth:`PhotoStore.put_file` makes it visible under its key in one atomic step (rename, a single PUT,
one transaction). Readers see the old bytes or the new ones, never a mix.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from posync.errors import PhotoConfigError

__all__ = ["CHUNK", "PhotoStore", "StoredObject", "StrPath", "check_key", "default_staging", "md5_of_chunks",
           "private_dir", "stat_each", "store_identity"]

CHUNK = 256 * 1024
RESERVED_PREFIX = ".posync"
StrPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    md5: str | None  # None: the store cannot tell without reading the bytes (a file; a multipart ETag)


@runtime_checkable
class PhotoStore(Protocol):
    kind: str

    def staging_dir(self) -> Path:
        """Where partial downloads wait (kept across restarts, so they resume)."""
        ...

    def put_file(self, key: str, path: StrPath, *, md5: str, content_type: str, consume: bool = False,
                 durable: bool = True, synced: bool = False) -> None:
        """Make the verified bytes in ``path`` visible under ``key`` atomically. With ``consume`` the store
        takes the file (a rename, or it is removed once copied). With ``durable=False`` the put may need
        :meth:`flush` to survive a power cut (the filesystem store's folder fsync waits for it); ``synced``
        says the caller has fsynced ``path`` already (the filesystem store then renames it as it is)."""
        ...

    def flush(self) -> None:
        """Make every put made with ``durable=False`` since the last flush durable."""
        ...

    def read(self, key: str) -> Iterator[bytes]:
        """The bytes under ``key`` in chunks; raises PhotoStoreError if there are none."""
        ...

    def stat(self, key: str) -> StoredObject | None: ...

    def stat_many(self, keys: Collection[str]) -> dict[str, StoredObject]:
        """The objects among ``keys`` that exist (the filesystem store reads each folder once)."""
        ...

    def hash(self, key: str) -> str | None:
        """MD5 of the bytes as stored (read through when the store cannot vouch for them); None if absent."""
        ...

    def copy(self, src: str, dst: str) -> None: ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        ...

    def list(self, prefix: str = "") -> Iterator[StoredObject]: ...

    def close(self) -> None: ...


def check_key(key: str) -> str:
    """Refuse keys that could escape the store or collide with its own bookkeeping."""
    if (not key or len(key) > 500 or key.startswith("/") or "\\" in key or "\x00" in key
            or any(part in ("", ".", "..") for part in key.split("/")) or key.startswith(RESERVED_PREFIX)):
        raise PhotoConfigError(f"object key {key[:80]!r} is not a safe relative path")
    return key


def store_identity(store: PhotoStore) -> str:
    """Which store this is (kind and location, never a secret): the rows' synced state refers to it. A store
    of the host's without an ``identity`` is named by its kind."""
    identity = getattr(store, "identity", None)
    return identity if isinstance(identity, str) else store.kind


def default_staging(place: str) -> Path:
    """Where a store with no staging directory of its own keeps partial downloads: under the system's temp
    directory, one per store (``place``: its URL or endpoint and bucket, never a secret; hashed) and per
    user, stable across restarts so downloads resume. Two outlets' stores never share one."""
    digest = hashlib.sha256(place.encode()).hexdigest()[:16]
    user = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"posync-photos-{user}-{digest}"


def private_dir(path: Path) -> Path:
    """``path``, made if missing (readable by this user alone); one that is a symlink or another user's
    (a shared temp directory) is refused: photo bytes are never staged where someone else can swap them."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or (
            hasattr(os, "getuid") and info.st_uid != os.getuid()):
        raise PhotoConfigError(f"the photo staging directory {str(path)!r} is not this user's own directory: "
                               "give the store a staging= directory")
    return path


def md5_of_chunks(chunks: Iterator[bytes]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def stat_each(store: PhotoStore, keys: Collection[str]) -> dict[str, StoredObject]:
    """:meth:`PhotoStore.stat_many` as one stat per key."""
    found = {}
    for key in keys:
        stat = store.stat(key)
        if stat is not None:
            found[key] = stat
    return found
