"""Testing helpers: given/when/then for business logic, and the adapters' conformance suites.

``chronik.testing.conformance`` (it needs pytest) is imported by path.
"""

from chronik.testing.given import Outcome, Scenario, given

__all__ = ["Outcome", "Scenario", "given"]
