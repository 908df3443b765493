"""The customer domain, in the functional style: decide and evolve over a small state."""

from __future__ import annotations

import msgspec

import chronik
from examples.shop.events import (
    AddLoyaltyPoints,
    CreateCustomer,
    CustomerCreated,
    LoyaltyPointsAdded,
)


class Customer(msgspec.Struct):
    """What the customer's decisions need to know."""

    exists: bool = False
    name: str = ""
    points: int = 0


def decide(command: chronik.Command, state: Customer) -> object:
    """The events a customer command produces, or a rejection."""
    match command.payload:
        case CreateCustomer(name=name, email=email):
            if state.exists:
                raise chronik.CommandRejected("Customer already exists")
            if not name.strip():
                raise chronik.CommandRejected("Customer name is required")
            return CustomerCreated(name.strip(), email)
        case AddLoyaltyPoints(points=points):
            if not state.exists:
                raise chronik.CommandRejected("Customer does not exist")
            return LoyaltyPointsAdded(points)
    raise chronik.CommandRejected(f"unexpected command {command.type}")  # pragma: no cover


def evolve(state: Customer, event: object) -> Customer:
    """The customer after one event."""
    match event:
        case CustomerCreated(name=name):
            return Customer(True, name, state.points)
        case LoyaltyPointsAdded(points=points):
            return Customer(state.exists, state.name, state.points + points)
    return state


customer = chronik.Decider(
    "customer",
    decide,
    evolve,
    Customer,
    commands={"CreateCustomer": CreateCustomer, "AddLoyaltyPoints": AddLoyaltyPoints},
    snapshots=chronik.Snapshots(every=100),
)
