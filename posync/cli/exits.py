"""The exit codes of ``posync status``, ``sync`` and ``trigger`` (and of any command posync's errors end):
what a script or a monitoring check acts on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from posync.errors import AuthenticationError, ConfigurationError, TransportError

__all__ = ["AUTH_REFUSED", "ERROR", "EXIT_CODES", "HO_UNREACHABLE", "OK", "UNHEALTHY", "USAGE", "for_error",
           "for_ho_check", "for_status"]

OK = 0  # healthy, or the cycle ran clean
ERROR = 1  # a posync error (the outlet database, a bug, a cycle that failed for another reason)
USAGE = 2  # bad usage or configuration (a wrong config key included)
HO_UNREACHABLE = 3
AUTH_REFUSED = 4  # HO refused the credentials
UNHEALTHY = 5  # HO answers, but status says the outlet is not healthy

EXIT_CODES = ("Exit codes: 0 healthy / done; 1 a posync error; 2 bad usage or configuration; 3 HO unreachable; "
              "4 credentials refused by HO; 5 unhealthy (HO reachable, but status names reasons).")


def for_error(exc: BaseException) -> int:
    """The exit code of a command that ended with this posync error."""
    if isinstance(exc, ConfigurationError):
        return USAGE
    if isinstance(exc, AuthenticationError):
        return AUTH_REFUSED
    if isinstance(exc, TransportError):
        return HO_UNREACHABLE
    return ERROR


def for_ho_check(ho: Mapping[str, Any] | None) -> int | None:
    """From a live check of HO (status' ``ho``): 3 or 4 when HO is out of reach or refuses us, else None."""
    if not ho:
        return None
    if ho.get("auth_ok") is False:
        return AUTH_REFUSED
    if not ho.get("reachable"):
        return HO_UNREACHABLE
    return None


def for_status(status: Mapping[str, Any]) -> int:
    """``posync status``: HO's live check first (3, 4; without one, the last cycle's refused credentials),
    then the health verdict (5), else 0."""
    ho = status.get("ho")
    code = for_ho_check(ho) if ho else (AUTH_REFUSED if status.get("auth_error") else None)
    if code is not None:
        return code
    return OK if status.get("healthy", True) else UNHEALTHY
