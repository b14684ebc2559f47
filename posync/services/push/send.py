"""Sending a batch to HO, outside any transaction: changes to HO's push endpoint, append-only records to
their resource's upload endpoint.

A 500 on a batch: HO's version endpoint is asked whether HO is up at all. If not, it is an outage (the
caller gives the batch back). If it is, some change in the batch makes HO fail: the batch is bisected
until the culprit stands alone, answered ``server_error``; the others get HO's answers as usual.
"""

from __future__ import annotations

from collections import defaultdict

from posync.errors import HOErrorResponse, HOUnavailableError, TransportError
from posync.ho import HOClient, PushResult, Upload
from posync.models.enums import PushOutcome
from posync.registry import Registry
from posync.services.push.lease import Lease

__all__ = ["Sender"]


class Sender:
    def __init__(self, registry: Registry, client: HOClient) -> None:
        self._registry = registry
        self._client = client

    def deliver(self, leases: list[Lease], healthy: bool | None = None) -> dict[int, PushResult]:
        """HO's answer to each lease, by item id; on a 500, tell an outage from a poison change and
        isolate the latter. Raises TransportError when HO cannot be reached or understood."""
        try:
            return {lease.item_id: result for lease, result in zip(leases, self.send(leases), strict=True)}
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
            return self.deliver(leases[:mid], healthy) | self.deliver(leases[mid:], healthy)

    def _ho_answers(self) -> bool:
        """Is HO up at all (its version endpoint answers)?"""
        try:
            self._client.version()
        except (TransportError, HOErrorResponse):
            return False
        return True

    def send(self, leases: list[Lease]) -> list[PushResult]:
        """One request per endpoint; HO's answers in the order of ``leases``."""
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
