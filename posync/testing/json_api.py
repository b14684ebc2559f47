"""JSON answers and the posync error shape (``{"status": "error", "code", "message"}``), shared by the
posync HO's routes and the admin routes both HOs serve."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from posync.testing.changes import compact_json, loads_json
from posync.testing.transactions import StoreBusyError

__all__ = ["ApiError", "error_response", "handle_errors", "json_response", "parse_json", "read_json"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        super().__init__(message)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(compact_json(body), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"status": "error", "code": code, "message": message}, status, headers)


async def read_json(request: Request) -> Any:
    return parse_json(await request.body())


def parse_json(body: bytes) -> Any:
    try:
        return loads_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "VALIDATION_ERROR", "request body is not valid JSON") from exc


def handle_errors(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except StoreBusyError as exc:
            return error_response(503, "UNAVAILABLE", str(exc), {"Retry-After": "1"})
        except ClientDisconnect:  # the client gave up (a stall): nobody is left to answer
            return Response(status_code=499)

    return endpoint
