"""A download in progress: bytes in ``<staging>/<md5>.part``, what a resume needs in ``<md5>.part.json``.

The MD5 and the size are checked while the bytes stream in (never a whole photo in memory). A resume sends
``Range: bytes=<have>-`` with ``If-Range: <validator>`` (the strong ETag, else Last-Modified, of the first
answer): a 206 appends, a 200 means the object changed and starts over. Bytes that fail verification are
discarded, never resumed from. Staged files are their owner's alone (0600): they hold bytes nobody has
verified yet. A write the staging folder refuses (a full disk) raises :class:`StagingFailed`, never a bare
``OSError``, so an engine cannot take it for a network error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from posync.stores.base import CHUNK, StrPath

__all__ = ["NO_SPACE", "RESUME_MIN", "Staged", "StagingFailed", "TooLong"]

# below this a download is cheaper to redo than to resume: no sidecar file, no Range (the per-photo file
# operations were a visible share of a 50 KB photo's cost; bench/bench_photo_transfer.py)
RESUME_MIN = 512 * 1024

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})  # a full disk, or the owner's quota: room may come back


class TooLong(Exception):
    """More bytes arrived than the manifest's size."""


class StagingFailed(Exception):
    """The staging folder refused a write: ``reason`` is ``no_space`` (a full disk or quota) or ``staging``;
    ``detail`` the system's words ("No space left on device")."""

    def __init__(self, exc: OSError) -> None:
        self.reason = "no_space" if exc.errno in NO_SPACE else "staging"
        self.detail = exc.strerror or type(exc).__name__
        super().__init__(f"{self.reason}: {self.detail}")


class _NoHash:
    """Before :meth:`Staged.begin` (which makes the real hasher): matches no checksum."""

    def hexdigest(self) -> str:
        return ""

    def update(self, data: bytes) -> None:
        raise AssertionError("begin() first")


_NO_HASH = _NoHash()


