"""Fault injection of the reference HO, its pure push rules, and running it as a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from posync.testing import DEFAULT_API_KEY, Faults, ReferenceHO, RemoteHO, ServerHandle, serve_in_thread
from posync.testing.changes import State, decide, parse_change

PUSH = "/api/v1/sync/push/"
HEADERS = {"X-API-Key": DEFAULT_API_KEY, "X-Outlet-ID": "o1"}


@pytest.fixture
def client(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as c:
        yield c


def body(*ids: str, key: str = "k") -> dict[str, Any]:
    return {"outlet_id": "o1", "changes": [
        {"idempotency_key": f"{key}:{i}", "resource": "orders", "entity_id": i, "op": "create",
         "base_version": None, "data": {"id": i, "total": 1}} for i in ids]}


def test_drop_after_commit_commits_then_retry_is_duplicate(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.faults.drop_after_commit_rate = 1.0
    with pytest.raises(httpx.TransportError):
        client.post(PUSH, json=body("1", "2"))
    assert set(ho.records("orders")) == {"1", "2"}  # committed although nobody heard the answer
    ho.faults.reset()
    r = client.post(PUSH, json=body("1", "2"))
    assert [x["status"] for x in r.json()["results"]] == ["duplicate", "duplicate"]
    assert set(ho.applied_counts().values()) == {1}
    assert ho.faults.injected["drop"] == 1


def test_error_rate_answers_500_before_doing_anything(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.faults.update(error_rate=1.0)
    r = client.post(PUSH, json=body("1"))
    assert r.status_code == 500 and r.json()["code"] == "INTERNAL_ERROR"
    assert ho.records("orders") == {}
    ho.faults.update(error_rate=1.0, error_status=503)
    r = client.get("/api/v1/sync/version/", params={"company_id": "c"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    # admin endpoints are never faulted
    assert client.get("/_admin/stats").status_code == 200


def test_truncated_body_keeps_status(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.faults.truncate_rate = 1.0
    r = client.post(PUSH, json=body("1"))
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content) > 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    assert set(ho.records("orders")) == {"1"}


def test_burst_with_retry_after_then_normal(client: httpx.Client, ho: ReferenceHO) -> None:
    r = client.post("/_faults", json={"burst": {"status": 429, "count": 2, "retry_after": 1.5}})
    assert r.status_code == 200 and r.json()["burst"]["count"] == 2
    for _ in range(2):
        r = client.post(PUSH, json=body("1"))
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and r.json()["code"] == "RATE_LIMITED"
    assert client.post(PUSH, json=body("1")).status_code == 200
    ho.faults.burst = {"status": 503, "count": 1, "retry_after": 0}  # type: ignore[assignment]
    r = client.get("/api/v1/sync/version/", params={"company_id": "c"})
    assert r.status_code == 503 and r.json()["code"] == "UNAVAILABLE"


def test_latency_and_clock_skew(client: httpx.Client, ho: ReferenceHO) -> None:
    client.post("/_faults", json={"latency": 0.3, "clock_skew": 3600})
    t = time.monotonic()
    r = client.get("/api/v1/sync/orders/", params={"company_id": "c", "store_id": "s"})
    assert time.monotonic() - t >= 0.3
    stamp = datetime.fromisoformat(r.json()["sync_timestamp"])
    assert 3500 < (stamp - datetime.now(UTC)).total_seconds() < 3700
    ho.put("orders", "x", {"n": 1})
    rec = ho.get("orders", "x")
    assert rec is not None and datetime.fromisoformat(rec.updated_at) > datetime.now(UTC)
    assert client.delete("/_faults").json()["latency"] == 0.0


def test_fault_settings_are_validated(client: httpx.Client) -> None:
    for bad in ({"error_rate": 2}, {"nonsense": 1}, {"burst": {"status": 200}}, {"latency": -1}, [1]):
        r = client.post("/_faults", json=bad)
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", bad


def test_seed_makes_faults_repeatable() -> None:
    def run(f: Faults) -> list[bool]:
        return [f.draw().answer is not None for _ in range(50)]

    a, b = Faults(seed=7, error_rate=0.5), Faults(seed=7, error_rate=0.5)
    assert run(a) == run(b)
    a.seed = 7
    assert run(a) == run(Faults(seed=7, error_rate=0.5))


def test_no_500_for_garbage(client: httpx.Client) -> None:
    garbage: list[Any] = [1, "x", [], {}, {"changes": [1, "a", None, [], {}]}, {"changes": None},
                          {"changes": [{"idempotency_key": "k" * 300, "resource": "orders"}]},
                          {"changes": [{"idempotency_key": "k", "resource": "BAD NAME", "entity_id": "1"}]},
                          {"usages": [{"idempotency_key": 1}]}]
    for payload in garbage:
        for path in (PUSH, "/api/v1/sync/usage/", "/api/v1/token/", "/api/v1/token/refresh/"):
            r = client.post(path, json=payload)
            assert r.status_code < 500, (path, payload, r.text)
            assert r.headers["content-type"] == "application/json"


# -- the pure rules ---------------------------------------------------------------------------------


def test_decide_rules() -> None:
    def ch(op: str, base: int | None) -> Any:
        c = parse_change({"idempotency_key": "k", "resource": "r", "entity_id": "1", "op": op,
                          "base_version": base, "data": {"a": 1}})
        assert not hasattr(c, "code")
        return c

    live, dead = State(2, False, {"a": 0}, "t", 5), State(3, True, {"a": 0}, "t", 6)
    assert decide(ch("create", None), None)[:2] == ("applied", 1)
    assert decide(ch("create", None), live).status == "conflict"
    assert decide(ch("create", None), dead).status == "conflict"
    assert decide(ch("create", 3), dead)[:2] == ("applied", 4)
    assert decide(ch("update", 2), live)[:2] == ("applied", 3)
    assert decide(ch("update", 1), live).status == "conflict"
    assert decide(ch("update", 3), dead).status == "conflict"
    assert decide(ch("delete", 2), live).deleted is True
    assert decide(ch("delete", 0), dead)[:3] == ("applied", 3, False)
    assert decide(ch("delete", 1), None)[:3] == ("applied", 0, False)


def test_same_change_hashes_the_same_whatever_the_key_order() -> None:
    a = parse_change({"idempotency_key": "k", "resource": "r", "entity_id": "1", "op": "create",
                      "data": {"a": 1, "b": [1, 2]}})
    b = parse_change({"data": {"b": [1, 2], "a": 1}, "op": "create", "entity_id": "1", "resource": "r",
                      "idempotency_key": "k", "changed_at": "later"})
    assert a.request_hash == b.request_hash  # type: ignore[union-attr]


def test_only_loopback_binds(ho: ReferenceHO) -> None:
    with pytest.raises(ValueError, match="loopback"):
        serve_in_thread(ho.app, host="0.0.0.0")


# -- as a process -----------------------------------------------------------------------------------


def test_runs_as_a_subprocess_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ho.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "posync.testing", "--db", url, "--port", "0", "--api-key", "K", "--outlet", "o1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), (line, proc.stderr.read() if proc.stderr else "")
        base = line.removeprefix("listening on ")
        with httpx.Client(base_url=base, headers={"X-API-Key": "K", "X-Outlet-ID": "o1"}) as c:
            r = c.post(PUSH, json=body("1"))
            assert r.status_code == 200 and r.json()["results"][0]["status"] == "applied"
        with RemoteHO(base) as remote:
            assert remote.records("orders")["1"]["version"] == 1
            assert remote.put("orders", "1", {"id": "1", "total": 2}) == 2
            assert remote.set_faults(error_rate=0.25)["error_rate"] == 0.25
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_the_fault_and_admin_endpoints_are_never_faulted_even_under_paths_slash(client: httpx.Client,
                                                                                 ho: ReferenceHO) -> None:
    ho.faults.update(error_rate=1.0, paths=["/"])
    for _ in range(20):
        assert client.get("/_faults").status_code == 200
        assert client.get("/_admin/stats").status_code == 200
    assert client.post(PUSH, json=body("1")).status_code == 500  # everything else is faulted
    assert client.delete("/_faults").status_code == 200
    assert client.post(PUSH, json=body("1")).status_code == 200
