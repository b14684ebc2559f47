"""Signed webhooks between head office and outlets.

Outlet side: a :class:`WebhookReceiver` (pure core) built from verifiers, a :class:`ReceiptStore` on the
outlet's engine and the apply path; mount it with an adapter, imported from its own module so that no web
framework is needed to import this package:

* ``posync.webhooks.asgi.create_asgi_app(receiver)``  -> Starlette app for ``app.mount(...)``
* ``posync.webhooks.flask_adapter.create_blueprint(receiver)``  -> Flask Blueprint
* ``posync.webhooks.wsgi.create_wsgi_app(receiver)``  -> plain WSGI app (e.g. for DispatcherMiddleware)
* ``posync.webhooks.django_adapter.webhook_urlpatterns(receiver)``  -> Django URL patterns

HO side: :class:`WebhookSender` with a :class:`StandardWebhookSigner` or :class:`CloudSigner`.
Object-store notifications (MinIO): :class:`ObjectEventRouter`.
"""

from posync.webhooks.events import EventType, WebhookEvent, parse_event
from posync.webhooks.objectstore import (
    ObjectEventKind,
    ObjectEventRouter,
    ObjectStoreEvent,
    parse_minio_notification,
)
from posync.webhooks.receiver import (
    DEFAULT_MAX_BODY,
    ApplyFn,
    SessionApplyFn,
    WebhookReceiver,
    WebhookRequest,
    WebhookResponse,
)
from posync.webhooks.replay import DEFAULT_RETENTION, ReceiptStore
from posync.webhooks.sender import (
    DeliveryOutcome,
    DeliveryResult,
    SenderRetryPolicy,
    WebhookSender,
)
from posync.webhooks.signing import (
    DEFAULT_TOLERANCE,
    CloudSignatureVerifier,
    CloudSigner,
    Secret,
    Signer,
    StandardWebhookSigner,
    StandardWebhookVerifier,
    VerifiedMessage,
    Verifier,
    load_public_key,
)
from posync.webhooks.source import SourcePolicy

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_RETENTION",
    "DEFAULT_TOLERANCE",
    "ApplyFn",
    "CloudSignatureVerifier",
    "CloudSigner",
    "DeliveryOutcome",
    "DeliveryResult",
    "EventType",
    "ObjectEventKind",
    "ObjectEventRouter",
    "ObjectStoreEvent",
    "ReceiptStore",
    "Secret",
    "SenderRetryPolicy",
    "SessionApplyFn",
    "Signer",
    "SourcePolicy",
    "StandardWebhookSigner",
    "StandardWebhookVerifier",
    "VerifiedMessage",
    "Verifier",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookRequest",
    "WebhookResponse",
    "WebhookSender",
    "load_public_key",
    "parse_event",
    "parse_minio_notification",
]
