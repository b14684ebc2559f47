"""Faults on the answer's bytes (posync/testing/fault_middleware.py), for both profiles, over real sockets: a body
dripped a byte at a time, a body cut short under its full Content-Length, a corrupted body, a truncated one."""

from __future__ import annotations

import itertools
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from posync.testing import DEFAULT_API_KEY, Faults, ReferenceHO, ServerHandle
from posync.testing.fault_middleware import corrupted

BLOB = bytes(random.Random(12).randrange(256) for _ in range(640))  # a photo's worth of bytes, fixed
TINY = b"0123456789abcdefghij"


async def blob(request: Request) -> Response:
    return Response(BLOB, media_type="image/jpeg")


async def tiny(request: Request) -> Response:
    return Response(TINY, media_type="text/plain")


ROUTES = [Route("/api/v1/test/blob", blob), Route("/api/v1/test/tiny", tiny)]  # under /api/: faulted


@pytest.fixture(params=["posync", "seed"])
def ho(request: pytest.FixtureRequest, db_url: str) -> Iterator[ReferenceHO]:
    with ReferenceHO(db_url, profile=request.param, extra_routes=ROUTES) as ho:
        yield ho


@pytest.fixture
def client(server: ServerHandle, ho: ReferenceHO) -> Iterator[httpx.Client]:
    if ho.profile == "seed":
        headers = {"Authorization": f"Bearer {ho.issue_tokens()['access']}"}
    else:
        headers = {"X-API-Key": DEFAULT_API_KEY, "X-Outlet-ID": "o1"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        yield c


def write(client: httpx.Client, ho: ReferenceHO, n: int = 1) -> httpx.Response:
    """A request that commits something at HO: a push (posync) or a usage upload (seed)."""
    if ho.profile == "seed":
        return client.post("/api/v1/sync/usage/", json={"usages": [{"usage_id": f"u{n}", "bill_id": "B1"}]})
    return client.post("/api/v1/sync/push/", json={"changes": [
        {"idempotency_key": f"k{n}", "resource": "orders", "entity_id": str(n), "op": "create",
         "base_version": None, "data": {"id": str(n), "total": 1}}]})


def committed(ho: ReferenceHO) -> int:
    return len(ho.usages()) if ho.profile == "seed" else len(ho.records("orders"))


def raw_get(server: ServerHandle, path: str) -> tuple[dict[str, str], bytes]:
    """GET over a bare socket, reading until the server closes: (headers, every body byte received)."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: ho\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}, body


# -- drip -------------------------------------------------------------------------------------------


def test_drip_sends_headers_then_one_byte_per_interval(server: ServerHandle, ho: ReferenceHO) -> None:
    ho.faults.update(drip_rate=1.0, drip_interval=0.05)
    timeout = httpx.Timeout(10.0, read=0.5)  # a per-read timeout far above the interval, below the total
    with httpx.Client(base_url=server.url, timeout=timeout) as c:
        t0 = time.monotonic()
        with c.stream("GET", "/api/v1/test/tiny") as r:
            headers_at = time.monotonic() - t0
            assert r.status_code == 200 and r.headers["content-length"] == str(len(TINY))
            arrivals: list[tuple[float, bytes]] = [(time.monotonic(), chunk) for chunk in r.iter_raw()]
        total = time.monotonic() - t0
    assert b"".join(chunk for _, chunk in arrivals) == TINY
    assert headers_at < 0.5 * len(TINY) * 0.05  # status and headers come first, at once
    assert total >= 0.9 * len(TINY) * 0.05 > 0.5  # longer than the read timeout, which never tripped
    assert len(arrivals) >= len(TINY) // 2  # byte by byte, not one late burst
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) < 0.5
    assert ho.faults.injected["drip"] == 1


def test_dripped_answers_are_whole_and_a_short_read_timeout_trips(client: httpx.Client, ho: ReferenceHO,
                                                                  server: ServerHandle) -> None:
    ho.faults.update(drip_rate=1.0, drip_interval=0.002)
    r = write(client, ho)
    assert r.status_code == 200 and r.json()  # the whole JSON answer, just slow
    assert committed(ho) == 1
    ho.faults.update(drip_interval=0.4)
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(10.0, read=0.1)) as c, \
            pytest.raises(httpx.ReadTimeout):
        c.get("/api/v1/test/tiny")


# -- cut --------------------------------------------------------------------------------------------


def test_cut_announces_the_full_length_sends_part_then_closes(server: ServerHandle, ho: ReferenceHO) -> None:
    ho.faults.cut_rate = 1.0
    headers, body = raw_get(server, "/api/v1/test/blob")
    assert headers["content-length"] == str(len(BLOB))
    assert body == BLOB[: len(BLOB) // 2]  # then the connection closed
    with httpx.Client(base_url=server.url) as c, pytest.raises(httpx.RemoteProtocolError):
        c.get("/api/v1/test/blob")
    assert ho.faults.injected["cut"] == 2


def test_cut_happens_after_the_work_committed(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.faults.cut_rate = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        write(client, ho)
    assert committed(ho) == 1
    ho.faults.reset()
    assert write(client, ho, 2).status_code == 200


# -- corrupt ----------------------------------------------------------------------------------------


def test_corrupt_keeps_status_and_length_and_changes_bytes(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.faults.update(corrupt_rate=1.0, seed=5)
    r = client.get("/api/v1/test/blob")
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content) == len(BLOB)
    changed = [i for i, (a, b) in enumerate(zip(r.content, BLOB, strict=True)) if a != b]
    assert len(changed) == len(BLOB) // 64
    again = client.get("/api/v1/test/blob").content
    assert again != BLOB and again != r.content  # each answer damaged afresh
    ho.faults.seed = 5  # re-seeding replays the same damage
    assert client.get("/api/v1/test/blob").content == r.content
    assert ho.faults.injected["corrupt"] == 3
    ho.faults.reset()
    assert client.get("/api/v1/test/blob").content == BLOB


def test_corrupted_json_answer_after_commit(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.faults.corrupt_rate = 1.0
    r = write(client, ho)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    assert committed(ho) == 1


def test_corrupted_changes_one_byte_in_64_and_at_least_one() -> None:
    assert corrupted(b"", 1) == b""
    one = corrupted(b"a", 1)
    assert len(one) == 1 and one != b"a"
    body = bytes(range(256)) * 2
    out = corrupted(body, 9)
    assert len(out) == len(body) and sum(a != b for a, b in zip(out, body, strict=True)) == 8
    assert corrupted(body, 9) == out and corrupted(body, 10) != out


# -- truncate (unchanged) and the knobs themselves --------------------------------------------------


def test_truncate_is_a_short_body_with_a_matching_length(server: ServerHandle, ho: ReferenceHO) -> None:
    ho.faults.truncate_rate = 1.0
    headers, body = raw_get(server, "/api/v1/test/blob")
    assert headers["content-length"] == str(len(BLOB) // 2) and body == BLOB[: len(BLOB) // 2]


def test_admin_paths_are_never_faulted(client: httpx.Client, ho: ReferenceHO) -> None:
    ho.faults.update(cut_rate=1.0)
    assert client.get("/_admin/stats").status_code == 200
    assert client.get("/_faults").json()["cut_rate"] == 1.0


def test_new_knobs_are_settable_validated_and_reset(client: httpx.Client, ho: ReferenceHO) -> None:
    r = client.post("/_faults", json={"drip_rate": 0.5, "drip_interval": 0.2, "cut_rate": 0.25, "corrupt_rate": 1})
    assert r.status_code == 200
    snap = r.json()
    assert (snap["drip_rate"], snap["drip_interval"], snap["cut_rate"], snap["corrupt_rate"]) == (0.5, 0.2, 0.25, 1.0)
    assert ho.faults.corrupt_rate == 1.0
    bad: list[dict[str, Any]] = [{"drip_rate": 2}, {"cut_rate": -0.1}, {"corrupt_rate": "often"},
                                 {"drip_interval": -1}, {"drip": 1}]
    for settings in bad:
        r = client.post("/_faults", json=settings)
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", settings
    reset = client.delete("/_faults").json()
    assert (reset["drip_rate"], reset["drip_interval"], reset["cut_rate"], reset["corrupt_rate"]) == (0, 0.05, 0, 0)


def test_knobs_left_at_zero_draw_nothing() -> None:
    """Adding knobs keeps the random sequence of the existing ones: a seeded run replays as before."""
    rng = random.Random(7)
    expected = [rng.random() < 0.5 for _ in range(50)]
    f = Faults(seed=7, error_rate=0.5)
    assert [f.draw().answer is not None for _ in range(50)] == expected
    g = Faults(seed=7, truncate_rate=0.5)
    assert [g.draw().body == "truncate" for _ in range(50)] == expected


def test_one_fault_per_request_in_order() -> None:
    f = Faults(seed=1, truncate_rate=1.0, cut_rate=1.0, corrupt_rate=1.0, drip_rate=1.0)
    assert f.draw().body == "truncate"
    f.update(truncate_rate=0.0)
    assert f.draw().body == "cut"
    f.update(cut_rate=0.0)
    assert f.draw().body == "corrupt"
    f.update(corrupt_rate=0.0)
    assert f.draw().body == "drip"
    f.update(error_rate=1.0)
    d = f.draw()
    assert d.answer is not None and d.body is None
    assert dict(f.injected) == {"truncate": 1, "cut": 1, "corrupt": 1, "drip": 1, "error": 1}
