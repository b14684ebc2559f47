"""posync's exceptions: one root, subclasses that carry what a caller needs to act.

    PosyncError
    ├── ConfigurationError          bad settings or an entity registered twice / not registered
    │   ├── OutletMismatchError     the database belongs to another outlet than the settings name
    │   └── ConfigKeyError          the config key is missing, malformed or cannot decrypt the stored credentials
    ├── ClosedError                 the Posync was closed: it syncs no more (capture goes on in the database)
    ├── UnsupportedWriteError       a write posync cannot capture correctly (names the pattern and the way)
    ├── StorageError                the outlet database refused posync's work (carries the operation)
    ├── StaleWriteError             optimistic lock lost: the row changed since it was read
    ├── NotFoundError               a queue item, conflict or entity that does not exist
    ├── ConflictStateError          resolving a conflict that is not open, or with an invalid choice
    ├── TransportError              talking to head office failed; nothing was lost, the queue waits
    │   │                           (carries method and path of the request, when there was one)
    │   ├── HOUnavailableError      connection refused/reset, timeout, 5xx, 429 (carries retry_after)
    │   ├── AuthenticationError     401/403 that re-authenticating did not fix (bad credentials)
    │   └── ProtocolError           HO answered something posync cannot read (truncated, wrong shape)
    ├── HOErrorResponse             HO answered a 4xx with an error code (e.g. MISSING_STORE_ID)
    │   └── ResyncRequiredError     the pull cursor is older than HO's tombstone horizon
    └── WebhookError                (posync.webhooks) a webhook request refused; carries the HTTP status
        ├── SignatureError          401: missing/invalid signature or stale timestamp
        ├── ForbiddenSourceError    403: source IP not allowed
        ├── PayloadTooLargeError    413
        └── InvalidPayloadError     400/422: malformed JSON, non-UTF-8, unknown event type

Driver and HTTP library errors are translated at the boundary (``raise ... from exc``). No exception
message ever contains a secret.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "ClosedError",
    "ConfigKeyError",
    "ConfigurationError",
    "ConflictStateError",
    "DeleteCapExceeded",
    "ForbiddenSourceError",
    "HOErrorResponse",
    "HOUnavailableError",
    "InvalidPayloadError",
    "NotFoundError",
    "OutletMismatchError",
    "PayloadTooLargeError",
    "PhotoConfigError",
    "PhotoError",
    "PhotoNotFoundError",
    "PhotoStoreError",
    "PhotoTransferError",
    "PosyncError",
    "ProtocolError",
    "ResyncRequiredError",
    "SignatureError",
    "StaleWriteError",
    "StorageError",
    "TransportError",
    "UnsupportedWriteError",
    "WebhookError",
]


class PosyncError(Exception):
    """Root of every error posync raises on purpose."""


class ConfigurationError(PosyncError):
    pass


class OutletMismatchError(ConfigurationError):
    """The database belongs to another outlet (company, store or HO) than the settings name. ``bound`` and
    ``given`` map each differing field to its value; re-bind on purpose with ``posync.rebind_outlet``."""

    def __init__(self, bound: Any, given: Any) -> None:
        fields = [f for f in given._fields if getattr(bound, f) != getattr(given, f)]
        self.bound = {f: getattr(bound, f) for f in fields}
        self.given = {f: getattr(given, f) for f in fields}
        said = ", ".join(f"{f} {self.bound[f]!r} (settings: {self.given[f]!r})" for f in fields)
        super().__init__(f"this database belongs to another outlet: {said}. If this outlet really moved, "
                         "re-bind it on purpose: posync.rebind_outlet(engine, settings) or `posync db rebind`")


class ConfigKeyError(ConfigurationError):
    """The config key (``POSYNC_CONFIG_KEY`` or ``POSYNC_CONFIG_KEY_FILE``) is missing, is not a Fernet key, or
    cannot decrypt the credentials stored in ``posync_outlet``. The message never holds a key or a secret."""


class ClosedError(PosyncError):
    """The Posync was closed. Capture is in the database and goes on; syncing needs a new Posync."""


class UnsupportedWriteError(PosyncError):
    """A write posync refuses because it could not be captured correctly. The message names the
    pattern and the supported way."""

    def __init__(self, resource: str, pattern: str, instead: str) -> None:
        self.resource = resource
        self.pattern = pattern
        super().__init__(f"{resource}: {pattern} is refused by posync; {instead}")


class StorageError(PosyncError):
    """The outlet database failed or refused posync's work. Nothing half-written was committed."""

    def __init__(self, operation: str, detail: str = "") -> None:
        self.operation = operation
        super().__init__(f"outlet database: {operation} failed" + (f" ({detail})" if detail else ""))


class StaleWriteError(PosyncError):
    """A tracked row was changed by someone else since this session read it."""

    def __init__(self, resource: str, entity_id: str | None, detail: str = "") -> None:
        self.resource = resource
        self.entity_id = entity_id
        super().__init__(
            f"stale write to {resource}:{entity_id}: the row changed since it was read; reload and retry"
            + (f" ({detail})" if detail else "")
        )


class NotFoundError(PosyncError):
    def __init__(self, what: str, key: object) -> None:
        self.what = what
        self.key = key
        super().__init__(f"{what} {key!r} not found")


class ConflictStateError(PosyncError):
    pass


class TransportError(PosyncError):
    """Head office could not be reached or understood. Retry later; nothing was lost.

    ``method`` and ``path`` name the request (``None`` when the error is not about one request)."""

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        self.method = method
        self.path = path
        super().__init__(message)


class HOUnavailableError(TransportError):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 method: str | None = None, path: str | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message, method=method, path=path)


class AuthenticationError(TransportError):
    pass


class ProtocolError(TransportError):
    pass


class HOErrorResponse(PosyncError):
    """HO refused the request with an error code the caller can act on."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        self.status = status
        self.code = code
        super().__init__(f"HO answered {status} {code}" + (f": {message}" if message else ""))


class ResyncRequiredError(HOErrorResponse):
    def __init__(self, resource: str, message: str = "") -> None:
        self.resource = resource
        super().__init__(410, "CURSOR_EXPIRED", message or f"{resource}: cursor older than HO's tombstones")


class WebhookError(PosyncError):
    status: int = 400
    code: str = "BAD_REQUEST"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class SignatureError(WebhookError):
    status = 401
    code = "INVALID_SIGNATURE"


class ForbiddenSourceError(WebhookError):
    status = 403
    code = "FORBIDDEN_SOURCE"


class PayloadTooLargeError(WebhookError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class InvalidPayloadError(WebhookError):
    status = 400
    code = "INVALID_PAYLOAD"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# Photo replication (issue 12): one photo's failure carries its id and a short reason code; messages name
# photos and keys, never credentials or URLs with query strings.
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
