"""MinIO bucket notifications: a real-shaped payload parsed into typed events and routed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from posync.errors import InvalidPayloadError, SignatureError
from posync.webhooks import (
    ObjectEventKind,
    ObjectEventRouter,
    ObjectStoreEvent,
    Secret,
    parse_minio_notification,
)


def _record(event_name: str, key: str, **obj: object) -> dict[str, object]:
    """One record as MinIO's webhook target sends it (S3 event structure, eventSource minio:s3)."""
    return {
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
        "eventTime": "2026-02-03T07:26:11.813Z", "eventName": event_name,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "172.17.0.1"},
        "responseElements": {"x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
                             "x-amz-request-id": "1828F1D3D4A5B2C1", "x-minio-origin-endpoint": "http://10.0.0.5:9000"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": "pos-photos", "ownerIdentity": {"principalId": "minioadmin"},
                          "arn": "arn:aws:s3:::pos-photos"},
               "object": {"key": key, "sequencer": "1828F1D3D4B8C9E0", **obj}},
        "source": {"host": "172.17.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"},
    }


PUT = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "pos-photos/products/p1/500ml/front photo.jpg",
    "Records": [_record("s3:ObjectCreated:Put", "products%2Fp1%2F500ml%2Ffront+photo.jpg", size=48213,
                        eTag="2b0cd3c5a8e4a1d0c1a6e9b5d3f2a1c0", contentType="image/jpeg",
                        userMetadata={"content-type": "image/jpeg"})],
}
DELETE = {"EventName": "s3:ObjectRemoved:Delete", "Key": "pos-photos/products/p1/old.jpg",
          "Records": [_record("s3:ObjectRemoved:Delete", "products%2Fp1%2Fold.jpg")]}


def test_created_and_removed_events_are_typed() -> None:
    (created,) = parse_minio_notification(json.dumps(PUT).encode())
    assert created == ObjectStoreEvent(
        kind=ObjectEventKind.CREATED, event_name="s3:ObjectCreated:Put", bucket="pos-photos",
        key="products/p1/500ml/front photo.jpg", size=48213, etag="2b0cd3c5a8e4a1d0c1a6e9b5d3f2a1c0",
        event_time=datetime(2026, 2, 3, 7, 26, 11, 813000, tzinfo=UTC), sequencer="1828F1D3D4B8C9E0")
    (removed,) = parse_minio_notification(DELETE)
    assert (removed.kind, removed.key, removed.size) == (ObjectEventKind.REMOVED, "products/p1/old.jpg", None)


def test_router_filters_and_routes_only_object_changes() -> None:
    seen: list[ObjectStoreEvent] = []
    router = ObjectEventRouter(seen.append, bucket="pos-photos", prefix="products/")
    other = {"EventName": "s3:ObjectAccessed:Get", "Key": "pos-photos/x",
             "Records": [_record("s3:ObjectAccessed:Get", "products%2Fx"),
                         _record("s3:ObjectCreated:CompleteMultipartUpload", "banners%2Fb.jpg")]}
    assert router.handle(json.dumps(PUT).encode()) == 1
    assert router.handle(json.dumps(DELETE).encode()) == 1
    assert router.handle(json.dumps(other).encode()) == 0
    assert [e.kind for e in seen] == [ObjectEventKind.CREATED, ObjectEventKind.REMOVED]


def test_auth_token_is_checked() -> None:
    seen: list[ObjectStoreEvent] = []
    router = ObjectEventRouter(seen.append, auth_token=Secret("minio-webhook-token"))
    body = json.dumps(PUT).encode()
    with pytest.raises(SignatureError):
        router.handle(body, {})
    with pytest.raises(SignatureError):
        router.handle(body, {"Authorization": "Bearer wrong"})
    assert router.handle(body, {"Authorization": "Bearer minio-webhook-token"}) == 1


@pytest.mark.parametrize(("body", "status"), [
    (b"\xff", 400), (b"[]", 400), (b"{}", 422), (b'{"Records": [1]}', 422),
    (json.dumps({"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {}}]}).encode(), 422),
])
def test_malformed_notifications(body: bytes, status: int) -> None:
    with pytest.raises(InvalidPayloadError) as caught:
        parse_minio_notification(body)
    assert caught.value.status == status
