"""Webhook signatures: pure functions of raw body bytes and headers, no web framework inside.

Two schemes, each a signer (HO side) and a verifier (outlet side):

* Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``; ``v1,<base64 HMAC-SHA256>`` over ``b"{id}.{timestamp}." + body`` with a ``whsec_``
  secret, or ``v1a,<base64 ed25519>`` over the same bytes checked against trusted public keys. Several
  space-separated signatures (secret rotation); unknown versions are skipped.
* The sync-service seed's ``X-Cloud-Signature``: hex HMAC-SHA256, made non-replayable by signing
  ``b"{X-Cloud-Timestamp}." + body``. It carries no message id, so the id used for replay protection is a
  digest of the signed content (a captured request sent again has the same id).

Verification never raises anything but :class:`~posync.errors.SignatureError` for bad input (the
``standardwebhooks`` package raises ValueError/binascii.Error on malformed headers; this module must not).
Secrets live in :class:`Secret`, which never shows its value in ``repr``/``str``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from posync.errors import ConfigurationError, SignatureError

__all__ = [
    "DEFAULT_TOLERANCE",
    "CloudSignatureVerifier",
    "CloudSigner",
    "Secret",
    "Signer",
    "StandardWebhookSigner",
    "StandardWebhookVerifier",
    "VerifiedMessage",
    "Verifier",
    "load_public_key",
]

DEFAULT_TOLERANCE = 300.0  # seconds either side of now
MAX_MESSAGE_ID = 255
MAX_SIGNATURE_HEADER = 4096

_ID_RE = re.compile(r"[\x21-\x7e]{1,255}")  # MAX_MESSAGE_ID visible ASCII characters
_TS_RE = re.compile(r"0|[1-9][0-9]{0,11}")
_HEX_RE = re.compile(r"[0-9a-f]{64}")  # canonical lower-case hex only: one spelling per signature


class Secret:
    """A shared secret whose value never appears in ``repr``, ``str``, logs or exception messages."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes | str) -> None:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if not raw:
            raise ConfigurationError("a webhook secret may not be empty")
        self._value = raw

    @classmethod
    def from_whsec(cls, text: str) -> Secret:
        """A Standard Webhooks secret: ``whsec_`` + base64 (the prefix and padding are optional)."""
        body = text.removeprefix("whsec_")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigurationError("webhook secret is not valid base64 after 'whsec_'") from exc
        return cls(raw)

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    __hash__ = None  # type: ignore[assignment]  # hashing would be a side channel for no benefit


def _as_whsec(secret: Secret | str) -> Secret:
    return secret if isinstance(secret, Secret) else Secret.from_whsec(secret)


