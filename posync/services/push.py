"""Push: claim a batch from the outbox, send it to HO, settle each result.

Claiming (one transaction): reclaim expired leases; take due items oldest first; per entity only the
head (earliest outstanding item) and only if nothing of that entity is in flight or set aside; fold the
head's never-sent followers into one change (``coalesce``); read the row to send; freeze change + key
under a lease. Sending happens outside any transaction. Settling (one transaction) only touches items
whose lease we still hold.

Failure handling:
- HO unreachable / 429 / 503 / truncated answer: leases released untouched (same key, same payload,
  no attempt counted); the caller backs off. An outage never dead-letters anything.
- 500 on a batch: HO's version endpoint is asked whether HO is up at all. If not, it is an outage (as
  above). If it is, some change in the batch makes HO fail: the batch is bisected until the culprit
  stands alone; it counts a failed attempt, the rest are settled normally.
- per-change ``rejected``: ``retryable`` -> RetryPolicy decides (backoff or dead); otherwise dead at once.
  A dead change blocks only its own entity.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection, Engine

from posync import _gc
from posync.db import WriteGate, write_transaction
from posync.errors import HOErrorResponse, HOUnavailableError, TransportError
from posync.ho import HOClient, PushResult, Upload
from posync.models.enums import ItemStatus, LogKind, Op, PushOutcome, SyncStatus
from posync.registry import Registry
from posync.repositories import EntityRepository, LogRepository, OutboxRepository
from posync.retry import RetryPolicy
from posync.services.coalesce import coalesce
from posync.services.conflicts import ConflictHandler, remote_current

__all__ = ["Lease", "PushService", "PushStats"]

log = logging.getLogger("posync.push")

_OP_BY_VALUE = {op.value: op for op in Op}  # a dict lookup: Op(value) costs microseconds, per claimed item
_ACCEPTED = frozenset({PushOutcome.APPLIED, PushOutcome.DUPLICATE})
# A claim reads at most this many due items per change it may claim (items it cannot claim: entities in
# flight or waiting out a backoff), so that its cost stays O(batch) whatever the queue holds
_MAX_SCAN = 4
# A drain's batches claimed and not yet settled, at most: one on the wire, the rest queued behind it
_QUEUED = 3
# the largest batch while the host writes on the same SQLite file: its claim and its settle take a few
# milliseconds each (bench/bench_host_latency.py)
BUSY_BATCH = 100
_PENDING, _INFLIGHT = ItemStatus.PENDING.value, ItemStatus.INFLIGHT.value
_SET_ASIDE = frozenset({ItemStatus.DEAD.value, ItemStatus.CONFLICT.value, ItemStatus.BLOCKED.value})


class Lease(NamedTuple):
    item_id: int
    resource: str
    entity_id: str
    op: Op
    change: dict[str, Any]  # exactly what is sent (frozen at the first claim)
    pushed_version: int | None  # the row's local version that this change carries
    attempts: int
    append_only: bool


@dataclass
class PushStats:
    batches: int = 0
    sent: int = 0
    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    coalesced_away: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: PushStats) -> None:
        for name in ("batches", "sent", "applied", "duplicates", "conflicts", "rejected", "coalesced_away"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)


class PushService:
    def __init__(self, engine: Engine, registry: Registry, client: HOClient, outbox: OutboxRepository,
                 entities: EntityRepository, handler: ConflictHandler, logs: LogRepository, *,
                 retry: RetryPolicy, clock: Callable[[], float] = time.time, owner: str | None = None,
                 lease_seconds: float = 60.0, batch_size: int = 500, rng: random.Random | None = None,
                 pause_gc: bool = False, gate: WriteGate | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self._engine = engine
        self._registry = registry
        self._client = client
        self._outbox = outbox
        self._entities = entities
        self._handler = handler
        self._logs = logs
        self._retry = retry
        self._clock = clock
        self.owner = owner or f"posync-{uuid.uuid4().hex[:12]}"
        self._lease_seconds = lease_seconds
        self._batch_size = batch_size
        self._rng = rng or random.Random()
        self._pause_gc = pause_gc
        self._gate = gate or WriteGate()
        self._stopping = stopping
        # an item due later than this was scheduled under a clock since set back (bring_forward)
        self._horizon = retry.max_backoff + lease_seconds + 60.0

    # -- claim -------------------------------------------------------------------------------------

    def claim(self, limit: int | None = None) -> tuple[list[Lease], int]:
        """Lease up to ``limit`` changes (one per entity). Returns the leases and how many queued items
        folded into nothing (a create and delete that HO never needs to see)."""
        with self._transaction() as conn:
            return self._claim(conn, limit or self._batch_size, self._clock())

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction for a batch's database work: after the host's waiting writes (posync/db.py),
        with the cyclic GC held off if asked (posync/_gc.py)."""
        with self._gate.posync(), _gc.paused(self._pause_gc), write_transaction(self._engine) as conn:
            yield conn

    def _claim(self, conn: Connection, limit: int, now: float) -> tuple[list[Lease], int]:
        self._outbox.reclaim_expired_leases(conn, now, self._lease_seconds)
        self._outbox.bring_forward(conn, now, self._horizon)
        groups: list[tuple[list[Any], Op | None]] = []
        to_block: list[int] = []
        seen: set[tuple[str, str]] = set()
        after: tuple[float, int] | None = None
        scanned = 0
        # The oldest due items, a window at a time: most are claimable, so the first window of ``limit``
        # usually fills the batch. Later windows make up for entities that were not (in flight, waiting).
        while len(groups) < limit and scanned < _MAX_SCAN * limit:
            want = limit - len(groups)
            due = self._outbox.due(conn, now, want, after)
            if not due:
                break
            scanned += len(due)
            after = (due[-1][0]["available_at"], due[-1][0]["id"])
            alone: dict[tuple[str, str], dict[str, Any]] = {}  # an entity's only unsettled item
            keys: list[tuple[str, str]] = []
            for item, is_alone in due:
                key = (item["resource"], item["entity_id"])
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
                    if is_alone:
                        alone[key] = item
            keys = self._outbox.lock_entities(conn, keys)
            outstanding = self._outbox.outstanding(conn, [key for key in keys if key not in alone])
            for key in keys:
                only = alone.get(key)
                if only is not None:  # pending and due (the scan's filter), nothing before or after it
                    groups.append(([only], _OP_BY_VALUE[only["op"]]))
                else:
                    _take(outstanding.get(key, []), now, groups, to_block)
            if len(due) < want:
                break
        self._outbox.set_status(conn, to_block, ItemStatus.BLOCKED)
        return self._lease(conn, groups, now)

    def _lease(self, conn: Connection, groups: list[tuple[list[Any], Op | None]],
               now: float) -> tuple[list[Lease], int]:
        entities = {res: self._registry[res] for res in {items[0]["resource"] for items, _ in groups}
                    if res in self._registry}
        to_read: dict[str, list[str]] = defaultdict(list)
        for items, op in groups:
            head = items[0]
            if head["idempotency_key"] is None and op in (Op.CREATE, Op.UPDATE) and head["resource"] in entities:
                to_read[head["resource"]].append(head["entity_id"])
        rows = {res: self._entities.push_rows(conn, entities[res], ids) for res, ids in to_read.items()}
        lease_until = now + self._lease_seconds
        leases: list[Lease] = []
        heads: list[tuple[int, dict[str, Any], int | None]] = []
        keys = _idempotency_keys(len(groups))
        folded: list[int] = []
        nothing: list[int] = []
        unknown: list[int] = []
        vanished: list[int] = []
        for items, op in groups:
            head = items[0]
            resource, entity_id = head["resource"], head["entity_id"]
            entity = entities.get(resource)
            if entity is None:
                unknown.append(head["id"])
                continue
            if head["idempotency_key"] is not None:  # a resend: the frozen change, as it was
                change, pushed_version, op = head["payload"], head["entity_version"], _OP_BY_VALUE[head["op"]]
            elif op is None:
                nothing += [i["id"] for i in items]
                continue
            else:
                # the run's base: HO's version the first unsent change was made on (captured by the
                # database at that change, re-based when an earlier change of the entity settled)
                base = head["base_version"]
                if op is Op.DELETE:
                    data, pushed_version = None, None
                else:
                    row = rows[resource].get(entity_id)
                    if row is None:  # the row is gone but no delete was captured (capture suppressed?)
                        vanished += [i["id"] for i in items]
                        continue
                    data, pushed_version, _ = row
                change = {
                    "idempotency_key": next(keys), "resource": resource, "entity_id": entity_id,
                    # a create's base is None for a new entity, or the tombstone's version when it
                    # re-creates one HO deleted (protocol.md)
                    "op": op.value, "base_version": base,
                    "changed_at": _iso(items[-1]["changed_at"]), "data": data,
                }
                if len(items) > 1:
                    folded += [i["id"] for i in items[1:]]
            heads.append((head["id"], change, pushed_version))
            leases.append(Lease(head["id"], resource, entity_id, op, change, pushed_version, head["attempts"],
                                entity.append_only))
        self._outbox.lease(conn, heads, self.owner, lease_until)
        self._outbox.delete(conn, folded + nothing + vanished)
        self._outbox.set_status(conn, unknown, ItemStatus.DEAD, error="resource is not registered")
        if nothing:
            self._logs.add(conn, LogKind.COALESCED, _dt(now), count=len(nothing),
                           detail="created and deleted before HO saw them: nothing to send")
        if vanished:
            log.warning("%d queued changes refer to rows that are gone without a captured delete; dropped",
                        len(vanished))
            self._logs.add(conn, LogKind.DROPPED, _dt(now), count=len(vanished),
                           detail="rows gone without a captured delete")
        return leases, len(nothing)

    # -- send + settle -----------------------------------------------------------------------------

    def push_once(self) -> PushStats:
        """Claim one batch, send it, settle it. Raises TransportError (after giving the batch back)
        when HO cannot be reached or understood."""
        leases, nothing = self.claim()
        stats = PushStats(coalesced_away=nothing)
        if not leases:
            return stats
        started = time.perf_counter()
        try:
            outcome = self._deliver(leases, healthy=None)
        except TransportError:
            self._give_back(leases)
            raise
        stats.batches, stats.sent = 1, len(leases)
        self._settle(leases, [outcome[lease.item_id] for lease in leases], stats,
                     (time.perf_counter() - started) * 1000)
        return stats

    def _deliver(self, leases: list[Lease], healthy: bool | None) -> dict[int, PushResult]:
        """Send ``leases``; on a 500, tell an outage from a poison change and isolate the latter."""
        try:
            return {lease.item_id: result for lease, result in zip(leases, self._send(leases), strict=True)}
        except HOUnavailableError as exc:
            if exc.status != 500:
                raise
            if healthy is None:
                healthy = self._ho_answers()
            if not healthy:
                raise  # HO fails on everything: an outage, nobody's fault
            if len(leases) == 1:
                return {leases[0].item_id: PushResult(status=PushOutcome.SERVER_ERROR,
                                                      reason=f"HO failed on this change: {exc}")}
            mid = len(leases) // 2
            return self._deliver(leases[:mid], healthy) | self._deliver(leases[mid:], healthy)

    def _ho_answers(self) -> bool:
        """Is HO up at all (its version endpoint answers)?"""
        try:
            self._client.version()
        except (TransportError, HOErrorResponse):
            return False
        return True

    def drain(self, max_batches: int | None = None) -> PushStats:
        """Push until nothing is due (or ``max_batches``). An error (TransportError: HO unreachable)
        propagates to the caller after every batch not yet settled has been given back.

        Pipelined: batches queue for one wire thread, up to ``_QUEUED`` claimed and unsettled at a time
        (never two of one entity: an entity in flight is not claimed). The wire takes the next batch the
        moment it is done with one; meanwhile this thread settles what came back and claims more, so
        the outlet's database work overlaps HO's and neither waits on the other's slow batch. Settling
        one batch and claiming another share a transaction: one commit, not two. While the oldest
        batch is still on the wire, this thread claims ahead rather than wait. A stop request
        (``close()``) claims nothing more; what is queued is finished or given back."""
        total = PushStats()
        queue: deque[tuple[list[Lease], Future[tuple[dict[int, PushResult], float]]]] = deque()
        claimed = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="posync-push") as wire:

            def room() -> bool:
                return (len(queue) < _QUEUED and (max_batches is None or claimed < max_batches)
                        and not self._stopping())

            def submit(batch: list[Lease]) -> None:
                nonlocal claimed
                claimed += 1
                queue.append((batch, wire.submit(self._timed_deliver, batch)))

            with self._transaction() as conn:
                first = self._claim_some(conn, total)
            if first:
                submit(first)
            exhausted = not first  # a claim found nothing due: finish what is queued, claim no more
            try:
                while queue:
                    batch, sent = queue[0]
                    while not sent.done() and not exhausted and room():
                        with self._transaction() as conn:  # the wire is busy: claim ahead instead of waiting
                            ahead = self._claim_some(conn, total)
                        if not ahead:
                            break  # maybe only followers of batches in flight: try again after a settle
                        submit(ahead)
                    outcome, elapsed_ms = sent.result()
                    queue.popleft()
                    stats = PushStats(batches=1, sent=len(batch))
                    following: list[Lease] = []
                    with self._transaction() as conn:
                        self._record(conn, batch, [outcome[lease.item_id] for lease in batch], stats, elapsed_ms)
                        # one commit for both, unless the till is writing: then two short transactions
                        if not exhausted and room() and not self._gate.host_busy():
                            following = self._claim_some(conn, total)
                            exhausted = not following
                    if not following and not exhausted and room():
                        with self._transaction() as conn:
                            following = self._claim_some(conn, total)
                            exhausted = not following
                    if following:
                        submit(following)
                    total.add(stats)
            except BaseException:
                # HO unreachable (or anything else): nothing queued goes out any more, and every batch
                # still queued goes back untouched, sent or not (a resend of one HO applied is a
                # duplicate). A batch whose settle failed keeps its lease until it runs out.
                for _, later in queue:
                    later.cancel()
                wait([later for _, later in queue])
                self._give_back([lease for unsettled, _ in queue for lease in unsettled])
                raise
        return total

    def _timed_deliver(self, leases: list[Lease]) -> tuple[dict[int, PushResult], float]:
        """:meth:`_deliver` on the wire thread, with how long HO took (ms) for the sync log."""
        started = time.perf_counter()
        outcome = self._deliver(leases, healthy=None)
        return outcome, (time.perf_counter() - started) * 1000

    def _claim_some(self, conn: Connection, total: PushStats) -> list[Lease]:
        """Claim a batch, passing over rounds that only folded changes into nothing. While the till is
        writing (posync/db.py), batches are small: each of posync's write transactions stays short."""
        size = min(self._batch_size, BUSY_BATCH) if self._gate.host_busy() else self._batch_size
        while True:
            leases, nothing = self._claim(conn, size, self._clock())
            total.coalesced_away += nothing
            if leases or not nothing:
                return leases

    def _send(self, leases: list[Lease]) -> list[PushResult]:
        """Changes to HO's push endpoint; append-only records to their resource's upload endpoint."""
        regular = [lease for lease in leases if not lease.append_only]
        by_key: dict[str, PushResult] = {}
        if regular:
            changes = [lease.change for lease in regular]
            by_key.update(zip((c["idempotency_key"] for c in changes), self._client.push(changes), strict=True))
        uploads: dict[str, list[Lease]] = defaultdict(list)
        for lease in leases:
            if lease.append_only:
                uploads[lease.resource].append(lease)
        for resource, group in uploads.items():
            items = [Upload(lease.change["idempotency_key"], lease.change["data"] or {}) for lease in group]
            by_key.update(zip((i.key for i in items), self._client.upload(self._registry[resource], items),
                              strict=True))
        return [by_key[lease.change["idempotency_key"]] for lease in leases]

    def _give_back(self, leases: list[Lease]) -> None:
        """HO unreachable or unreadable: the batch goes back untouched (same keys, no attempt counted).
        Changes HO may have applied meanwhile answer ``duplicate`` when they are resent."""
        with self._transaction() as conn:
            self._outbox.release(conn, [lease.item_id for lease in leases], self.owner, self._clock())

    def _settle(self, leases: list[Lease], results: list[PushResult], stats: PushStats,
                duration_ms: float) -> None:
        """Record HO's answers in a transaction of their own."""
        with self._transaction() as conn:
            self._record(conn, leases, results, stats, duration_ms)

    def _record(self, conn: Connection, leases: list[Lease], results: list[PushResult], stats: PushStats,
                duration_ms: float) -> None:
        """Record HO's answers, for the changes whose lease we still hold (a lease that ran out belongs
        to another worker now). Accepted changes are deleted from the outbox in the same statement
        that checks the lease."""
        now = self._clock()
        accepted_ids = [lease.item_id for lease, result in zip(leases, results, strict=True)
                        if result.status in _ACCEPTED]
        done = self._outbox.delete_leased(conn, accepted_ids, self.owner)
        others = [lease.item_id for lease in leases if lease.item_id not in done]
        held = done | self._outbox.still_leased(conn, others, self.owner) if others else done
        accepted: dict[str, list[tuple[str, int, int | None]]] = defaultdict(list)
        rebases: list[tuple[str, str, int]] = []
        applied = duplicates = 0
        for lease, result in zip(leases, results, strict=True):
            if lease.item_id not in held:
                continue  # our lease ran out and another worker owns this change now
            status = result.status
            if status in _ACCEPTED:
                if status == PushOutcome.APPLIED:
                    applied += 1
                else:
                    duplicates += 1
                version = result.cloud_version
                if lease.append_only:  # HO has it (an HO without versions says so by accepting it)
                    accepted[lease.resource].append((lease.entity_id, version or 1, lease.pushed_version))
                elif version is not None:
                    if lease.op is not Op.DELETE:
                        accepted[lease.resource].append((lease.entity_id, version, lease.pushed_version))
                    rebases.append((lease.resource, lease.entity_id, version))
            elif status == PushOutcome.CONFLICT and result.current is not None and result.current.deleted \
                    and lease.op is Op.CREATE:
                # HO has the key as a tombstone (the outlet deleted it earlier, or someone did): nothing of
                # HO's is lost by a new life of it, whatever the strategy. Resent based on the tombstone,
                # under a new key (the payload changes); not a failed attempt.
                self._outbox.reset(conn, lease.item_id, {
                    "status": ItemStatus.PENDING.value, "available_at": now, "base_version": result.current.version,
                    "idempotency_key": None, "payload": None})
            elif status == PushOutcome.CONFLICT and result.current is not None:
                stats.conflicts += 1
                entity = self._registry[lease.resource]
                self._handler.handle(conn, entity, lease.entity_id, remote_current(result.current),
                                     source="push", own_item_id=lease.item_id)
            elif status == PushOutcome.REJECTED:
                stats.rejected += 1
                reason = f"{result.code or 'REJECTED'}: {result.reason or ''}"
                if result.retryable:
                    self._fail(conn, lease, reason, now)
                else:
                    self._set_aside(conn, lease, reason, now)
            else:  # server_error (HO failed on this change alone, found by bisection) or an unusable answer
                self._fail(conn, lease, result.reason or f"HO gave no usable result ({status})", now)
        stats.applied += applied
        stats.duplicates += duplicates
        # the entities that still have items (later changes, or set aside) once the accepted ones are gone
        queued = self._outbox.still_queued(conn, [(r, e) for r, rows in accepted.items() for e, _, _ in rows]
                                           + [(r, e) for r, e, _ in rebases])
        for resource, rows in accepted.items():
            waiting = {entity_id for (res, entity_id) in queued if res == resource}
            self._entities.mark_pushed(conn, self._registry[resource], rows, waiting)
        self._outbox.rebase_followers(conn, rebases, queued)
        self._logs.add(conn, LogKind.PUSH, _dt(now), count=len(done), duration_ms=duration_ms,
                       detail=f"{stats.applied} applied, {stats.duplicates} duplicate, "
                              f"{stats.conflicts} conflict, {stats.rejected} rejected")

    def _fail(self, conn: Connection, lease: Lease, reason: str, now: float) -> None:
        failures = lease.attempts + 1
        decision = self._retry.decide(failures, self._rng)
        if decision is None:
            self._set_aside(conn, lease, f"out of retries after {failures} attempts: {reason}", now)
            return
        self._outbox.schedule_retry(conn, lease.item_id, attempts=failures, available_at=now + decision.delay,
                                    error=reason)
        self._outbox.hold_followers(conn, (lease.resource, lease.entity_id), now + decision.delay)

    def _set_aside(self, conn: Connection, lease: Lease, reason: str, now: float) -> None:
        """Dead-letter one change; its entity's later changes wait behind it, nothing else does."""
        self._outbox.set_status(conn, [lease.item_id], ItemStatus.DEAD, error=reason)
        followers = [i["id"] for i in self._outbox.entity_items(conn, (lease.resource, lease.entity_id))
                     if i["status"] == ItemStatus.PENDING.value]
        self._outbox.set_status(conn, followers, ItemStatus.BLOCKED)
        if not lease.append_only and lease.op is not Op.DELETE:
            self._entities.set_status(conn, self._registry[lease.resource], lease.entity_id, SyncStatus.FAILED)
        self._logs.add(conn, LogKind.DEAD, _dt(now), resource=lease.resource, entity_id=lease.entity_id, detail=reason)
        log.warning("change set aside: %s %s:%s (%s)", lease.op.value, lease.resource, lease.entity_id, reason)


