"""The shop's read side: two projections and the loyalty saga."""

from __future__ import annotations

import msgspec

import chronik
from chronik.projections import Projection, ReadModel, Table
from chronik.reactions import Dispatch
from chronik.sagas import Saga, SagaContext
from examples.shop.events import registry

receipts = Projection(
    "receipts",
    tables=[
        Table(
            "receipts",
            {"transaction_id": str, "customer_id": str, "amount_cents": int},
            primary_key="transaction_id",
        )
    ],
)


@receipts.on("TransactionCompleted")
def _receipt(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    done = registry.decode(event)
    rm.upsert(
        "receipts",
        transaction_id=event.stream.aggregate_id,
        customer_id=done.customer_id,
        amount_cents=done.amount_cents,
    )


SUMMARY = Table(
    "customer_summary",
    {
        "customer_id": str,
        "name": str,
        "email": str,
        "loyalty_points": int,
        "transactions": int,
        "total_spent_cents": int,
    },
    primary_key="customer_id",
)
customer_summary = Projection("customer_summary", tables=[SUMMARY])
_EMPTY = {"name": "", "email": "", "loyalty_points": 0, "transactions": 0, "total_spent_cents": 0}


async def _row(rm: ReadModel, customer_id: str) -> dict[str, object]:
    return await rm.get("customer_summary", customer_id=customer_id) or {
        "customer_id": customer_id,
        **_EMPTY,
    }


@customer_summary.on("CustomerCreated")
async def _created(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    created = registry.decode(event)
    row = await _row(rm, event.stream.aggregate_id)
    rm.upsert("customer_summary", {**row, "name": created.name, "email": created.email})


@customer_summary.on("LoyaltyPointsAdded")
async def _points(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    row = await _row(rm, event.stream.aggregate_id)
    points = int(row["loyalty_points"])  # type: ignore[call-overload]
    rm.upsert("customer_summary", {**row, "loyalty_points": points + registry.decode(event).points})


@customer_summary.on("TransactionCompleted")
async def _spent(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    done = registry.decode(event)
    row = await _row(rm, done.customer_id)
    rm.upsert(
        "customer_summary",
        {
            **row,
            "transactions": int(row["transactions"]) + 1,  # type: ignore[call-overload]
            "total_spent_cents": int(row["total_spent_cents"]) + done.amount_cents,  # type: ignore[call-overload]
        },
    )


class Loyalty(msgspec.Struct):
    """A customer's loyalty saga: the points it has awarded."""

    awarded: int = 0


loyalty_saga: Saga[Loyalty] = Saga("loyalty", state=Loyalty, associate="customer_id")


@loyalty_saga.starts_with("TransactionCompleted")
def _award(state: Loyalty, event: chronik.RecordedEvent, ctx: SagaContext) -> Loyalty:
    """TransactionCompleted -> AddLoyaltyPoints{points = amount_cents // 100}."""
    done = registry.decode(event)
    points = done.amount_cents // 100
    if points > 0:
        ctx.send(
            chronik.Command(
                domain="customer",
                aggregate_id=done.customer_id,
                type="AddLoyaltyPoints",
                payload={"points": points},
            )
        )
    return Loyalty(state.awarded + points)


def loyalty(dispatch: Dispatch) -> Projection:
    """The loyalty saga: every completed transaction earns its customer points."""
    return loyalty_saga.projection(dispatch)
