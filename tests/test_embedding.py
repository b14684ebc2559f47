"""The README's embedding examples (tests/embed/), each started as a real multi-worker server: FastAPI under
uvicorn --workers 2 (posync built in the lifespan), Flask and Django under gunicorn -w 2. Against each:
orders posted to the app reach HO, exactly one worker holds the syncer lease, the management router is
locked and serves an admin, a signed webhook is applied, and SIGTERM to the master, while the syncer's push
is on the wire, ends the whole server with the push settled and the lease let go. Issue 18, item 10."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from posync.ho.posync_dialect import PUSH_PATH
from posync.testing import ReferenceHO, serve_in_thread
from posync.webhooks import StandardWebhookSigner
from posync.webhooks.testing import event_body, signed_headers
from tests.support import API_KEY

ROOT = Path(__file__).resolve().parent.parent
EMBED = ROOT / "tests" / "embed"
BIN = Path(sys.executable).parent
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "admin-token-for-the-test"
WORKERS = 2
CLOSE_TIMEOUT = 10.0  # posync's default, set explicitly: SIGTERM's bound below is this plus a margin
EXIT_BOUND = 30.0  # generous: a liveness bound, not a measurement
HOLD_SECONDS = 3.0  # how long HO keeps the push on the wire when SIGTERM arrives (less than CLOSE_TIMEOUT)
DEADLINE = 60.0

SERVERS: dict[str, Callable[[int], list[str]]] = {
    "fastapi": lambda port: [str(BIN / "uvicorn"), "tests.embed.fastapi_app:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(WORKERS), "--log-level", "warning"],
    "flask": lambda port: [str(BIN / "gunicorn"), "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
                           "tests.embed.flask_app:app"],
    "django": lambda port: [str(BIN / "gunicorn"), "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
                            "tests.embed.django_pos.wsgi:application"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def wait_for(what: str, check: Callable[[], Any], log: Path, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {deadline} s\n--- server log ---\n{log.read_text()[-4000:]}")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    engine: sa.Engine

    def lease(self) -> tuple[str | None, float]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT holder, expires_at FROM posync_lease WHERE name = 'syncer'")).first()
        return (row[0], row[1]) if row else (None, 0.0)

    def stop(self) -> None:
        """Only the processes this test started: the master (its own process group), then its group."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(EXIT_BOUND)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a worker the master left behind


