"""What the cluster chaos drill adds to the shop (``projections: tests.drills.chaos_app:...``).

- ``autocomplete``: a saga with a deadline. A transaction created with an item whose sku is
  ``auto`` is completed by the saga ``AFTER`` seconds later (deadline ``complete``); the clients
  never complete those themselves, so each must end with exactly one ``TransactionCompleted``
  sent by the saga from exactly one ``chronik.DeadlineFired``.
- ``record_consumed``: the consumer of the shop's outbox messages (``customer.registered``):
  run behind the store inbox, it appends one ``chaos.consumed`` event per handling to stream
  ``chaos.consumed/<message id>`` in the inbox's unit of work, so a message handled twice
  would show as two events.
"""

from __future__ import annotations

import msgspec

import chronik
from chronik.projections import Projection
from chronik.sagas import Saga, SagaContext
from chronik.transports.message import Delivery
from examples.shop.app import projections as shop_projections

AFTER = 1.0  # seconds from TransactionCreated to the autocomplete deadline
AUTO_SKU = "auto"
CONSUMED = "chaos.consumed"


class Auto(msgspec.Struct):
    """An autocomplete instance: whether its deadline is armed."""

    armed: bool = False


def _transaction(event: chronik.RecordedEvent) -> str | None:
    return event.stream.aggregate_id if event.stream.domain == "transaction" else None


autocomplete: Saga[Auto] = Saga("autocomplete", state=Auto, associate=_transaction)


@autocomplete.starts_with("TransactionCreated")
def _created(state: Auto, event: chronik.RecordedEvent, ctx: SagaContext) -> Auto:
    """An ``auto`` transaction: arm the deadline that completes it."""
    items = event.json()["items"]
    if not any(item["sku"] == AUTO_SKU for item in items):
        ctx.end()
        return state
    ctx.schedule("complete", AFTER)
    return Auto(armed=True)


@autocomplete.on_deadline("complete")
def _complete(state: Auto, event: chronik.RecordedEvent, ctx: SagaContext) -> Auto:
    """The deadline fired: complete the transaction, end the instance."""
    ctx.send(
        chronik.Command(
            domain="transaction", aggregate_id=ctx.instance_id, type="CompleteTransaction"
        )
    )
    ctx.end()
    return Auto(armed=False)


def projections(app: chronik.Chronik) -> list[Projection]:
    """The shop's read models and loyalty saga, and the autocomplete saga."""
    return [*shop_projections(app), autocomplete.projection(app.dispatch)]


async def record_consumed(delivery: Delivery, unit: chronik.UnitOfWork) -> None:
    """One ``chaos.consumed`` event per handling of an outbox message, in the inbox's unit."""
    stream = chronik.StreamId("chaos.consumed", delivery.id)
    body = {"message_id": delivery.id, "topic": delivery.topic, "attempt": delivery.attempt}
    unit.append(stream, [chronik.EventData(CONSUMED, body)])
