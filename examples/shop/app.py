"""The shop wired in-process: both domains on one Chronik app."""

from __future__ import annotations

import msgspec

import chronik
from chronik.projections import Projection
from chronik.transports.message import Message
from examples.shop.customer import customer
from examples.shop.events import CustomerCreated, registry
from examples.shop.projections import customer_summary, loyalty, receipts
from examples.shop.transaction import Transaction


def build_app(store: str | chronik.EventStore = "sqlite:///data/events.db") -> chronik.Chronik:
    """A Chronik app serving the customer and transaction domains."""
    app = chronik.Chronik(store=store, registry=registry)
    app.add_model(customer)
    app.add_aggregate(Transaction)
    app.add_outbox(customer_registered)
    return app


def customer_registered(
    event: object, data: chronik.PreparedEvent, stream: chronik.StreamId
) -> Message | None:
    """CustomerCreated -> a `customer.registered` integration event, via the outbox."""
    if not isinstance(event, CustomerCreated):
        return None
    meta = msgspec.json.decode(data.metadata or b"{}")
    body = {"customer_id": stream.aggregate_id, "name": event.name, "email": event.email}
    return Message(
        topic="customer.registered",
        id=data.event_id,
        body=msgspec.json.encode(body),
        headers={"correlation-id": meta.get("correlation_id", ""), "causation-id": data.event_id},
    )


def projections(app: chronik.Chronik) -> list[Projection]:
    """The read models and the loyalty saga, run next to the app by `chronik serve`."""
    return [receipts, customer_summary, loyalty(app.dispatch)]