class HeldPushes:
    """In front of HO: once ``hold`` is set, a push says it arrived, then waits ``hold`` seconds before HO
    sees it, so that SIGTERM reaches the server while the syncer's request is on the wire."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hold = 0.0
        self.arrived = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.hold and scope["type"] == "http" and scope["path"] == PUSH_PATH:
            self.arrived.set()
            await asyncio.sleep(self.hold)
        await self.app(scope, receive, send)


@dataclass
class HO:
    ref: ReferenceHO
    url: str
    pushes: HeldPushes


@pytest.fixture
def ho(tmp_path: Path) -> Iterator[HO]:
    ref = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None})
    pushes = HeldPushes(ref.app)
    server = serve_in_thread(pushes)
    yield HO(ref, server.url, pushes)
    server.stop()
    ref.close()


def start(kind: str, db_url: str, ho_url: str, tmp_path: Path) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POS_DATABASE_URL": db_url, "POS_ADMIN_TOKEN": ADMIN_TOKEN,
           "POS_WEBHOOK_SECRET": WEBHOOK_SECRET, "POSYNC_HO_URL": ho_url, "POSYNC_API_KEY": API_KEY,
           "POSYNC_SYNC_INTERVAL_SECONDS": "1", "POSYNC_CLOSE_TIMEOUT": str(CLOSE_TIMEOUT),
           "POSYNC_REQUEST_TIMEOUT": "5", "DJANGO_SETTINGS_MODULE": "tests.embed.django_pos.settings"}
    log = tmp_path / f"{kind}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(SERVERS[kind](port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Server(process, f"http://127.0.0.1:{port}", log, sa.create_engine(db_url, poolclass=sa.pool.NullPool))


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_embedded_in_a_multi_worker_server(kind: str, db_url: str, ho: HO, tmp_path: Path) -> None:
    ref = ho.ref
    server = start(kind, db_url, ho.url, tmp_path)
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    http = httpx.Client(base_url=server.url, timeout=10.0)
    try:
        def workers_up() -> bool:
            assert server.process.poll() is None, server.log.read_text()
            try:
                return http.get("/api/v1/sync/status", headers=admin).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the server answers", workers_up, server.log)
        workers = wait_for(f"{WORKERS} workers", lambda: len(children(server.process.pid)) >= WORKERS and
                           children(server.process.pid), server.log)

        # (1) the app's own writes reach HO, through whichever worker syncs
        ids = [f"{kind}-order-{n}" for n in range(3)]
        for n, order_id in enumerate(ids):
            assert http.post("/orders", json={"id": order_id, "total": 100 * n}).status_code == 201
        wait_for("the orders at HO", lambda: set(ids) <= set(ref.records("orders")), server.log)
        assert {i: ref.records("orders")[i].data["total"] for i in ids} == {i: 100 * n for n, i in enumerate(ids)}

        # (2) one syncer, and it is one of the server's workers
        holder, expires_at = server.lease()
        assert holder is not None and expires_at > time.time()
        pid = int(holder.split(":")[1])
        assert pid in workers, (holder, workers)

        # (3) management is locked, and serves an admin (authorize refuses an anonymous caller: 403)
        assert http.get("/api/v1/sync/status").status_code == 403
        assert http.post("/api/v1/sync/trigger").status_code == 403
        status = http.get("/api/v1/sync/status", headers=admin)
        assert status.status_code == 200 and status.json()["online"] is True

        # (4) a signed webhook from HO is applied
        body = event_body("update", "products", id="p-hook", version=1, name="Tea", price=12)
        answer = http.post("/api/v1/webhooks/cloud/update", content=body,
                           headers=signed_headers(StandardWebhookSigner([WEBHOOK_SECRET]), body))
        assert answer.status_code == 200, answer.text
        with server.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name, price FROM product WHERE id = 'p-hook'")).one() == ("Tea", 12)
        unsigned = http.post("/api/v1/webhooks/cloud/update", content=body)
        assert unsigned.status_code == 401

        # (5) SIGTERM to the master while the syncer's push is on the wire: the whole server ends, the push
        # is settled first (at HO, nothing left in the outbox) and the syncer lets the lease go
        ho.pushes.hold = HOLD_SECONDS
        assert http.post("/orders", json={"id": f"{kind}-late", "total": 1}).status_code == 201
        wait_for("the syncer's push on the wire", ho.pushes.arrived.is_set, server.log)
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(EXIT_BOUND)
        wait_for("the workers' exit", lambda: not any(alive(p) for p in workers), server.log, EXIT_BOUND)
        took = time.monotonic() - began
        print(f"\n{kind} on {db_url.split(':')[0]}: SIGTERM to exit {took:.2f} s, a push held {HOLD_SECONDS} s on "
              f"the wire (close_timeout {CLOSE_TIMEOUT} s)")
        assert took < EXIT_BOUND
        assert server.lease()[0] is None, server.log.read_text()[-4000:]
        assert f"{kind}-late" in ref.records("orders")
        with server.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM posync_outbox")).scalar_one() == 0
    finally:
        http.close()
        server.stop()
        server.engine.dispose()


def fenced_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_readme_shows_the_example_apps_verbatim() -> None:
    """The README's embedding section is these files, so the examples the tests run cannot drift from it."""
    blocks = fenced_blocks((ROOT / "README.md").read_text())
    files = ["pos.py", "fastapi_app.py", "flask_app.py", "django_pos/apps.py", "django_pos/urls.py",
             "django_pos/wsgi.py"]
    missing = [name for name in files if (EMBED / name).read_text() not in blocks]
    assert not missing, f"README.md lacks these example files verbatim (as a ```python block): {missing}"
