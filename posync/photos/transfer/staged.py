"""A download in progress: bytes in ``<staging>/<md5>.part``, what a resume needs in ``<md5>.part.json``.

The MD5 and the size are checked while the bytes stream in (never a whole photo in memory). A resume sends
``Range: bytes=<have>-`` with ``If-Range: <validator>`` (the strong ETag, else Last-Modified, of the first
answer): a 206 appends, a 200 means the object changed and starts over. Bytes that fail verification are
discarded, never resumed from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from posync.photos.stores.base import CHUNK

__all__ = ["Staged", "TooLong"]

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class TooLong(Exception):
    """More bytes arrived than the manifest's size."""


class Staged:
    def __init__(self, staging: Path, md5: str, size: int) -> None:
        self.path = staging / f"{md5}.part"
        self.meta = staging / f"{md5}.part.json"
        self.md5 = md5
        self.size = size
        self.offset = 0
        self.received = 0
        self.resumed_from = 0
        self._hasher = hashlib.md5(usedforsecurity=False)
        self._file: IO[bytes] | None = None

    # -- before the request ----------------------------------------------------------------------------

    def resume_headers(self) -> dict[str, str]:
        """Range + If-Range when a previous attempt left verified-so-far bytes and a validator."""
        self._close()
        self._hasher = hashlib.md5(usedforsecurity=False)
        self.offset = self.received = self.resumed_from = 0
        validator = self._validator()
        try:
            have = self.path.stat().st_size
        except FileNotFoundError:
            return {}
        if not validator or not 0 < have < self.size:
            self.discard()
            return {}
        with open(self.path, "rb") as f:  # the prefix's MD5, to go on hashing where it stopped
            while chunk := f.read(CHUNK):
                self._hasher.update(chunk)
        self.offset = have
        return {"Range": f"bytes={have}-", "If-Range": validator}

    def _validator(self) -> str | None:
        try:
            data = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return None
        value = data.get("validator") if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None

    # -- the answer ------------------------------------------------------------------------------------

    def begin(self, status: int, headers: Mapping[str, str]) -> None:
        """Called once the status and headers are in, before the first body byte."""
        append = False
        if status == 206 and self.offset:
            m = _CONTENT_RANGE.match(headers.get("content-range", ""))
            append = bool(m and int(m.group(1)) == self.offset)
        if not append:
            self.offset = 0
            self._hasher = hashlib.md5(usedforsecurity=False)
        else:
            self.resumed_from = self.offset
        validator = _strong_etag(headers.get("etag")) or headers.get("last-modified")
        if validator:  # written before any byte, so a kill after the first byte can still resume
            self.meta.write_text(json.dumps({"validator": validator}))
        else:
            self.meta.unlink(missing_ok=True)
        self._file = open(self.path, "ab" if append else "wb")  # noqa: SIM115 - closed in finish/keep

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        if self.offset + len(chunk) > self.size:
            raise TooLong()
        self._file.write(chunk)
        self._hasher.update(chunk)
        self.offset += len(chunk)
        self.received += len(chunk)

    def verdict(self) -> str | None:
        """None when the bytes are complete and right; else "short", "checksum". Closes the file."""
        self._close()
        if self.offset < self.size:
            return "short"
        if self._hasher.hexdigest() != self.md5:
            return "checksum"
        return None

    # -- after -----------------------------------------------------------------------------------------

    def keep(self) -> None:
        """Stop here, keeping the bytes for a resume."""
        self._close()

    def discard(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)

    def committed(self) -> None:
        """The store took the bytes (by rename or copy): forget the partial."""
        self._close()
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)

    def complete_on_disk(self) -> bool:
        """A previous run finished this download but died before the commit: verify what is on disk."""
        self._close()
        try:
            if self.path.stat().st_size != self.size:
                return False
        except FileNotFoundError:
            return False
        h = hashlib.md5(usedforsecurity=False)
        with open(self.path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        self.offset, self._hasher = self.size, h
        return h.hexdigest() == self.md5

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.flush()
                self._file.close()
            self._file = None


def _strong_etag(value: str | None) -> str | None:
    if not value or value.startswith("W/"):
        return None
    return value