class Staged:
    """One checksum's partial download. File names are kept as strings: a 50 KB photo's whole life here is a
    handful of system calls, and Path objects were a visible share of it (bench/bench_photo_transfer.py)."""

    __slots__ = ("_buffer", "_fd", "_hasher", "_meta", "_on_disk", "_path", "_update", "md5", "offset",
                 "received", "resumed_from", "size")

    def __init__(self, staging: StrPath, md5: str, size: int, *, on_disk: bool = True) -> None:
        """``on_disk=False``: the caller knows there is no ``<md5>.part`` yet (it read the staging folder),
        so nothing is looked up before this download writes one."""
        self._on_disk = on_disk
        self._path = f"{os.fspath(staging)}{os.sep}{md5}.part"
        self._meta = f"{self._path}.json"
        self.md5 = md5
        self.size = size
        self.offset = 0
        self.received = 0
        self.resumed_from = 0
        self._hasher: Any = _NO_HASH
        self._fd = -1
        self._buffer: list[bytes] | None = None  # a small photo's bytes, until verdict()

    @property
    def path(self) -> Path:
        return Path(self._path)

    @property
    def meta(self) -> Path:
        return Path(self._meta)

    @property
    def file_name(self) -> str:
        return self._path

    # -- before the request ----------------------------------------------------------------------------

    @property
    def resumable(self) -> bool:
        return self.size >= RESUME_MIN

    def resume_headers(self) -> dict[str, str]:
        """Range + If-Range when a previous attempt left verified-so-far bytes and a validator."""
        self._close()
        self.offset = self.received = self.resumed_from = 0
        if not self.resumable or not self._on_disk:
            return {}
        self._hasher = hashlib.md5(usedforsecurity=False)
        validator = self._validator()
        try:
            have = os.stat(self._path).st_size
        except FileNotFoundError:
            return {}
        if not validator or not 0 < have < self.size:
            self.discard()
            return {}
        with open(self._path, "rb") as f:  # the prefix's MD5, to go on hashing where it stopped
            while chunk := f.read(CHUNK):
                self._hasher.update(chunk)
        self.offset = have
        return {"Range": f"bytes={have}-", "If-Range": validator}

    def _validator(self) -> str | None:
        try:
            with open(self._meta, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return None
        value = data.get("validator") if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None

    # -- the answer ------------------------------------------------------------------------------------

    def begin(self, status: int, headers: Mapping[str, str]) -> None:
        """Called once the status and headers are in, before the first body byte. Below :data:`RESUME_MIN`
        (and when nothing was resumed) the headers are not read: callers may pass an empty mapping."""
        if not self.resumable:
            # below RESUME_MIN (never resumed) the bytes wait in memory (workers x RESUME_MIN at most), then
            # are hashed and written in one go by verdict(): one write instead of one per chunk, and wrong
            # bytes never reach the disk (bench/README.md, photos)
            self.offset = 0
            self._buffer = []
            return
        append = False
        if status == 206 and self.offset:
            m = _CONTENT_RANGE.match(headers.get("content-range", ""))
            append = bool(m and int(m.group(1)) == self.offset)
        if not append:
            self.offset = 0
            self._hasher = hashlib.md5(usedforsecurity=False)
        else:
            self.resumed_from = self.offset
        self._on_disk = True
        try:
            validator = _strong_etag(headers.get("etag")) or headers.get("last-modified")
            if validator:  # written before any byte, so a kill after the first can resume
                _write_private(self._meta, json.dumps({"validator": validator}).encode())
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._meta)
            # a bare descriptor: a BufferedWriter's open and flush were a visible share of a small photo's cost
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC),
                               0o600)
        except OSError as exc:
            raise StagingFailed(exc) from exc
        self._update = self._hasher.update

    def write(self, chunk: bytes) -> None:
        n = len(chunk)
        if self.offset + n > self.size:
            raise TooLong()
        if self._buffer is not None:
            self._buffer.append(chunk)
            self.offset += n
            self.received += n
            return
        try:
            written = os.write(self._fd, chunk)
            while written < n:  # a disk filling up takes part of a chunk, then raises
                written += os.write(self._fd, memoryview(chunk)[written:])
        except OSError as exc:
            raise StagingFailed(exc) from exc
        self._update(chunk)
        self.offset += n
        self.received += n

    def verdict(self) -> str | None:
        """Once an answer ended cleanly: None when the bytes are complete and right; else "size_mismatch"
        (the whole object came and it is smaller than the manifest says), "checksum". Closes the file (synced
        to disk first when complete, so the store's rename needs no second open)."""
        if self._buffer is not None:
            return self._verdict_in_memory()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                if self.offset == self.size:
                    os.fsync(fd)
            except OSError as exc:  # a filesystem that allocates late may only now say it is full
                raise StagingFailed(exc) from exc
            finally:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.offset < self.size:
            return "size_mismatch"
        if self._hasher.hexdigest() != self.md5:
            return "checksum"
        return None

    def received_md5(self) -> str:
        """The MD5 of the bytes received (after :meth:`verdict`: what a ``checksum`` verdict compared)."""
        return str(self._hasher.hexdigest())

    def _verdict_in_memory(self) -> str | None:
        chunks, self._buffer = self._buffer, None
        assert chunks is not None
        if self.offset < self.size:
            return "size_mismatch"
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._hasher = hashlib.md5(data, usedforsecurity=False)  # one call, without the GIL
        if self._hasher.hexdigest() != self.md5:
            return "checksum"
        self._on_disk = True
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                written = os.write(fd, data)
                while written < len(data):  # a disk filling up takes part, then raises
                    written += os.write(fd, memoryview(data)[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StagingFailed(exc) from exc
        return None

    # -- after -----------------------------------------------------------------------------------------

    def keep(self) -> None:
        """Stop here, keeping the bytes for a resume."""
        self._close()

    def discard(self) -> None:
        """Forget the bytes and the validator (a sidecar too: an earlier manifest may have had this checksum
        at a resumable size). Only after a failure: a success costs no extra unlink."""
        self._close()
        for name in (self._path, self._meta):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def committed(self) -> None:
        """The store took the file (``put_file(consume=True)`` leaves none behind): forget the partial."""
        self._close()
        self._on_disk = False
        if self.resumable:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._meta)

    def complete_on_disk(self) -> bool:
        """A previous run finished this download but died before the commit: verify what is on disk."""
        self._close()
        if not self._on_disk:
            return False
        try:
            if os.stat(self._path).st_size != self.size:
                return False
        except FileNotFoundError:
            return False
        h = hashlib.md5(usedforsecurity=False)
        with open(self._path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
            if h.hexdigest() != self.md5:
                return False
            os.fsync(f.fileno())  # its writer may have died before its own fsync: verdict() would have made one
        self.offset, self._hasher = self.size, h
        return True

    def _close(self) -> None:
        self._buffer = None
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _strong_etag(value: str | None) -> str | None:
    if not value or value.startswith("W/"):
        return None
    return value
