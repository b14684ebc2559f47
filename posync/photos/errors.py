"""Photo replication's errors, under posync's one root.

    PosyncError
    ├── ConfigurationError
    │   └── PhotoConfigError        bad photo settings (store spec, API flavour, a key outside the store)
    ├── StorageError
    │   └── PhotoStoreError         an edge store refused a read/write/delete (carries store kind and key)
    ├── TransportError
    │   └── PhotoTransferError      one photo's bytes could not be fetched and verified (carries the
    │                               photo id, a short ``reason`` code and whether a retry may help)
    └── PhotoError
        ├── PhotoNotFoundError      no such photo in the outlet's metadata
        └── DeleteCapExceeded       a pass would delete more photos than allowed; nothing was deleted

Messages name photos and keys, never credentials or URLs with query strings.
"""

from __future__ import annotations

from posync.errors import ConfigurationError, PosyncError, StorageError, TransportError

__all__ = [
    "DeleteCapExceeded",
    "PhotoConfigError",
    "PhotoError",
    "PhotoNotFoundError",
    "PhotoStoreError",
    "PhotoTransferError",
]


class PhotoError(PosyncError):
    """Root of the photo-specific errors that are neither storage nor transport."""


class PhotoConfigError(ConfigurationError):
    pass


class PhotoStoreError(StorageError):
    """``reason``: what a failed photo's row says (``store``, or the store's own word: ``no_host_row``,
    ``too_large``, ...)."""

    def __init__(self, store: str, operation: str, key: str | None = None, detail: str = "", *,
                 reason: str = "store") -> None:
        self.store = store
        self.key = key
        self.reason = reason
        super().__init__(f"{store} store {operation}" + (f" {key!r}" if key else ""), detail)


class PhotoTransferError(TransportError):
    """``reason`` is one of: http_<status>, timeout, stalled, connection, short (cut before the end),
    size_mismatch (the object is not the manifest's size), checksum, deadline, unsafe_url (not http or https),
    no_space (a full disk), staging (another refused write); ``detail`` says more ("No space left on device")."""

    def __init__(self, photo_id: str, reason: str, detail: str = "", *, retryable: bool = True) -> None:
        self.photo_id = photo_id
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        super().__init__(f"photo {photo_id}: {reason}" + (f" ({detail})" if detail else ""))


class PhotoNotFoundError(PhotoError):
    def __init__(self, photo_id: str) -> None:
        self.photo_id = photo_id
        super().__init__(f"photo {photo_id!r} not found")


class DeleteCapExceeded(PhotoError):
    def __init__(self, wanted: int, cap: int) -> None:
        self.wanted = wanted
        self.cap = cap
        super().__init__(f"{wanted} photo deletes wanted, more than the cap of {cap}; none applied "
                         "(raise max_deletes if HO really removed them)")
