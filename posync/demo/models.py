"""The host app's tables: plain SQLModel tables that inherit ``posync.Tracked``."""

from __future__ import annotations

from sqlmodel import Field

from posync import ConflictStrategy, Direction, Registry, Resolver, Tracked, TrackedEntity

__all__ = ["Category", "Order", "Product", "Promotion", "PromotionUsage", "pos_registry", "seed_registry"]


class Order(Tracked, table=True):
    __tablename__ = "pos_order"
    id: str = Field(primary_key=True, max_length=64)
    table_no: str = Field(default="", max_length=20)
    total: int = 0
    status: str = Field(default="open", max_length=20)


class Product(Tracked, table=True):
    __tablename__ = "pos_product"
    id: str = Field(primary_key=True, max_length=64)
    sku: str = Field(default="", max_length=40)
    name: str = Field(default="", max_length=200)
    price: int = 0


class Category(Tracked, table=True):
    __tablename__ = "pos_category"
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)


class Promotion(Tracked, table=True):
    __tablename__ = "pos_promotion"
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    discount_pct: int = 0


class PromotionUsage(Tracked, table=True):
    __tablename__ = "pos_promotion_usage"
    id: int | None = Field(default=None, primary_key=True)
    promotion_id: str = Field(max_length=64)
    bill_id: str = Field(max_length=64)
    discount_amount: float = 0.0
    store_id: str = Field(default="", max_length=64)


def pos_registry(product_strategy: ConflictStrategy = ConflictStrategy.CLOUD_WINS,
                 product_resolver: Resolver | None = None) -> Registry:
    """The demo's choice of directions and strategies; tests vary the products' strategy."""
    return Registry([
        TrackedEntity(Order, "orders", Direction.PUSH, ConflictStrategy.LOCAL_WINS),
        TrackedEntity(Product, "products", Direction.BOTH, product_strategy, resolver=product_resolver),
        TrackedEntity(Category, "categories", Direction.BOTH, ConflictStrategy.NEWEST_WINS),
        TrackedEntity(Promotion, "promotions", Direction.BOTH, ConflictStrategy.MANUAL),
        TrackedEntity(PromotionUsage, "usage", Direction.PUSH, append_only=True),
    ])


def seed_registry(strategy: ConflictStrategy = ConflictStrategy.CLOUD_WINS) -> Registry:
    """The same tables against the HO of seeds 004/001 (``ho_profile="seed"``): it serves categories,
    products and promotions and takes usage uploads; it takes no pushed orders."""
    return Registry([
        TrackedEntity(Category, "categories", Direction.PULL, strategy),
        TrackedEntity(Product, "products", Direction.PULL, strategy),
        TrackedEntity(Promotion, "promotions", Direction.PULL, strategy),
        TrackedEntity(PromotionUsage, "usage", Direction.PUSH, append_only=True),
    ])
