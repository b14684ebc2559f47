"""A head office that answers whatever a test scripts, byte for byte: for malformed, hostile and broken
answers the reference HO would never give. Served over real loopback HTTP with ``serve_in_thread``."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Answer = tuple[int, Any]  # (status, body: bytes, or anything JSON)
Handler = Callable[[dict[str, str], Any], Answer]

__all__ = ["Answer", "ScriptedHO", "drip"]


@dataclass
class _Drip:
    body: bytes
    interval: float


def drip(body: bytes, interval: float) -> _Drip:
    """An answer whose body comes one byte every ``interval`` seconds (no per-read timeout ever trips)."""
    return _Drip(body, interval)


@dataclass
class ScriptedHO:
    """``routes`` maps ``"GET /api/v1/sync/products/"`` to a handler ``(query, json_body) -> (status,
    body)``. Unscripted paths answer 404 in the seed's error shape. ``calls`` counts requests per route."""

    routes: dict[str, Handler] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    bodies: list[tuple[str, Any]] = field(default_factory=list)

    def on(self, route: str, handler: Handler | Answer) -> None:
        self.routes[route] = handler if callable(handler) else (lambda q, b, a=handler: a)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        route = f"{scope['method']} {scope['path']}"
        self.calls[route] += 1
        query = dict(p.split("=", 1) if "=" in p else (p, "") for p in scope["query_string"].decode().split("&") if p)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.bodies.append((route, body))
        handler = self.routes.get(route)
        if route == "POST /api/v1/token/" and handler is None:
            status, answer = 200, {"access": "token", "refresh": "refresh"}
        elif handler is None:
            status, answer = 404, {"error": "not scripted", "code": "NOT_FOUND"}
        else:
            status, answer = handler(query, body)
        if isinstance(answer, _Drip):
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(answer.body)).encode())]})
            for i in range(len(answer.body)):
                await send({"type": "http.response.body", "body": answer.body[i : i + 1], "more_body": True})
                await asyncio.sleep(answer.interval)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data, "more_body": False})
