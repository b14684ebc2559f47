"""The outermost ASGI layer of a reference HO (and of the photo HO): obeys
:class:`~posync.testing.faults.Faults` for each request under its ``paths``. It answers bursts and
injected errors itself, in the HO's error shape (``error_body``); it lets the app do the work, then drops
the connection, or rewrites the real answer's bytes (truncate, cut, corrupt, drip).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posync.testing.faults import Draw, Faults

__all__ = ["ErrorBody", "FaultMiddleware", "corrupted", "posync_error_body"]

# (code, message) -> the JSON body of an injected error answer, in the HO's error shape
ErrorBody = Callable[[str, str], dict[str, Any]]


def posync_error_body(code: str, message: str) -> dict[str, Any]:
    return {"status": "error", "code": code, "message": message}


async def _swallow(message: Message) -> None:
    return None


async def _drop_connection(send: Send, *, started: bool = False) -> None:
    """Close the client's connection without (the rest of) an answer.

    Uvicorn's ``send`` is a bound method of its request cycle, which holds the transport: closing it and
    letting ``connection_lost`` run marks the cycle disconnected, so uvicorn neither answers nor logs (what
    was already written is flushed first). If that is not reachable (another server, a wrapping
    middleware), start a response if none was (``started``) and fail, which every ASGI server answers by
    closing the connection mid-response.
    """
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(cycle, "disconnected"):
        transport.close()
        for _ in range(20):
            if cycle.disconnected:
                return
            await asyncio.sleep(0)
        return
    if not started:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
    raise ConnectionAbortedError("reference HO fault: connection dropped")


def _gone(send: Send) -> bool:
    """The client hung up (uvicorn's request cycle knows; other servers: assume it is still there)."""
    return bool(getattr(getattr(send, "__self__", None), "disconnected", False))


class FaultMiddleware:
    def __init__(self, app: ASGIApp, faults: Faults, error_body: ErrorBody = posync_error_body) -> None:
        self.app = app
        self.faults = faults
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.faults.applies_to(scope["path"]):
            await self.app(scope, receive, send)
            return
        d = self.faults.draw()
        if d.latency > 0:
            await asyncio.sleep(d.latency)
        if d.answer is not None:
            await _answer(send, self.error_body, *d.answer)
        elif d.drop:
            await self.app(scope, receive, _swallow)
            await _drop_connection(send)
        elif d.body is not None:
            await self.app(scope, receive, _Rewriting(send, _finisher(d)))
        else:
            await self.app(scope, receive, send)


async def _answer(send: Send, error_body: ErrorBody, status: int, code: str, retry_after: float | None) -> None:
    body = json.dumps(error_body(code, "injected fault")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(0, math.ceil(retry_after))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# -- faults on the real answer's body -----------------------------------------------------------------

Finisher = Callable[[Send, Message, bytes], Awaitable[None]]


class _Rewriting:
    """Buffers the app's response, then hands its start message and whole body to ``finish``."""

    def __init__(self, send: Send, finish: Finisher) -> None:
        self.send = send
        self.finish = finish
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            await self.finish(self.send, self.start, b"".join(self.chunks))


def _announcing(start: Message, length: int) -> Message:
    """``start`` with ``Content-Length: length`` (replacing any length or chunked encoding)."""
    framing = (b"content-length", b"transfer-encoding")
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in framing]
    return {**start, "headers": [*headers, (b"content-length", str(length).encode())]}


def _body(chunk: bytes, more: bool = False) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def _truncate(send: Send, start: Message, body: bytes) -> None:
    short = body[: len(body) // 2]
    await send(_announcing(start, len(short)))
    await send(_body(short))


async def _cut(send: Send, start: Message, body: bytes) -> None:
    await send(_announcing(start, len(body)))
    await send(_body(body[: len(body) // 2], more=True))
    await _drop_connection(send, started=True)


def corrupted(body: bytes, seed: int) -> bytes:
    """``body`` with one byte in 64 (at least one) changed to a different value, at seeded positions."""
    if not body:
        return body
    rng = random.Random(seed)
    out = bytearray(body)
    for pos in rng.sample(range(len(out)), max(1, len(out) // 64)):
        out[pos] = (out[pos] + rng.randrange(1, 256)) % 256
    return bytes(out)


def _finisher(d: Draw) -> Finisher:
    async def corrupt(send: Send, start: Message, body: bytes) -> None:
        damaged = corrupted(body, d.corrupt_seed)
        await send(_announcing(start, len(damaged)))
        await send(_body(damaged))

    async def drip(send: Send, start: Message, body: bytes) -> None:
        await send(_announcing(start, len(body)))
        for i in range(len(body)):
            await asyncio.sleep(d.drip_interval)
            if _gone(send):  # nobody reads any more: stop rather than sleep through the rest
                return
            await send(_body(body[i:i + 1], more=True))
        await send(_body(b""))

    return {"truncate": _truncate, "cut": _cut, "corrupt": corrupt, "drip": drip}[d.body or "truncate"]