def _take(items: list[dict[str, Any]], now: float, groups: list[tuple[list[Any], Op | None]],
          to_block: list[int]) -> None:
    """Claim decision for one entity's outstanding ``items`` (commit order): add its group to ``groups``,
    its waiting items to ``to_block``, or nothing (in flight, in backoff)."""
    statuses = {i["status"] for i in items}
    if not items or _INFLIGHT in statuses:
        return
    if statuses & _SET_ASIDE:  # the entity waits on a dead change or a conflict
        to_block += [i["id"] for i in items if i["status"] == _PENDING]
        return
    head = items[0]
    if head["available_at"] > now:
        return
    if head["idempotency_key"] is not None:  # sent before: resend exactly that, alone
        groups.append(([head], _OP_BY_VALUE[head["op"]]))
    else:
        groups.append((items, coalesce([_OP_BY_VALUE[i["op"]] for i in items])))


def _idempotency_keys(n: int) -> Iterator[str]:
    """``n`` UUIDv7 keys (RFC 9562) as 32 hex digits: the millisecond clock, the version, 74 random bits.

    Time-ordered so that HO's unique index on (outlet, key) grows at one end. With wholly random keys a
    1,000-change batch lands on hundreds of scattered index pages once HO holds 100,000 keys: ~14 ms per
    batch in SQLite instead of ~3 (bench/bench_keys.py). One call to the OS's random source per batch."""
    clock = f"{time.time_ns() // 1_000_000:012x}7"
    noise = secrets.token_hex(10 * n)
    for i in range(0, 20 * n, 20):
        # 12 random bits, a digit holding the variant and 2 random bits, 60 more random bits
        yield clock + noise[i : i + 3] + _VARIANT[noise[i + 3]] + noise[i + 4 : i + 19]


# a random hex digit -> 8, 9, a or b: the RFC 9562 variant (binary 10) followed by two of its random bits
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _iso(value: Any) -> str:
    """An outbox timestamp as ISO 8601 with offset; SQLite hands back its stored text (UTC, no offset)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    text = str(value).replace(" ", "T", 1)
    return text if ("+" in text[10:] or text.endswith("Z")) else text + "+00:00"
