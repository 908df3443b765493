"""The old import path of leases; they live in ``chronik.store.leases``."""

from __future__ import annotations

from chronik.store.leases import Lease, acquire, holders, release

__all__ = ["Lease", "acquire", "holders", "release"]
