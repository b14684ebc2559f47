"""uvicorn tests.page_app:app: the POS's FastAPI app (tests/embed/pos.py) with the operator page mounted;
tests/test_operator_page_http.py starts two of these processes on one database, as two workers."""

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from posync.http.page import operator_page
from tests.embed.pos import build_sync, is_admin


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.sync = build_sync()
    yield
    app.state.sync.close()


app = FastAPI(lifespan=lifespan)
app.state.sync = None
app.mount("/sync/ui", operator_page(lambda: app.state.sync, authorize=is_admin))


@app.middleware("http")
async def which_process(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers["x-pid"] = str(os.getpid())
    return response
