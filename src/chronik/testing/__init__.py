"""Testing helpers: given/when/then for business logic, fixtures for sagas and projections,
and the adapters' conformance suites.

What lives here: ``given`` (aggregates and deciders), ``sagas`` and ``projections`` (fixtures,
exported below); ``conformance`` (the store port's suite, with ``conformance_reads``,
``conformance_state``, ``conformance_faults``, ``conformance_leases`` and ``conformance_dcb``),
``dcb_scenario`` (the DCB consistency scenario: concurrent conditional writers, then a check of
the whole log), ``transport_conformance`` (the transport
port's suite, with ``transport_failures`` and the helpers in ``transport_kit``) and ``faults``
(a fault-injecting store); ``service_base``, ``services`` and ``brokers`` (real PostgreSQL,
NATS and RabbitMQ servers for tests and benchmarks). The suites (they need pytest) and the
services are imported by path.

Imports: the public chronik API and its ports (chronik, chronik.errors, chronik.messages,
chronik.codec, chronik.aggregate, chronik.commands, chronik.sagas, chronik.deadlines,
chronik.projections, chronik.store, chronik.transports); never chronik.server or chronik.cli.
Nothing in chronik outside this package imports it.
"""

from chronik.testing.given import Outcome, Scenario, given
from chronik.testing.projections import ProjectionFixture, projection_fixture
from chronik.testing.sagas import SagaFixture, saga_fixture

__all__ = [
    "Outcome",
    "ProjectionFixture",
    "SagaFixture",
    "Scenario",
    "given",
    "projection_fixture",
    "saga_fixture",
]
