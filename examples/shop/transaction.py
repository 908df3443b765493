"""The transaction domain, in the aggregate style: command methods emit, apply methods change."""

from __future__ import annotations

import chronik
from examples.shop.events import (
    CompleteTransaction,
    CreateTransaction,
    Item,
    TransactionCompleted,
    TransactionCreated,
)


class Transaction(chronik.Aggregate):
    """A customer's basket, created once and completed once."""

    domain = "transaction"
    snapshots = chronik.Snapshots(every=100)

    customer_id: str = ""
    items: list[Item] = []  # noqa: RUF012 - copied for each instance
    completed: bool = False

    @chronik.command()
    def create(self, cmd: CreateTransaction) -> None:
        self.require(not self.customer_id, "Transaction already exists")
        self.emit(TransactionCreated(cmd.customer_id, cmd.items))

    @chronik.command()
    def complete(self, cmd: CompleteTransaction) -> None:
        self.require(self.customer_id, "Transaction does not exist")
        self.require(not self.completed, "Transaction is already completed")
        self.require(self.items, "Transaction is empty")
        amount = sum(item.price_cents * item.qty for item in self.items)
        self.emit(TransactionCompleted(self.customer_id, amount))

    @chronik.apply
    def _created(self, event: TransactionCreated) -> None:
        self.customer_id = event.customer_id
        self.items = list(event.items)

    @chronik.apply
    def _completed(self, event: TransactionCompleted) -> None:
        self.completed = True