def load_public_key(key: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    """An ed25519 public key: an object, 32 raw bytes, or ``whpk_`` + base64 of them."""
    if isinstance(key, Ed25519PublicKey):
        return key
    try:
        raw = key if isinstance(key, bytes) else base64.b64decode(key.removeprefix("whpk_"), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError("not an ed25519 public key (32 bytes, or whpk_ + base64)") from exc


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    message_id: str
    timestamp: int
    scheme: str


class Verifier(Protocol):
    """Checks one signature scheme. ``signature_header`` (lower case) selects it for a request."""

    signature_header: str
    tolerance: float

    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedMessage: ...


class Signer(Protocol):
    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]: ...


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup; ``name`` is lower case. Exact match first: the common, fast case."""
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


class _HmacSha256:
    """HMAC-SHA256 with the key schedule done once (RFC 2104: the padded-key inner and outer hash states are
    precomputed; each MAC copies them). About 2.5x faster per call than copying an ``hmac.HMAC`` object,
    whose Python wrapper dominates for webhook-sized messages. Verified against ``hmac`` in the tests."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, content: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(content)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _check_tolerance(tolerance: float) -> float:
    if not tolerance > 0:  # also refuses NaN
        raise ConfigurationError("webhook timestamp tolerance must be > 0 seconds; it cannot be disabled")
    return float(tolerance)


def _parse_timestamp(text: str | None, now: float, tolerance: float) -> int:
    if not text or not _TS_RE.fullmatch(text):
        raise SignatureError("missing or malformed signature timestamp")
    ts = int(text)
    if abs(now - ts) > tolerance:
        raise SignatureError("signature timestamp outside the allowed tolerance")
    return ts


def _ascii(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


class StandardWebhookSigner:
    """HO side of Standard Webhooks: ``v1`` HMAC with every secret given, plus ``v1a`` with an ed25519 key."""

    def __init__(self, secrets: Sequence[Secret | str] = (), *,
                 private_key: Ed25519PrivateKey | None = None) -> None:
        self._keys = tuple(_as_whsec(s).reveal() for s in secrets)
        self._private_key = private_key
        if not self._keys and private_key is None:
            raise ConfigurationError("StandardWebhookSigner needs a secret or a private key")

    def signature(self, message_id: str, timestamp: int, body: bytes) -> str:
        content = b"%s.%d." % (message_id.encode("utf-8"), timestamp) + body
        sigs = [f"v1,{base64.b64encode(hmac.digest(k, content, 'sha256')).decode()}" for k in self._keys]
        if self._private_key is not None:
            sigs.append(f"v1a,{base64.b64encode(self._private_key.sign(content)).decode()}")
        return " ".join(sigs)

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
                "webhook-signature": self.signature(message_id, timestamp, body)}

    def __repr__(self) -> str:
        return f"StandardWebhookSigner(<{len(self._keys)} secret(s)>)"


class StandardWebhookVerifier:
    """Outlet side of Standard Webhooks. Any configured secret (rotation) or trusted public key may match."""

    signature_header = "webhook-signature"

    def __init__(self, secrets: Sequence[Secret | str] = (), *,
                 public_keys: Iterable[Ed25519PublicKey | str | bytes] = (),
                 tolerance: float = DEFAULT_TOLERANCE, clock: Callable[[], float] = time.time) -> None:
        # Precomputed HMAC states: verify copies them instead of redoing the key schedule per call.
        self._macs = tuple(_HmacSha256(_as_whsec(s).reveal()) for s in secrets)
        self._public_keys = tuple(load_public_key(k) for k in public_keys)
        if not self._macs and not self._public_keys:
            raise ConfigurationError("StandardWebhookVerifier needs at least one secret or public key")
        self.tolerance = _check_tolerance(tolerance)
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedMessage:
        msg_id, sig_header = _header(headers, "webhook-id"), _header(headers, "webhook-signature")
        if not msg_id or not sig_header:
            raise SignatureError("missing webhook-id or webhook-signature header")
        if not _ID_RE.fullmatch(msg_id):
            raise SignatureError("malformed webhook-id")
        if len(sig_header) > MAX_SIGNATURE_HEADER:
            raise SignatureError("webhook-signature header too long")
        ts = _parse_timestamp(_header(headers, "webhook-timestamp"), self._clock(), self.tolerance)
        content = b"%s.%d." % (msg_id.encode("ascii"), ts) + body
        v1: list[bytes] = []
        v1a: list[str] = []
        for candidate in sig_header.split(" "):
            if candidate.startswith("v1,"):
                v1.append(_ascii(candidate[3:]))
            elif candidate.startswith("v1a,"):
                v1a.append(candidate[4:])
        if v1:
            for mac in self._macs:
                expected = binascii.b2a_base64(mac.digest(content), newline=False)
                for given in v1:
                    if hmac.compare_digest(expected, given):
                        return VerifiedMessage(msg_id, ts, "v1")
        if v1a and self._public_keys and self._ed25519_ok(content, v1a):
            return VerifiedMessage(msg_id, ts, "v1a")
        raise SignatureError("no matching webhook signature")

    def _ed25519_ok(self, content: bytes, candidates: list[str]) -> bool:
        for given in candidates:
            try:
                raw = base64.b64decode(given, validate=True)
            except (binascii.Error, ValueError):
                continue
            if len(raw) != 64:
                continue
            for key in self._public_keys:
                try:
                    key.verify(raw, content)
                    return True
                except InvalidSignature:
                    continue
        return False

    def __repr__(self) -> str:
        return (f"StandardWebhookVerifier(<{len(self._macs)} secret(s)>, "
                f"{len(self._public_keys)} public key(s), tolerance={self.tolerance})")


def _cloud_content(timestamp: int, body: bytes) -> bytes:
    return b"%d." % timestamp + body


class CloudSigner:
    """HO side of the seed's ``X-Cloud-Signature`` (hex HMAC-SHA256 over ``"{timestamp}." + body``)."""

    def __init__(self, secret: Secret | str) -> None:
        self._key = (secret if isinstance(secret, Secret) else Secret(secret)).reveal()

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """``message_id`` is not sent: this scheme has no id header (the receiver derives one)."""
        sig = hmac.digest(self._key, _cloud_content(timestamp, body), "sha256").hex()
        return {"X-Cloud-Timestamp": str(timestamp), "X-Cloud-Signature": sig}

    def __repr__(self) -> str:
        return "CloudSigner(<secret>)"


class CloudSignatureVerifier:
    """Outlet side of ``X-Cloud-Signature`` + ``X-Cloud-Timestamp``; several secrets for rotation.

    The header may hold several lower-case hex signatures separated by commas or spaces, optionally
    ``sha256=``-prefixed.
    """

    signature_header = "x-cloud-signature"

    def __init__(self, secrets: Sequence[Secret | str], *, tolerance: float = DEFAULT_TOLERANCE,
                 clock: Callable[[], float] = time.time) -> None:
        self._macs = tuple(_HmacSha256((s if isinstance(s, Secret) else Secret(s)).reveal()) for s in secrets)
        if not self._macs:
            raise ConfigurationError("CloudSignatureVerifier needs at least one secret")
        self.tolerance = _check_tolerance(tolerance)
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedMessage:
        sig_header = _header(headers, "x-cloud-signature")
        if not sig_header:
            raise SignatureError("missing X-Cloud-Signature header")
        if len(sig_header) > MAX_SIGNATURE_HEADER:
            raise SignatureError("X-Cloud-Signature header too long")
        ts = _parse_timestamp(_header(headers, "x-cloud-timestamp"), self._clock(), self.tolerance)
        given = [
            c.removeprefix("sha256=").encode("ascii")
            for c in sig_header.replace(",", " ").split()
            if _HEX_RE.fullmatch(c.removeprefix("sha256="))
        ]
        content = _cloud_content(ts, body)
        for mac in self._macs:
            expected = mac.digest(content).hex().encode("ascii")
            for candidate in given:
                if hmac.compare_digest(expected, candidate):
                    digest = hashlib.sha256(content).hexdigest()[:40]
                    return VerifiedMessage(f"xcs_{digest}", ts, "x-cloud-signature")
        raise SignatureError("no matching X-Cloud-Signature")

    def __repr__(self) -> str:
        return f"CloudSignatureVerifier(<{len(self._macs)} secret(s)>, tolerance={self.tolerance})"
