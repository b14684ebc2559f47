"""Run an ASGI app (the reference HO) with uvicorn on a loopback port, in a thread or as the main program."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp

__all__ = ["LOOPBACK", "ServerHandle", "serve_in_thread", "uvicorn_config"]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def uvicorn_config(app: ASGIApp, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    if host not in LOOPBACK:  # the admin and fault endpoints are unauthenticated
        raise ValueError(f"the reference HO binds loopback only, not {host!r}")
    settings: dict[str, Any] = {
        "host": host, "port": port, "log_level": "warning", "access_log": False, "lifespan": "off",
        "proxy_headers": False, "http": "h11", "loop": "asyncio", "timeout_graceful_shutdown": 2,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


def bound_port(server: uvicorn.Server) -> int:
    for s in server.servers:
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("uvicorn started without a listening socket")


class ServerHandle:
    """A uvicorn server running in a daemon thread. ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int) -> None:
        self.server, self.thread, self.host, self.port = server, thread, host, port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r}, running={self.thread.is_alive()})"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for the thread; idempotent."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *,
                    startup_timeout: float = 10.0, **uvicorn_overrides: Any) -> ServerHandle:
    """Start ``app`` on ``host:port`` (0: a free port) in a thread; returns once it accepts connections."""
    server = uvicorn.Server(uvicorn_config(app, host, port, **uvicorn_overrides))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:  # uvicorn exits with SystemExit when it cannot bind
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"reference-ho:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if failure or not thread.is_alive():
            thread.join(1.0)
            raise RuntimeError(f"server failed to start: {failure[0] if failure else 'thread exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5.0)
            raise RuntimeError("server did not start in time")
        time.sleep(0.005)
    return ServerHandle(server, thread, host, bound_port(server))


async def serve_forever(app: ASGIApp, host: str, port: int, *, announce: bool = True) -> None:
    """Run in the main thread (uvicorn handles SIGTERM/SIGINT), printing ``listening on URL`` once bound."""
    server = uvicorn.Server(uvicorn_config(app, host, port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # re-raise the startup failure
            raise SystemExit(1)
        await asyncio.sleep(0.01)
    if announce:
        shown = f"[{host}]" if ":" in host else host
        sys.stdout.write(f"listening on http://{shown}:{bound_port(server)}\n")
        sys.stdout.flush()
    await task
