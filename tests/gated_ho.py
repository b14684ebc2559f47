"""The reference HO behind a gate that counts requests by method and path and can refuse some of them:
the outage-probe and idle-polling tests count what an outlet asks HO."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Gate:
    """HO behind a counter of requests by method and path (outside everything else), which answers
    ``status`` (503: away; 429: slow down) to the API paths in ``refusing`` instead of HO."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: Counter[str] = Counter()
        self.order: list[str] = []
        self.refusing: tuple[str, ...] = ()
        self.status, self.retry_after = 503, "1"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            request = f"{scope['method']} {scope['path']}"
            self.seen[request] += 1
            self.order.append(request)
            if scope["path"].startswith(self.refusing):
                await send({"type": "http.response.start", "status": self.status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"retry-after", self.retry_after.encode())]})
                await send({"type": "http.response.body", "body": b'{"status":"error","code":"AWAY","message":"away"}'})
                return
        await self.app(scope, receive, send)

    def since(self, mark: int) -> list[str]:
        return self.order[mark:]
