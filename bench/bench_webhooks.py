"""Benchmark: posync's webhook verifier vs standardwebhooks, and the receiver over loopback.

    .venv/bin/python bench/bench_webhooks.py [--messages 5000] [--rounds 7] [--requests 2000] [--threads 8]

1. Verifications/s of ``StandardWebhookVerifier.verify`` and ``standardwebhooks.Webhook.verify`` on the same
   signed messages in the same run (median of several rounds, and the ratio).
2. Receiver requests/s and latency percentiles: the Starlette adapter under uvicorn on 127.0.0.1, a SQLite
   receipt store in a temporary directory, httpx clients in several threads, every request a new message.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlmodel import SQLModel
from standardwebhooks import Webhook

from posync.models.webhook import WebhookReceipt
from posync.webhooks import ReceiptStore, StandardWebhookSigner, StandardWebhookVerifier, WebhookReceiver
from posync.webhooks.asgi import create_asgi_app
from posync.webhooks.testing import serve_asgi

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def make_messages(count: int) -> list[tuple[bytes, dict[str, str]]]:
    theirs = Webhook(SECRET)
    now = datetime.now(UTC)
    messages = []
    for i in range(count):
        body = json.dumps({"type": "update", "resource": "products",
                           "record": {"id": f"p{i}", "version": i + 1, "updated_at": now.isoformat(),
                                      "name": "ASAHI SALMON BOWL", "price": 42000, "category_id": "c7"}})
        msg_id = f"msg_{uuid.uuid4().hex}"
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": theirs.sign(msg_id, now, body)}
        messages.append((body.encode(), headers))
    return messages


def bench_verify(messages: list[tuple[bytes, dict[str, str]]], rounds: int) -> None:
    ours = StandardWebhookVerifier([SECRET])
    theirs = Webhook(SECRET)
    ours_rates, theirs_rates = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for body, headers in messages:
            ours.verify(body, headers)
        ours_rates.append(len(messages) / (time.perf_counter() - start))
        start = time.perf_counter()
        for body, headers in messages:
            theirs.verify(body, headers, json_parse=False)
        theirs_rates.append(len(messages) / (time.perf_counter() - start))
    ours_med, theirs_med = statistics.median(ours_rates), statistics.median(theirs_rates)
    print(f"verify: {len(messages)} messages x {rounds} rounds")
    print(f"  posync StandardWebhookVerifier.verify : {ours_med:>10,.0f} verifications/s (median)")
    print(f"  standardwebhooks Webhook.verify        : {theirs_med:>10,.0f} verifications/s (median)")
    print(f"  ratio posync / standardwebhooks        : {ours_med / theirs_med:.2f}x")


def bench_receiver(total: int, threads: int, *, wal: bool) -> None:
    signer = StandardWebhookSigner([SECRET])
    with tempfile.TemporaryDirectory() as tmp:
        engine = sa.create_engine(f"sqlite:///{Path(tmp) / 'outlet.db'}", connect_args={"timeout": 30})
        if wal:  # what an outlet running a web server next to its POS should configure anyway

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
                dbapi_conn.execute("PRAGMA journal_mode=WAL")
                dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        SQLModel.metadata.create_all(engine, tables=[WebhookReceipt.__table__])  # type: ignore[attr-defined]
        applied = 0
        lock = threading.Lock()

        def apply(_event: object) -> None:
            nonlocal applied
            with lock:
                applied += 1

        receiver = WebhookReceiver([StandardWebhookVerifier([SECRET])], ReceiptStore(engine), apply=apply)
        latencies: list[float] = []
        failures = 0
        per_thread = total // threads

        with serve_asgi(create_asgi_app(receiver, base_path="/api/v1/webhooks/cloud")) as base:
            url = f"{base}/api/v1/webhooks/cloud/update"

            def worker() -> None:
                nonlocal failures
                mine: list[float] = []
                bad = 0
                with httpx.Client(timeout=30) as client:
                    for i in range(per_thread):
                        body = json.dumps({"type": "update", "resource": "products",
                                           "record": {"id": f"p{i}", "version": 1, "price": 42000}}).encode()
                        headers = signer.headers(f"msg_{uuid.uuid4().hex}", int(time.time()), body)
                        started = time.perf_counter()
                        response = client.post(url, content=body, headers=headers)
                        mine.append(time.perf_counter() - started)
                        bad += response.status_code != 200
                with lock:
                    latencies.extend(mine)
                    failures += bad

            # warm up the connection pool and the server
            with httpx.Client() as warm:
                body = b'{"type":"update","resource":"products","record":{"id":"w","version":1}}'
                warm.post(url, content=body, headers=signer.headers("msg_warmup", int(time.time()), body))
            workers = [threading.Thread(target=worker) for _ in range(threads)]
            started = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            elapsed = time.perf_counter() - started
        engine.dispose()
    latencies.sort()
    count = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(count - 1, int(p * count))] * 1000

    journal = "WAL, synchronous=NORMAL" if wal else "default rollback journal, synchronous=FULL"
    print(f"receiver (uvicorn + Starlette adapter, SQLite receipts [{journal}], {threads} client threads):")
    print(f"  {count} requests in {elapsed:.2f}s = {count / elapsed:,.0f} requests/s; non-200: {failures}; "
          f"applied: {applied - 1}")
    print(f"  latency p50 {pct(0.50):.2f} ms, p90 {pct(0.90):.2f} ms, p99 {pct(0.99):.2f} ms, "
          f"max {latencies[-1] * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    bench_verify(make_messages(args.messages), args.rounds)
    bench_receiver(args.requests, args.threads, wal=True)
    bench_receiver(args.requests // 4, args.threads, wal=False)


if __name__ == "__main__":
    main()
