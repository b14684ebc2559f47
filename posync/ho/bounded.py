"""Reading an answer within a deadline and a size limit.

httpx's timeouts are per operation: a server that sends one byte every two seconds never trips a 30 s
read timeout, and one that sends a gigabyte is read whole. posync streams every body, checks the
request's deadline (a ``time.monotonic()`` instant carried in ``request.extensions``) after each chunk
and stops at ``limit`` bytes. A request therefore never takes much more than its budget: at worst one
read timeout beyond the deadline.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from posync.errors import HOUnavailableError, ProtocolError

__all__ = ["DEADLINE", "read_bounded"]

DEADLINE = "posync.deadline"


def read_bounded(response: httpx.Response, deadline: float, limit: int) -> bytes:
    request = response.request
    where: dict[str, Any] = {"method": request.method, "path": request.url.path}
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        response.close()
        raise ProtocolError(f"{request.method} {request.url.path}: HO's answer of {int(declared):,} bytes is "
                            f"above the {limit:,}-byte limit (max_response_bytes)", **where)
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"{request.method} {request.url.path}: HO's answer is above the {limit:,}-byte "
                                    "limit (max_response_bytes)", **where)
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise HOUnavailableError(f"{request.method} {request.url.path}: timed out (HO answered too slowly)",
                                         **where)
    finally:
        response.close()
    body = b"".join(chunks)
    # httpx reads a response again when an auth flow goes on to its next request; give it what was read
    response._content = body
    return body
