"""The one place where posync's object graph is built from settings.

    engine = posync.create_engine("sqlite:///pos.db")          # or the host's own engine
    Session = sessionmaker(engine, class_=sqlmodel.Session)
    sync = Posync(engine, registry, PosyncSettings(api_key="..."), sessionmaker=Session)
    sync.start()      # embedded scheduler; or call sync.sync_now() yourself
    ...
    sync.close()      # stops the scheduler and the HTTP client; never disposes the host's engine
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from posync.capture import ChangeCapture
from posync.errors import NotFoundError, ProtocolError, StaleWriteError
from posync.registry import Registry
from posync.repositories import (
    CheckpointRepository,
    ConflictRepository,
    EntityRepository,
    LogRepository,
    OutboxRepository,
)
from posync.services.apply import RemoteApplier
from posync.services.conflicts import ConflictHandler
from posync.services.manage import SyncManager
from posync.services.pull import PullService
from posync.services.push import PushService
from posync.settings import PosyncSettings
from posync.transport import ApiKeyAuth, HOClient, JwtAuth
from posync.workers.scheduler import EmbeddedScheduler
from posync.workers.sync_worker import CycleReport, SyncWorker

__all__ = ["Posync"]


def _auth(settings: PosyncSettings) -> httpx.Auth:
    if settings.api_key is not None:
        return ApiKeyAuth(settings.api_key, settings.outlet_id)
    assert settings.username and settings.password  # checked by PosyncSettings
    token_url = settings.ho_url.rstrip("/") + settings.token_path
    return JwtAuth(token_url, settings.username, settings.password, settings.outlet_id)


class Posync:
    def __init__(self, engine: Engine, registry: Registry, settings: PosyncSettings, *,
                 sessionmaker: Any | None = None, clock: Callable[[], float] = time.time,
                 transport: httpx.BaseTransport | None = None, owner: str | None = None) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings
        self.capture = ChangeCapture(registry, clock)
        if sessionmaker is not None:
            self.capture.attach(sessionmaker)
        self.client = HOClient(settings.ho_url, _auth(settings), outlet_id=settings.outlet_id,
                               company_id=settings.company_id, store_id=settings.effective_store_id,
                               timeout=settings.request_timeout, transport=transport)
        outbox, entities, logs = OutboxRepository(), EntityRepository(), LogRepository()
        conflicts, checkpoints = ConflictRepository(), CheckpointRepository()
        self.conflict_handler = ConflictHandler(registry, outbox, entities, conflicts, logs, clock)
        self.applier = RemoteApplier(outbox, entities, self.conflict_handler, clock)
        self.push = PushService(engine, registry, self.client, outbox, entities, self.conflict_handler, logs,
                                retry=settings.retry_policy(), clock=clock, owner=owner,
                                lease_seconds=settings.lease_seconds, batch_size=settings.push_batch_size,
                                pause_gc=settings.pause_gc)
        self.pull = PullService(engine, registry, self.client, self.applier, checkpoints, entities, logs,
                                page_size=settings.pull_page_size, clock=clock, pause_gc=settings.pause_gc)
        self.manager = SyncManager(engine, registry, outbox, entities, conflicts, logs, checkpoints,
                                   self.conflict_handler, clock)
        self.worker = SyncWorker(self.push, self.pull, outage=settings.outage_policy(), clock=clock)
        self._scheduler: EmbeddedScheduler | None = None
        self._receipts: Any | None = None

    # -- running ---------------------------------------------------------------------------------------

    def sync_now(self) -> CycleReport:
        """One full cycle now (push, pull, push), ignoring any outage backoff."""
        return self.worker.run_cycle(force=True)

    def start(self, scheduler: Any | None = None) -> None:
        """Start the embedded scheduler (or add the job to the host's APScheduler)."""
        if self._scheduler is None:
            self._scheduler = EmbeddedScheduler(self.worker, self.settings.sync_interval_seconds, scheduler,
                                                housekeeping=self.housekeeping)
            self._scheduler.start()

    def trigger(self) -> None:
        if self._scheduler is not None:
            self._scheduler.trigger()
        else:
            self.sync_now()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None

    def close(self) -> None:
        self.stop()
        self.capture.detach()
        self.client.close()

    def __enter__(self) -> Posync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- webhooks (HO -> outlet) -------------------------------------------------------------------------

    def webhook_receiver(self, verifiers: Sequence[Any], *, sources: Any | None = None,
                         max_body_bytes: int | None = None) -> Any:
        """A ``posync.webhooks.WebhookReceiver`` whose events go through the same apply path as pull
        (same versions, same conflict strategies). The replay receipt and the change commit together.
        Mount it with ``posync.webhooks.asgi.create_asgi_app`` (or the Flask/Django/WSGI adapters)."""
        from posync.webhooks import DEFAULT_MAX_BODY, ReceiptStore, WebhookReceiver

        self._receipts = ReceiptStore(self.engine)
        return WebhookReceiver(verifiers, self._receipts, apply_in_session=self.apply_webhook, sources=sources,
                               max_body_bytes=DEFAULT_MAX_BODY if max_body_bytes is None else max_body_bytes)

    def apply_webhook(self, event: Any, session: Session) -> None:
        """Apply one verified webhook event inside ``session``'s transaction (the receipt's)."""
        resource = str(event.resource)
        if resource not in self.registry or not self.registry[resource].direction.pulls:
            raise NotFoundError("pulled resource", resource)
        entity = self.registry[resource]
        record = dict(event.record)
        if "id" not in record or not isinstance(record.get("version"), int):
            raise ProtocolError("a webhook record needs an id and an integer version")
        conn = session.connection()
        if str(event.type) == "delete":
            self.applier.apply(conn, entity, [], [record], source="webhook")
        else:  # "update", and "conflict" (HO telling us its side): both are HO's current record
            self.applier.apply(conn, entity, [record], source="webhook")

    def housekeeping(self) -> None:
        """Periodic clean-up: forget webhook receipts older than their retention window."""
        if self._receipts is not None:
            self._receipts.purge()

    # -- host-side helpers -----------------------------------------------------------------------------

    @contextmanager
    def unit_of_work(self, session_factory: Callable[[], Session]) -> Iterator[Session]:
        """A session that commits on success, rolls back otherwise, and reports a lost optimistic lock
        as ``StaleWriteError``."""
        with session_factory() as session:
            try:
                yield session
                session.commit()
            except StaleDataError as exc:
                session.rollback()
                table = re.search(r"table '([^']+)'", str(exc))
                raise StaleWriteError(table.group(1) if table else "?", None, str(exc).split(";")[0]) from exc
            except BaseException:
                session.rollback()
                raise

    def __repr__(self) -> str:
        return f"Posync(ho_url={self.settings.ho_url!r}, outlet_id={self.settings.outlet_id!r})"
