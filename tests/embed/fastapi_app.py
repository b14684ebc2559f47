"""uvicorn tests.embed.fastapi_app:app --workers 2"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel

import posync.http
from posync.webhooks.asgi import create_asgi_app
from tests.embed.pos import build_sync, is_admin, record_order, webhook_receiver


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    sync = build_sync()  # in each worker process
    app.state.sync, app.state.webhooks = sync, webhook_receiver(sync)
    sync.start()
    yield
    sync.close()  # bounded by close_timeout


app = FastAPI(lifespan=lifespan)
app.state.sync = app.state.webhooks = None  # the routers answer 503 until the lifespan has built them
app.mount("/api/v1/sync", posync.http.management_app(lambda: app.state.sync, authorize=is_admin))
app.mount("/api/v1/webhooks/cloud", create_asgi_app(lambda: app.state.webhooks))


class NewOrder(BaseModel):
    id: str
    total: int


@app.post("/orders", status_code=201)
def create_order(order: NewOrder) -> NewOrder:
    record_order(order.id, order.total)
    return order
