"""The filesystem store (the embedded default): ``root/<object_key>``, written by temp file + fsync + rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from posync.photos.errors import PhotoStoreError
from posync.photos.stores.base import CHUNK, RESERVED_PREFIX, StoredObject, check_key, md5_of_chunks

__all__ = ["FileStore"]

STAGING = f"{RESERVED_PREFIX}-staging"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    kind = "fs"

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self._fsync = fsync

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def staging_dir(self) -> Path:
        # inside the root: a rename from here to the final place never crosses a filesystem
        staging = self.root / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def put_file(self, key: str, path: Path, *, md5: str, content_type: str, consume: bool = False) -> None:
        final = self.path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if consume and path.stat().st_dev == final.parent.stat().st_dev:
                self._sync_file(path)
                os.replace(path, final)
            else:
                self._copy_into_place(path, final)
            if self._fsync:
                _fsync_dir(final.parent)
        except OSError as exc:
            raise PhotoStoreError(self.kind, "write", key, exc.strerror or type(exc).__name__) from exc

    def _sync_file(self, path: Path) -> None:
        if self._fsync:
            with open(path, "rb+") as f:
                os.fsync(f.fileno())

    def _copy_into_place(self, src: Path, final: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".posync-", suffix=".tmp", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, CHUNK)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def read(self, key: str) -> Iterator[bytes]:
        try:
            f = open(self.path(key), "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise PhotoStoreError(self.kind, "read", key, exc.strerror or "") from exc
        return self._chunks(f)

    @staticmethod
    def _chunks(f: object) -> Iterator[bytes]:
        with f:  # type: ignore[attr-defined]
            while chunk := f.read(CHUNK):  # type: ignore[attr-defined]
                yield chunk

    def stat(self, key: str) -> StoredObject | None:
        try:
            st = self.path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PhotoStoreError(self.kind, "stat", key, exc.strerror or "") from exc
        return StoredObject(key, st.st_size, None)

    def hash(self, key: str) -> str | None:
        if self.stat(key) is None:
            return None
        return md5_of_chunks(self.read(key))

    def copy(self, src: str, dst: str) -> None:
        source, final = self.path(src), self.path(dst)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._copy_into_place(source, final)
            if self._fsync:
                _fsync_dir(final.parent)
        except OSError as exc:
            raise PhotoStoreError(self.kind, "copy", f"{src} -> {dst}", exc.strerror or "") from exc

    def delete(self, key: str) -> bool:
        target = self.path(key)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise PhotoStoreError(self.kind, "delete", key, exc.strerror or "") from exc
        parent = target.parent  # drop emptied folders (a moved prefix leaves none behind)
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_PREFIX)]
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith(".posync-"):  # a temp file of an interrupted copy: not an object
                    continue
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        yield StoredObject(key, os.stat(os.path.join(dirpath, name)).st_size, None)

    def close(self) -> None:
        return None
