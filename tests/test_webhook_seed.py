"""Webhooks at an outlet of the seed HO (``ho_profile="seed"``): the event's record is shaped like that HO's
pull records (no version, ``updated_at``), and its version is derived from ``updated_at`` as the pull derives
it, so a newer record updates a pulled row and an older one is ignored. On SQLite and PostgreSQL.

Before: a record without a version was a 422 (poison: HO stops resending), and one with a small version
was answered 200 and never applied (the pulled rows hold versions derived in microseconds)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posync.demo.models import Product
from posync.services.apply import record_version
from posync.testing import SyncHarness
from posync.webhooks import StandardWebhookSigner, StandardWebhookVerifier, WebhookReceiver, WebhookRequest
from posync.webhooks.testing import signed_headers
from tests.seed_support import SeedEnv

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNER = StandardWebhookSigner([SECRET])


class SeedOutlet:
    def __init__(self, env: SeedEnv) -> None:
        self.env = env
        self.receiver: WebhookReceiver = env.outlet.sync.webhook_receiver([StandardWebhookVerifier([SECRET])])

    def send(self, kind: str, record: dict[str, Any], resource: str = "products") -> tuple[int, dict[str, Any]]:
        body = json.dumps({"type": kind, "resource": resource, "record": record}).encode()
        response = self.receiver.handle(WebhookRequest(kind, body, signed_headers(SIGNER, body)))
        return response.status, response.payload

    def row(self, pid: str) -> tuple[str, int | None] | None:
        with self.env.outlet.Session() as s:
            row = s.get(Product, pid)
            return None if row is None else (row.name, row.cloud_version)


@pytest.fixture
def outlet(db_url: str, tmp_path: Path) -> Iterator[SeedOutlet]:
    env = SeedEnv(db_url, tmp_path)
    try:
        env.ho.put("products", "p1", {"name": "Pulled", "sku": "S1", "price": 100})
        assert SyncHarness(env.outlet.sync).pull_all().applied.written == 1
        yield SeedOutlet(env)
    finally:
        env.close()


def _seed_record(name: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"id": "p1", "name": name, "sku": "S1", "price": 7, "updated_at": at.isoformat(), **extra}


def test_a_newer_seed_shaped_record_updates_the_pulled_row(outlet: SeedOutlet) -> None:
    pulled = outlet.row("p1")
    assert pulled is not None and pulled[0] == "Pulled"
    record = _seed_record("By webhook", datetime.now(UTC) + timedelta(seconds=5))
    assert outlet.send("update", record)[0] == 200
    assert outlet.row("p1") == ("By webhook", record_version(record))  # the pull's derivation
    assert SyncHarness(outlet.env.outlet.sync).pull_all(force=True).applied.written == 0  # HO's copy is older
    assert outlet.row("p1") == ("By webhook", record_version(record))


def test_an_older_seed_shaped_record_is_acknowledged_and_ignored(outlet: SeedOutlet) -> None:
    before = outlet.row("p1")
    status, payload = outlet.send("update", _seed_record("Stale", datetime.now(UTC) - timedelta(days=30)))
    assert (status, payload["status"]) == (200, "ok")
    assert outlet.row("p1") == before


@pytest.mark.parametrize("version", [0, 5, 2**62])
def test_a_version_in_a_seed_record_is_ignored_for_the_derived_one(outlet: SeedOutlet, version: int) -> None:
    newer = _seed_record("Newer", datetime.now(UTC) + timedelta(seconds=5), version=version)
    assert outlet.send("update", newer)[0] == 200
    assert outlet.row("p1") == ("Newer", record_version({"updated_at": newer["updated_at"]}))
    older = _seed_record("Older", datetime.now(UTC) - timedelta(days=1), version=2**63 - 1)
    assert outlet.send("update", older)[0] == 200
    assert outlet.row("p1") == ("Newer", record_version({"updated_at": newer["updated_at"]}))


def test_a_seed_record_without_updated_at_is_a_422_naming_it(outlet: SeedOutlet) -> None:
    before = outlet.row("p1")
    status, payload = outlet.send("update", {"id": "p1", "name": "No stamp", "version": 9})
    assert status == 422 and payload["code"] == "INVALID_PAYLOAD"
    assert "updated_at" in payload["message"]
    assert outlet.row("p1") == before


def test_a_seed_delete_applies_only_when_newer(outlet: SeedOutlet) -> None:
    stale = {"id": "p1", "updated_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()}
    assert outlet.send("delete", stale)[0] == 200
    assert outlet.row("p1") is not None
    deleted = {"id": "p1", "deleted_at": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()}
    assert outlet.send("delete", deleted)[0] == 200
    assert outlet.row("p1") is None


def test_a_seed_delete_of_the_row_as_it_was_plus_deleted_at_applies(outlet: SeedOutlet) -> None:
    """A review: HO sends the deleted row as it was (its last updated_at) with deleted_at; the version came
    from updated_at, equal to the row's own, so the delete was acknowledged and ignored."""
    name, version = outlet.row("p1")
    assert version is not None
    record = {"id": "p1", "name": name, "updated_at": datetime.fromtimestamp(version / 1_000_000, UTC).isoformat(),
              "deleted_at": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()}
    assert outlet.send("delete", record)[0] == 200
    assert outlet.row("p1") is None


_ids = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(-10**6, 10**6), st.one_of(st.none(), st.integers(0, 2**63 - 1))),
                min_size=1, max_size=6))
def test_whatever_the_order_the_newest_updated_at_wins(outlet: SeedOutlet,
                                                       events: list[tuple[int, int | None]]) -> None:
    """Delivered in any order (HO retries, reorders), a record ends as its newest save; versions sent beside
    ``updated_at`` change nothing."""
    pid = f"h{next(_ids)}"
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for n, (offset, version) in enumerate(events):
        record = {"id": pid, "name": f"{offset}/{n}", "sku": "S", "price": 1,
                  "updated_at": (base + timedelta(milliseconds=offset)).isoformat()}
        if version is not None:
            record["version"] = version
        assert outlet.send("update", record)[0] == 200
    newest = max(offset for offset, _ in events)
    first = next(n for n, (offset, _) in enumerate(events) if offset == newest)  # a repeat is not newer
    stamp = (base + timedelta(milliseconds=newest)).isoformat()
    assert outlet.row(pid) == (f"{newest}/{first}", record_version({"updated_at": stamp}))
