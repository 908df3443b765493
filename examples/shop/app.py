"""The shop wired in-process: both domains on one Chronik app."""

from __future__ import annotations

import chronik
from chronik.projections import Projection
from examples.shop.customer import customer
from examples.shop.events import registry
from examples.shop.projections import customer_summary, loyalty, receipts
from examples.shop.transaction import Transaction


def build_app(store: str | chronik.EventStore = "sqlite:///data/events.db") -> chronik.Chronik:
    """A Chronik app serving the customer and transaction domains."""
    app = chronik.Chronik(store=store, registry=registry)
    app.add_model(customer)
    app.add_aggregate(Transaction)
    return app


def projections(app: chronik.Chronik) -> list[Projection]:
    """The read models and the loyalty saga, run next to the app by `chronik serve`."""
    return [receipts, customer_summary, loyalty(app.dispatch)]
