"""The example shop's business rules, with the given/when/then test kit."""

from __future__ import annotations

import pytest

import chronik
from chronik.testing import given
from examples.shop.customer import Customer, customer
from examples.shop.events import (
    CustomerCreated,
    Item,
    LoyaltyPointsAdded,
    TransactionCompleted,
    TransactionCreated,
    registry,
)
from examples.shop.transaction import Transaction

ITEMS = [Item("book", 1500, 2), Item("pen", 250, 3)]


def test_create_customer() -> None:
    """A new customer is created with a trimmed name."""
    given(customer, registry=registry).when(
        "CreateCustomer", {"name": " Ada ", "email": "ada@x"}
    ).then_events(CustomerCreated("Ada", "ada@x")).then_state(
        lambda s: s == Customer(True, "Ada", 0)
    )


@pytest.mark.parametrize(
    ("history", "payload", "reason"),
    [
        (
            [CustomerCreated("Ada", "a@x")],
            {"name": "Bo", "email": "b@x"},
            "Customer already exists",
        ),
        ([], {"name": "  ", "email": "b@x"}, "Customer name is required"),
    ],
)
def test_create_customer_rejections(
    history: list[object], payload: dict[str, str], reason: str
) -> None:
    """Creating an existing customer or one without a name is rejected with the reason."""
    given(customer, *history).when("CreateCustomer", payload).then_rejected(reason)


def test_loyalty_points() -> None:
    """Points are added to an existing customer and need a positive amount."""
    created = CustomerCreated("Ada", "a@x")
    given(customer, created).when("AddLoyaltyPoints", {"points": 37}).then_events(
        LoyaltyPointsAdded(37)
    )
    given(customer).when("AddLoyaltyPoints", {"points": 1}).then_rejected("Customer does not exist")
    given(customer, created).when("AddLoyaltyPoints", {"points": 0}).then_error(
        chronik.InvalidCommand, "points"
    )


def test_transaction_completes_with_its_amount() -> None:
    """Completing a transaction reports the customer and the amount of its items."""
    given(Transaction, TransactionCreated("cust-1", ITEMS), registry=registry).when(
        "CompleteTransaction"
    ).then_events(TransactionCompleted("cust-1", 3750)).then_state(lambda t: t.completed)


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        ([TransactionCreated("c", [])], "Transaction is empty"),
        (
            [TransactionCreated("c", ITEMS), TransactionCompleted("c", 3750)],
            "Transaction is already completed",
        ),
        ([], "Transaction does not exist"),
    ],
)
def test_transaction_rejections(history: list[object], reason: str) -> None:
    """An empty, completed or missing transaction cannot be completed."""
    given(Transaction, *history).when("CompleteTransaction").then_rejected(reason)


def test_test_kit_reports_mismatches() -> None:
    """then_events / then_rejected fail with a message when the outcome differs."""
    outcome = given(customer).when("CreateCustomer", {"name": "Ada", "email": "a@x"})
    with pytest.raises(AssertionError, match="expected events"):
        outcome.then_events(CustomerCreated("Bo", "b@x"))
    with pytest.raises(AssertionError, match="expected a rejection"):
        outcome.then_rejected()
    rejected = given(customer, CustomerCreated("A", "a")).when(
        "CreateCustomer", {"name": "A", "email": "a"}
    )
    with pytest.raises(AssertionError, match="expected rejection 'nope'"):
        rejected.then_rejected("nope")
    with pytest.raises(AssertionError, match="expected events"):
        rejected.then_events()
