"""The shop's messages: commands (payload schemas) and events (registered, versioned)."""

from __future__ import annotations

from typing import Annotated

import msgspec

import chronik

registry = chronik.EventRegistry()

Cents = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class Item(msgspec.Struct, frozen=True):
    """One line of a transaction."""

    sku: str
    price_cents: Cents
    qty: Positive


# --- commands ---------------------------------------------------------------------------------


class CreateCustomer(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    email: str


class AddLoyaltyPoints(msgspec.Struct, forbid_unknown_fields=True):
    points: Positive


class CreateTransaction(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: str
    items: list[Item]


class CompleteTransaction(msgspec.Struct, forbid_unknown_fields=True):
    pass


# --- events -----------------------------------------------------------------------------------


@registry.event()
class CustomerCreated(msgspec.Struct):
    name: str
    email: str


@registry.event()
class LoyaltyPointsAdded(msgspec.Struct):
    points: int


@registry.event()
class TransactionCreated(msgspec.Struct):
    customer_id: str
    items: list[Item]


@registry.event()
class TransactionCompleted(msgspec.Struct):
    customer_id: str
    amount_cents: int
