"""The POS's own code, shared by its web apps: tables, posync's registry, and posync built for this process."""

import hmac
import os

import sqlmodel
from sqlalchemy.orm import sessionmaker
from starlette.requests import Request

import posync
from posync import ConflictStrategy, Direction, Registry, Tracked, TrackedEntity
from posync.webhooks import StandardWebhookVerifier, WebhookReceiver


class Order(Tracked, table=True):
    id: str = sqlmodel.Field(primary_key=True)
    total: int = 0


class Product(Tracked, table=True):
    id: str = sqlmodel.Field(primary_key=True)
    name: str = ""
    price: int = 0


registry = Registry([
    TrackedEntity(Order, "orders", Direction.PUSH, ConflictStrategy.LOCAL_WINS),
    TrackedEntity(Product, "products", Direction.PULL, ConflictStrategy.CLOUD_WINS),
])
engine = posync.create_engine(os.environ["POS_DATABASE_URL"])  # connects on first use, in each worker
Session = sessionmaker(engine, class_=sqlmodel.Session)


def build_sync() -> posync.Posync:
    """Once per worker process; every worker captures, one of them (the syncer lease's holder) syncs."""
    with posync.migrations.locked(engine) as conn:  # the workers start together: one migrates
        posync.migrations.upgrade(conn)
        sqlmodel.SQLModel.metadata.create_all(conn)
    settings = posync.PosyncSettings()  # POSYNC_HO_URL, POSYNC_API_KEY, POSYNC_OUTLET_ID, ... from the environment
    return posync.Posync(engine, registry, settings, sessionmaker=Session)


def webhook_receiver(sync: posync.Posync) -> WebhookReceiver:
    return sync.webhook_receiver([StandardWebhookVerifier([os.environ["POS_WEBHOOK_SECRET"]])])


def is_admin(request: Request) -> bool:  # your own check: a session, a JWT's role; a shared token here
    expected = f"Bearer {os.environ['POS_ADMIN_TOKEN']}"
    return hmac.compare_digest(request.headers.get("authorization", ""), expected)


def record_order(order_id: str, total: int) -> None:
    with Session() as s:  # ordinary SQLModel code: the change is queued for HO in this transaction
        s.add(Order(id=order_id, total=total))
        s.commit()
