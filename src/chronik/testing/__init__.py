"""Testing helpers: given/when/then for business logic, fixtures for sagas and projections,
and the adapters' conformance suites.

``chronik.testing.conformance`` (it needs pytest) is imported by path.
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
