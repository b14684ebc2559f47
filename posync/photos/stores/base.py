"""The edge store interface: three real implementations (filesystem, S3/MinIO, outlet database).

A store only ever holds verified, complete bytes: callers stage and verify a file first, and
:meth:`PhotoStore.put_file` makes it visible under its key in one atomic step (rename, a single PUT,
one transaction). Readers see the old bytes or the new ones, never a mix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from posync.photos.errors import PhotoConfigError

__all__ = ["CHUNK", "PhotoStore", "StoredObject", "check_key", "md5_of_chunks"]

CHUNK = 256 * 1024
RESERVED_PREFIX = ".posync"


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

    def put_file(self, key: str, path: Path, *, md5: str, content_type: str, consume: bool = False) -> None:
        """Make the verified bytes in ``path`` visible under ``key`` atomically. With ``consume`` the store
        may take the file itself (a rename) instead of copying it."""
        ...

    def read(self, key: str) -> Iterator[bytes]:
        """The bytes under ``key`` in chunks; raises PhotoStoreError if there are none."""
        ...

    def stat(self, key: str) -> StoredObject | None: ...

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


def md5_of_chunks(chunks: Iterator[bytes]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()
