"""The filesystem store (the embedded default): ``root/<object_key>``, written by temp file + fsync + rename.

A put is atomic and visible at once (the rename). It is durable when it returns, unless the caller passes
``durable=False``: then the folder's fsync (what makes a rename survive a power cut) waits for
:meth:`FileStore.flush`, once per touched folder, which the byte pass calls before it marks the batch's rows
synced. The staged file's own bytes are always fsynced before the rename.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Collection, Iterator
from pathlib import Path

from posync.errors import PhotoStoreError
from posync.stores.base import CHUNK, RESERVED_PREFIX, StoredObject, StrPath, check_key, md5_of_chunks

__all__ = ["FileStore"]

STAGING = f"{RESERVED_PREFIX}-staging"


def _fsync_dir(path: StrPath) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    kind = "fs"

    def __init__(self, root: str | Path, *, fsync: bool = True, file_mode: int = 0o644) -> None:
        """``file_mode``: what published photos get (staged files are the owner's alone until then; a web
        server running as another user reads the store)."""
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self._fsync = fsync
        self._mode = file_mode
        self._dirs: set[str] = set()  # folders known to exist (a put's mkdir is skipped)
        self._dirty: set[str] = set()  # folders with a rename not yet fsynced (durable=False)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    @property
    def identity(self) -> str:
        return f"fs:{self.root}"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _fs(self, key: str) -> str:
        """The key's file name as a string (the hot path: no Path objects)."""
        check_key(key)
        return f"{self._root}{os.sep}{key if os.sep == '/' else key.replace('/', os.sep)}"

    def staging_dir(self) -> Path:
        # inside the root: a rename from here to the final place never crosses a filesystem
        staging = self.root / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def put_file(self, key: str, path: StrPath, *, md5: str, content_type: str, consume: bool = False,
                 durable: bool = True, synced: bool = False) -> None:
        final = self._fs(key)
        parent = os.path.dirname(final)
        try:
            if consume:
                if not synced:
                    self._sync_file(path)
                os.chmod(path, self._mode)
                try:
                    self._rename(path, final, parent)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self._copy_into_place(Path(path), Path(final))  # another filesystem: copy instead
                    os.unlink(path)
            else:
                os.makedirs(parent, exist_ok=True)
                self._copy_into_place(Path(path), Path(final))
            self._made_visible(parent, durable)
        except OSError as exc:
            raise PhotoStoreError(self.kind, "write", key, exc.strerror or type(exc).__name__) from exc

    def flush(self) -> None:
        """Make every ``durable=False`` put since the last flush durable: one fsync per touched folder."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        try:
            for folder in sorted(dirty):
                _fsync_dir(folder)
        except OSError as exc:
            with self._lock:
                self._dirty |= dirty
            raise PhotoStoreError(self.kind, "sync", os.path.relpath(folder, self._root),
                                  exc.strerror or type(exc).__name__) from exc

    def _mkdir(self, parent: str) -> None:
        if parent not in self._dirs:
            os.makedirs(parent, exist_ok=True)
            self._dirs.add(parent)

    def _rename(self, src: StrPath, final: str, parent: str) -> None:
        self._mkdir(parent)
        try:
            os.replace(src, final)
        except FileNotFoundError:
            if not os.path.exists(src):
                raise
            os.makedirs(parent, exist_ok=True)  # a delete emptied and removed the folder meanwhile
            os.replace(src, final)

    def _made_visible(self, parent: str, durable: bool) -> None:
        if not self._fsync:
            return
        if durable:
            _fsync_dir(parent)
        else:
            with self._lock:
                self._dirty.add(parent)

    def _sync_file(self, path: StrPath) -> None:
        if self._fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _copy_into_place(self, src: Path, final: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".posync-", suffix=".tmp", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, CHUNK)
                out.flush()
                os.fchmod(out.fileno(), self._mode)
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
            st = os.stat(self._fs(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PhotoStoreError(self.kind, "stat", key, exc.strerror or "") from exc
        return StoredObject(key, st.st_size, None)

    def stat_many(self, keys: Collection[str]) -> dict[str, StoredObject]:
        """One directory read per folder, and a stat only for the names it holds (a fresh store: none)."""
        by_folder: dict[str, list[tuple[str, str]]] = {}
        for key in keys:
            folder, _, name = self._fs(key).rpartition(os.sep)
            by_folder.setdefault(folder, []).append((key, name))
        found: dict[str, StoredObject] = {}
        for folder, wanted in by_folder.items():
            try:
                names = set(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                where = os.path.relpath(folder, self._root)
                raise PhotoStoreError(self.kind, "stat", where, exc.strerror or "") from exc
            for key, name in wanted:
                if name in names and (stat := self.stat(key)) is not None:
                    found[key] = stat
        return found

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
