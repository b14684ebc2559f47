"""Signature schemes: the Standard Webhooks vector, both-way compatibility with ``standardwebhooks``,
round-trip and tamper properties, rotation, ed25519, the seed's X-Cloud-Signature, and Secret masking."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from posync.errors import ConfigurationError, SignatureError
from posync.webhooks import (
    CloudSignatureVerifier,
    CloudSigner,
    Secret,
    StandardWebhookSigner,
    StandardWebhookVerifier,
)

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret of 24 byt").decode()

ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)
bodies = st.binary(max_size=400)


def _headers(msg_id: str, ts: int, sig: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def _fixed(now: float) -> StandardWebhookVerifier:
    return StandardWebhookVerifier([VECTOR_SECRET], clock=lambda: now)


def test_published_vector_signs_and_verifies() -> None:
    signer = StandardWebhookSigner([VECTOR_SECRET])
    assert signer.signature(VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    verified = _fixed(VECTOR_TS).verify(VECTOR_BODY, _headers(VECTOR_ID, VECTOR_TS, VECTOR_SIG))
    assert (verified.message_id, verified.timestamp, verified.scheme) == (VECTOR_ID, VECTOR_TS, "v1")


def test_the_reference_library_agrees_with_the_vector() -> None:
    theirs = Webhook(VECTOR_SECRET).sign(VECTOR_ID, datetime.fromtimestamp(VECTOR_TS, UTC), VECTOR_BODY.decode())
    assert theirs == VECTOR_SIG


@settings(max_examples=200)
@given(msg_id=ids, body=st.text(max_size=300))
def test_standardwebhooks_signatures_verify_with_ours(msg_id: str, body: str) -> None:
    now = int(time.time())
    sig = Webhook(VECTOR_SECRET).sign(msg_id, datetime.fromtimestamp(now, UTC), body)
    verified = _fixed(now).verify(body.encode(), _headers(msg_id, now, sig))
    assert verified.message_id == msg_id


@settings(max_examples=200)
@given(msg_id=ids, body=st.text(max_size=300))
def test_our_signatures_verify_with_standardwebhooks(msg_id: str, body: str) -> None:
    now = int(time.time())
    headers = StandardWebhookSigner([VECTOR_SECRET]).headers(msg_id, now, body.encode())
    assert Webhook(VECTOR_SECRET).verify(body.encode(), headers, json_parse=False) is None


def test_standardwebhooks_refuses_our_signature_under_another_secret() -> None:
    now = int(time.time())
    headers = StandardWebhookSigner([OTHER_SECRET]).headers("msg_1", now, b"{}")
    with pytest.raises(WebhookVerificationError):
        Webhook(VECTOR_SECRET).verify(b"{}", headers)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(msg_id=ids, body=bodies, data=st.data())
def test_round_trip_accepts_and_any_byte_flip_is_rejected(msg_id: str, body: bytes, data: st.DataObject) -> None:
    now = int(time.time())
    verifier = _fixed(now)
    headers = StandardWebhookSigner([VECTOR_SECRET]).headers(msg_id, now, body)
    assert verifier.verify(body, headers).message_id == msg_id

    target = data.draw(st.sampled_from(["body", "webhook-id", "webhook-timestamp", "webhook-signature"]))
    original = body if target == "body" else headers[target].encode()
    if not original:
        return
    index = data.draw(st.integers(0, len(original) - 1))
    flip = data.draw(st.integers(1, 255))
    mutated = bytearray(original)
    mutated[index] ^= flip
    tampered_body, tampered = body, dict(headers)
    if target == "body":
        tampered_body = bytes(mutated)
    else:
        tampered[target] = bytes(mutated).decode("latin-1")
    with pytest.raises(SignatureError):
        verifier.verify(tampered_body, tampered)


@settings(max_examples=1000)
@given(headers=st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature",
                                                "Webhook-Signature", "x"]), st.text(max_size=80)),
       body=bodies)
def test_garbage_headers_only_ever_raise_signature_error(headers: dict[str, str], body: bytes) -> None:
    # the reference library raises ValueError / binascii.Error on inputs like these; ours must not
    with pytest.raises(SignatureError):
        _fixed(time.time()).verify(body, headers)


@pytest.mark.parametrize("sig", ["v1", "v1,", "v1,not base64!", "v1,,,", ",", "v1a,%%%", "v2,abc", " "])
def test_malformed_signature_entries_are_refused_not_crashed(sig: str) -> None:
    now = int(time.time())
    with pytest.raises(SignatureError):
        _fixed(now).verify(b"{}", _headers("msg_1", now, sig))


def test_rotation_any_active_secret_and_any_listed_signature_match() -> None:
    now = int(time.time())
    old, new = StandardWebhookSigner([VECTOR_SECRET]), StandardWebhookSigner([OTHER_SECRET])
    verifier = StandardWebhookVerifier([OTHER_SECRET, VECTOR_SECRET], clock=lambda: now)
    assert verifier.verify(b"{}", old.headers("m1", now, b"{}"))
    assert verifier.verify(b"{}", new.headers("m1", now, b"{}"))
    # sender signing with both during rotation; unknown versions and junk are skipped
    both = StandardWebhookSigner([OTHER_SECRET, VECTOR_SECRET]).signature("m1", now, b"{}")
    only_new = StandardWebhookVerifier([OTHER_SECRET], clock=lambda: now)
    assert only_new.verify(b"{}", _headers("m1", now, f"v9,zzz v1a,@@ junk {both}"))


@pytest.mark.parametrize("skew", [-301, 301, -10_000, 10_000])
def test_stale_or_future_timestamps_are_refused(skew: int) -> None:
    now = int(time.time())
    headers = StandardWebhookSigner([VECTOR_SECRET]).headers("m1", now + skew, b"{}")
    with pytest.raises(SignatureError, match="tolerance"):
        _fixed(now).verify(b"{}", headers)
    assert _fixed(now + skew).verify(b"{}", headers)


@pytest.mark.parametrize("tolerance", [0, -1, float("nan")])
def test_tolerance_cannot_be_disabled(tolerance: float) -> None:
    with pytest.raises(ConfigurationError):
        StandardWebhookVerifier([VECTOR_SECRET], tolerance=tolerance)
    with pytest.raises(ConfigurationError):
        CloudSignatureVerifier(["s"], tolerance=tolerance)


def test_verifier_needs_a_secret_or_key_and_valid_base64() -> None:
    with pytest.raises(ConfigurationError):
        StandardWebhookVerifier([])
    with pytest.raises(ConfigurationError, match="base64") as caught:
        StandardWebhookVerifier(["whsec_!!!not-base64!!!"])
    assert "not-base64" not in str(caught.value)


def test_ed25519_v1a_against_trusted_public_keys() -> None:
    now = int(time.time())
    private = Ed25519PrivateKey.generate()
    stranger = Ed25519PrivateKey.generate()
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    verifier = StandardWebhookVerifier(public_keys=["whpk_" + base64.b64encode(raw_public).decode()],
                                       clock=lambda: now)
    headers = StandardWebhookSigner(private_key=private).headers("m1", now, b"{}")
    assert headers["webhook-signature"].startswith("v1a,")
    assert verifier.verify(b"{}", headers).scheme == "v1a"
    with pytest.raises(SignatureError):
        verifier.verify(b"{ }", headers)
    with pytest.raises(SignatureError):
        verifier.verify(b"{}", StandardWebhookSigner(private_key=stranger).headers("m1", now, b"{}"))
    # an HMAC-only verifier skips v1a entries instead of failing on them
    mixed = StandardWebhookSigner([VECTOR_SECRET], private_key=private).headers("m1", now, b"{}")
    assert _fixed(now).verify(b"{}", mixed).scheme == "v1"
    with pytest.raises(ConfigurationError):
        StandardWebhookVerifier(public_keys=["whpk_short"])


@settings(max_examples=300)
@given(body=bodies, data=st.data())
def test_cloud_signature_round_trip_and_tamper(body: bytes, data: st.DataObject) -> None:
    now = int(time.time())
    verifier = CloudSignatureVerifier(["seed-shared-secret"], clock=lambda: now)
    headers = CloudSigner("seed-shared-secret").headers("ignored", now, body)
    first = verifier.verify(body, headers)
    assert first.message_id.startswith("xcs_") and first == verifier.verify(body, headers)
    mutated = bytearray(headers["X-Cloud-Signature"].encode())
    mutated[data.draw(st.integers(0, len(mutated) - 1))] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SignatureError):
        verifier.verify(body, {**headers, "X-Cloud-Signature": mutated.decode("latin-1")})
    if body:
        with pytest.raises(SignatureError):
            verifier.verify(body[:-1], headers)


def test_cloud_signature_rotation_prefix_and_timestamp() -> None:
    now = int(time.time())
    verifier = CloudSignatureVerifier(["new", "old"], clock=lambda: now)
    headers = CloudSigner("old").headers("m", now, b"{}")
    assert verifier.verify(b"{}", {**headers, "X-Cloud-Signature": "sha256=" + headers["X-Cloud-Signature"]})
    with pytest.raises(SignatureError, match="timestamp"):
        verifier.verify(b"{}", {"X-Cloud-Signature": headers["X-Cloud-Signature"]})
    with pytest.raises(SignatureError, match="tolerance"):
        CloudSignatureVerifier(["old"], clock=lambda: now + 3600).verify(b"{}", headers)
    # the timestamp is signed: moving it forward to look fresh breaks the signature
    with pytest.raises(SignatureError):
        verifier.verify(b"{}", {**headers, "X-Cloud-Timestamp": str(now + 1)})


def test_secrets_never_show_in_repr_or_str() -> None:
    raw = "super-secret-value"
    secret = Secret(raw)
    assert raw not in repr(secret) and raw not in str(secret) and raw not in f"{secret!r} {secret}"
    assert secret == Secret(raw) and secret != Secret("other")
    with pytest.raises(TypeError):
        hash(secret)
    for obj in (StandardWebhookVerifier([VECTOR_SECRET]), StandardWebhookSigner([VECTOR_SECRET]),
                CloudSigner(raw), CloudSignatureVerifier([raw])):
        text = repr(obj)
        assert raw not in text and "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in text
    with pytest.raises(ConfigurationError):
        Secret("")


@settings(max_examples=300)
@given(key=st.binary(min_size=1, max_size=200), message=st.binary(max_size=2000))
def test_precomputed_hmac_equals_the_standard_library(key: bytes, message: bytes) -> None:
    import hmac

    from posync.webhooks.signing import _HmacSha256

    assert _HmacSha256(key).digest(message) == hmac.digest(key, message, "sha256")
