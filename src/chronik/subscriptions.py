"""Old import path of ``Subscription``; it lives in ``chronik.store.subscription``."""

from chronik.store.subscription import Subscription

__all__ = ["Subscription"]
