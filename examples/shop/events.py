"""The shop's events: customers, orders and their lines."""

from __future__ import annotations

import msgspec

import chronik

registry = chronik.EventRegistry()


@registry.event("customer.registered")
class CustomerRegistered(msgspec.Struct):
    name: str
    email: str


@registry.event("order.placed")
class OrderPlaced(msgspec.Struct):
    customer_id: str


@registry.event("order.item_added")
class ItemAdded(msgspec.Struct):
    sku: str
    quantity: int
    unit_price_cents: int


@registry.event("order.submitted")
class OrderSubmitted(msgspec.Struct):
    total_cents: int


@registry.event("loyalty.points_awarded")
class PointsAwarded(msgspec.Struct):
    order_id: str
    points: int
