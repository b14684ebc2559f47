"""The one place where posync's object graph is built from settings.

    engine = posync.create_engine("sqlite:///pos.db")          # or the host's own engine
    posync.migrations.upgrade(engine)                          # posync's tables
    Session = sessionmaker(engine, class_=sqlmodel.Session)
    sync = Posync(engine, registry, PosyncSettings(api_key="..."), sessionmaker=Session)
    sync.start()      # embedded scheduler and push on commit; or call sync.sync_now() yourself
    ...
    sync.close()      # stops the scheduler and the HTTP client (bounded); never disposes the host's engine

Constructing a ``Posync`` installs the capture triggers on the pushed tables (idempotent): from then on
every write to them is queued by the database itself, also after ``close()``.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from posync import capture, migrations
from posync.capture import ChangeCapture
from posync.db import UnitOfWork, WriteGate
from posync.errors import ClosedError, ConfigurationError, NotFoundError, ProtocolError, StaleWriteError
from posync.ho import HOClient, build_client
from posync.ho.wire import check_records
from posync.models.enums import Op
from posync.registry import Registry
from posync.repositories import (
    CheckpointRepository,
    ConflictRepository,
    EntityRepository,
    LogRepository,
    OutboxRepository,
)
from posync.services import outlet
from posync.services.apply import RemoteApplier, record_version
from posync.services.conflicts import ConflictHandler
from posync.services.manage import SyncManager
from posync.services.pull import PullService
from posync.services.push import PushOptions, PushService
from posync.services.status import CycleOutcome, HealthRules, StatusReport
from posync.settings import PosyncSettings
from posync.workers.commit_watch import CommitWatcher
from posync.workers.leader import SyncerLease
from posync.workers.scheduler import EmbeddedScheduler
from posync.workers.sync_worker import CycleReport, SyncWorker

if TYPE_CHECKING:  # photo replication is loaded only by hosts that use it
    from posync.services.photos.service import PhotoSync

__all__ = ["Posync"]


def _check_profile(registry: Registry, settings: PosyncSettings) -> None:
    if settings.ho_profile != "seed":
        return
    pushed = [e.resource for e in registry if e.direction.pushes and not e.append_only]
    if pushed:
        raise ConfigurationError(f"the seed HO takes no pushed changes, only append-only uploads (seed 004's "
                                 f"usage endpoint): {pushed} need an HO that speaks posync's protocol; register "
                                 "them Direction.PULL, or append_only=True with the upload path")


class Posync:
    """posync in a host app: capture (installed on the engine), push, pull, conflicts, management,
    webhooks and the scheduler, built from ``settings`` for the tables in ``registry``.

    ``sessionmaker``: the host's (or an ``async_sessionmaker`` with a ``sync_session_class``), for the ORM
    hooks. ``photos``: a ``posync.photos.PhotoSync`` to schedule and report with the rest; its write
    transactions then pass this Posync's write gate, unless it was built with a gate. ``clock`` and
    ``transport`` are for tests."""

    def __init__(self, engine: Engine, registry: Registry, settings: PosyncSettings, *,
                 sessionmaker: Any | None = None, clock: Callable[[], float] = time.time,
                 transport: httpx.BaseTransport | None = None, owner: str | None = None,
                 client: HOClient | None = None, photos: PhotoSync | None = None) -> None:
        _check_profile(registry, settings)
        self.engine = engine
        self.registry = registry
        self.settings = settings
        migrations.require_current(engine)
        outlet.check_or_bind(engine, outlet_identity(settings))
        capture.install(engine, registry)
        capture.translate_refusals(engine)
        self.capture = ChangeCapture(registry, clock)
        if sessionmaker is not None:
            self.capture.attach(sessionmaker)
        self._gate = WriteGate()
        if settings.yield_to_host:
            self._gate.attach(engine)
        self._client = client or build_client(settings, transport)
        outbox, entities, logs = OutboxRepository(), EntityRepository(), LogRepository()
        conflicts, checkpoints = ConflictRepository(), CheckpointRepository()
        self._conflict_handler = ConflictHandler(registry, outbox, entities, conflicts, logs, clock,
                                                 ho_clock_offset=lambda: self._client.clock.seconds)
        self._applier = RemoteApplier(outbox, entities, self._conflict_handler, clock)

        def stopping() -> bool:
            return self._worker.stopping

        # who this process is, to the outbox's item leases and to the syncer lease alike
        owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._push = PushService(UnitOfWork(engine, gate=self._gate, pause_gc=settings.pause_gc, clock=clock),
                                 registry, self._client, outbox, entities, self._conflict_handler, logs,
                                 PushOptions(retry=settings.retry_policy(), owner=owner,
                                             lease_seconds=settings.lease_seconds, batch_size=settings.push_batch_size),
                                 stopping=stopping)
        self._pull = PullService(engine, registry, self._client, self._applier, checkpoints, entities, logs,
                                 outbox=outbox, page_size=settings.pull_page_size,
                                 apply_chunk=settings.apply_chunk_size, since_overlap=settings.since_overlap_seconds,
                                 clock=clock, pause_gc=settings.pause_gc, gate=self._gate,
                                 backoff=settings.outage_policy(), stopping=stopping)
        # an HO that never reports deletes (seed 004) gets the id reconciliation on a schedule
        reconcile_every = settings.reconcile_interval_seconds if settings.ho_profile == "seed" else None
        self._worker = SyncWorker(self._push, self._pull, outage=settings.outage_policy(), idle=settings.idle_polling(),
                                  reconcile_every=reconcile_every,
                                  reconcile_max_delete_fraction=settings.reconcile_max_delete_fraction,
                                  on_cycle=self._record_cycle)
        self.manager = SyncManager(engine, registry, outbox, entities, conflicts, logs, checkpoints,
                                   self._conflict_handler, clock, gate=self._gate, worker=self._worker, pull=self._pull,
                                   rules=HealthRules(settings.health_window_seconds, settings.health_max_failure_rate,
                                                     settings.health_max_silence_seconds))
        self.manager.outlet_status.next_runs = self._next_runs
        # a posync.photos.PhotoSync (build_photo_sync): scheduled with the sync cycle, shown in status;
        # the host built it and closes it
        self.photos = photos
        self._lease = SyncerLease(engine, owner, seconds=settings.syncer_lease_seconds, clock=clock) \
            if settings.single_syncer else None
        self.manager.photos = photos
        if photos is not None and photos.gate is None:  # its writes go after the till's, as push's and pull's
            photos.gate = self._gate
        self._scheduler: EmbeddedScheduler | None = None
        # the outlet's sync switch (posync_outlet.sync_enabled): off, no sync job and no push runs
        self._switch = outlet.SyncSwitch(engine, fixed=settings.sync_enabled_given)
        # push on commit: built here, so its commit listener joins the host's engine before the host's threads
        # commit on it (a listener added or removed during a commit makes that commit fail)
        self._watcher = self._commit_watcher() if settings.push_on_commit else None
        self._receipts: Any | None = None
        self._closed = False

    # -- running ---------------------------------------------------------------------------------------

    def _open(self) -> None:
        if self._closed:
            raise ClosedError("this Posync is closed; changes are still captured in the database, and a new "
                              "Posync(...) syncs them")

    def sync_now(self) -> CycleReport:
        """One full cycle now (push, pull, push), ignoring any backoff. HO's problems are reported in the
        answer, never raised."""
        self._open()
        return self._worker.run_cycle(force=True)

    def sync_here_or_ask(self) -> CycleReport | None:
        """A cycle now, where the outlet syncs: here when this process is the outlet's syncer (or has no
        scheduler), else the syncer is asked through the database and this returns None at once (an
        operator's "sync now" from any worker of a multi-worker server)."""
        self._open()
        if self._scheduler is not None and not self._scheduler.syncer:
            assert self._lease is not None
            self._lease.ask_for_cycle()
            return None
        return self._worker.run_cycle(force=True)

    def start(self, scheduler: Any | None = None) -> None:
        """Start the embedded scheduler (or add the job to the host's APScheduler)."""
        self._open()
        if self._scheduler is None:
            from posync.workers.schedule import outlet_schedule  # APScheduler's triggers: only once started

            if self._watcher is not None and self._watcher.stopped:  # started again after stop()
                self._watcher = self._commit_watcher()
            scheduler_ = EmbeddedScheduler(self._worker, self.settings.sync_interval_seconds, scheduler,
                                           housekeeping=self.housekeeping, photos=self.photos,
                                           lease=self._lease, renew_seconds=self.settings.syncer_renew_seconds,
                                           enabled=self._switch, watcher=self._watcher,
                                           schedule=outlet_schedule(self.settings))
            scheduler_.start()
            self._scheduler = scheduler_  # only once it runs: a start() that failed may be called again

    def _commit_watcher(self) -> CommitWatcher:
        lease, switch = self._lease, self._switch
        return CommitWatcher(self.engine, self._worker, interval=self.settings.push_watch_interval_seconds,
                             active=lambda: (lease is None or lease.held) and switch())

    def trigger(self) -> None:
        """A cycle soon: here if this process is the outlet's syncer, else by the syncer (asked through the
        database; it runs one within ``syncer_renew_seconds``). Without a started scheduler: one now, here."""
        self._open()
        if self._scheduler is None:
            self.sync_now()
        elif self._scheduler.syncer:
            self._scheduler.trigger()
        else:
            assert self._lease is not None
            self._lease.ask_for_cycle()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None

    def close(self, timeout: float | None = None) -> None:
        """Stop syncing: the scheduler, a running cycle (asked to finish, waited for at most ``timeout``,
        default ``settings.close_timeout``) and the HTTP client. Capture goes on in the database; the
        host's engine is the host's. Idempotent.

        A cycle still on the wire after ``timeout`` is left to finish its request (at most
        ``request_timeout``) and settle HO's answer, in its own thread; the client closes after it. Cutting
        it off would lose an answer HO already committed, and a seed HO would count that upload twice."""
        if self._closed:
            return
        self._closed = True
        started = self._scheduler is not None
        watcher = self._watcher
        self.stop()
        if watcher is not None:  # never started, or started: its listener does nothing from now on
            watcher.stop()
        budget = self.settings.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        idle = self._worker.stop(budget)
        if watcher is not None:  # its push (if any) is over or cut off: the thread ends at once
            watcher.join(deadline - time.monotonic())
        if started and self._lease is not None:
            # the next syncer takes over at once; when nothing of ours is on the wire, what we claimed and
            # did not send is due again now (else it is given back when the next syncer takes over)
            self._lease.release(give_back=idle)
        self._worker.when_idle(self._client.close)

    def __enter__(self) -> Posync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operating ---------------------------------------------------------------------------------------

    def status(self, *, check_ho: bool = False) -> StatusReport:
        """The outlet's status and health (seed 003's metrics), the same from every worker process: read
        from the outlet database. ``check_ho``: also a live call to HO's version endpoint (bounded by
        ``request_timeout``), whose answer decides ``online``, ``auth_error`` and ``ho``."""
        return self.manager.status(check_ho=check_ho)

    def _next_runs(self) -> dict[str, Any]:
        # the outlet's schedule, the same whichever worker answers (only the syncer runs the jobs)
        return self._scheduler.next_runs() if self._scheduler is not None else {}

    def _record_cycle(self, worker: SyncWorker, report: CycleReport | None) -> None:
        """The syncer's state after a run and, after a cycle, its record (what status's metrics count). A
        probe of an HO still away is no cycle: an hour's outage is one failed cycle, not 180 failed probes
        that would hold the failure rate over its threshold for an hour after HO is back."""
        cycle = None
        if report is not None and report.ran:
            failed = "; ".join(f"{name}: {error}" for name, error in report.pull.failed.items())
            cycle = CycleOutcome(report.error or (f"pull failed for {failed}" if failed else None), report.duration,
                                 report.push.applied + report.pull.applied.written + report.pull.applied.deleted)
        self.manager.record_cycle(online=worker.online, last_error=worker.last_error, auth_error=worker.auth_error,
                                  cycle=cycle, last_error_kind=worker.last_error_kind)

    def reconcile(self, resource: str | None = None, *, force: bool = False) -> list[Any]:
        """The id reconciliation now (deletes HO never reported): one resource or every pulled one."""
        self._open()
        return self._pull.reconcile(resource, force=force,
                                   max_delete_fraction=self.settings.reconcile_max_delete_fraction)

    def reset_checkpoint(self, resource: str | None = None) -> list[str]:
        """Forget where a resource's pulls stand (default: all): the next pull reads it in full."""
        return self._pull.reset(resource)

    def enqueue(self, conn: Connection, resource: str, entity_ids: Iterable[str], op: Op | str = Op.UPDATE) -> int:
        """Queue a push of these entities as they are now (``posync.capture.enqueue``). Rarely needed:
        every write, raw SQL included, is captured by the database."""
        return capture.enqueue(conn, self.registry[resource], entity_ids, op)

    # -- webhooks (HO -> outlet) -------------------------------------------------------------------------

    def webhook_receiver(self, verifiers: Sequence[Any], *, sources: Any | None = None,
                         max_body_bytes: int | None = None) -> Any:
        """A ``posync.webhooks.WebhookReceiver`` whose events go through the same apply path as pull
        (same versions, same conflict strategies). The replay receipt and the change commit together.
        Against the seed HO an event's record is shaped like its pull records: no version, ``updated_at``
        required. Mount it with ``posync.webhooks.asgi.create_asgi_app`` (or the Flask/Django/WSGI adapters)."""
        from posync.webhooks import DEFAULT_MAX_BODY, ReceiptStore, WebhookReceiver

        self._receipts = ReceiptStore(self.engine)
        return WebhookReceiver(verifiers, self._receipts, apply_in_session=self.apply_webhook, sources=sources,
                               max_body_bytes=DEFAULT_MAX_BODY if max_body_bytes is None else max_body_bytes,
                               versioned=self.settings.ho_profile != "seed")

    def apply_webhook(self, event: Any, session: Session) -> None:
        """Apply one verified webhook event inside ``session``'s transaction (the receipt's)."""
        resource = str(event.resource)
        if resource not in self.registry or not self.registry[resource].direction.pulls:
            raise NotFoundError("pulled resource", resource)
        entity = self.registry[resource]
        record = dict(event.record)
        check_records([record], f"webhook {event.type}")
        seed = self.settings.ho_profile == "seed"
        if seed:
            # as the seed pull: the version derives from updated_at (a counter HO may send is on another scale)
            record.pop("version", None)
            if str(event.type) == "delete" and record.get("deleted_at") is not None:
                # the delete came at deleted_at, after the row's last save (an updated_at sent beside it)
                record["version"] = record_version({"id": record.get("id"), "updated_at": record["deleted_at"]})
        if record_version(record) is None:
            raise ProtocolError("a webhook record from the seed HO needs updated_at (posync derives its version "
                                "from it)" if seed else "a webhook record needs a version (or an updated_at)")
        conn = session.connection()
        if str(event.type) == "delete":
            self._applier.apply(conn, entity, [], [record], source="webhook")
        else:  # "update", and "conflict" (HO telling us its side): both are HO's current record
            self._applier.apply(conn, entity, [record], source="webhook")

    def housekeeping(self) -> None:
        """Periodic clean-up (the syncer's, hourly): forget webhook receipts older than their retention
        window, and sync log rows older than ``log_retention_days`` (the metrics keep their totals)."""
        if self._receipts is not None:
            self._receipts.purge()
        self.manager.purge_logs(self.settings.log_retention_days)

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


def outlet_identity(settings: PosyncSettings) -> outlet.OutletIdentity:
    """What binds a database to the outlet ``settings`` name (HO's URL without a trailing slash)."""
    return outlet.OutletIdentity(settings.outlet_id, settings.company_id, settings.effective_store_id,
                                 settings.ho_url.rstrip("/"))


def rebind_outlet(engine: Engine, settings: PosyncSettings) -> outlet.OutletIdentity | None:
    """Bind the database to the outlet ``settings`` name, on purpose (the outlet moved, HO's address
    changed); returns what it was bound to. Its queued changes go to HO under the new identity."""
    return outlet.rebind(engine, outlet_identity(settings))
