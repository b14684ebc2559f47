"""What every surface posync mounts shares: who may call it (locked by default) and the Posync it serves.

``authorize(request) -> bool`` (plain or ``async``) decides; without one every request is refused (401)
unless the host opted out with ``allow_anonymous=True``. A caller ``authorize`` refuses, or one it fails on,
is refused with 403. ``sync`` is the ``Posync`` or a function returning it (a host that builds it later, in a
FastAPI lifespan, than it mounts the surface)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from posync.app import Posync
from posync.errors import ConfigurationError, PosyncError

__all__ = ["Authorize", "Guard", "LazyPosync", "Refusal"]

log = logging.getLogger("posync.http")

Authorize = Callable[[Request], bool | Awaitable[bool]]


@dataclass(frozen=True)
class Refusal:
    status: int  # 401 or 403
    code: str
    message: str


class Guard:
    def __init__(self, surface: str, authorize: Authorize | None, allow_anonymous: bool) -> None:
        if authorize is not None and allow_anonymous:
            raise ConfigurationError(f"{surface}: give authorize or allow_anonymous=True, not both")
        self.surface = surface
        self.authorize = authorize
        self.allow_anonymous = allow_anonymous

    async def refusal(self, request: Request) -> Refusal | None:
        """None when the caller may go on."""
        if self.authorize is None:
            if self.allow_anonymous:
                return None
            return Refusal(401, "UNAUTHORIZED", f"{self.surface} is locked: the host gives authorize= "
                                                "(or allow_anonymous=True for a demo)")
        if not await self._allowed(request):
            return Refusal(403, "FORBIDDEN", f"{self.surface} needs an administrator")
        return None

    async def _allowed(self, request: Request) -> bool:
        assert self.authorize is not None
        try:
            verdict = self.authorize(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:  # the host's check failed: refuse, and say so in the host's log
            log.exception("%s: authorize raised; the request is refused", self.surface)
            return False
        return verdict is True


class LazyPosync:
    """The Posync a surface serves, resolved on first use."""

    def __init__(self, sync: Posync | Callable[[], Posync]) -> None:
        self._sync = sync
        self._resolved: Posync | None = None

    def __call__(self) -> Posync:
        if self._resolved is None:
            built = self._sync if isinstance(self._sync, Posync) else self._sync()
            if not isinstance(built, Posync):  # the host's lifespan has not built it yet
                raise PosyncError("posync is not started yet")
            self._resolved = built
        return self._resolved
