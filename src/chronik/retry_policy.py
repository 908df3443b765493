"""How the command bus retries a command that lost an append race (``RetryPolicy``)."""

from __future__ import annotations

import random

import msgspec

from chronik.errors import ConfigurationError

__all__ = ["RetryPolicy"]


class RetryPolicy(msgspec.Struct, frozen=True):
    """How often a command is decided again after losing an append race, and the pauses."""

    attempts: int = 10
    base_delay: float = 0.002
    max_delay: float = 0.2

    def __post_init__(self) -> None:
        if type(self.attempts) is not int or self.attempts < 1:
            raise ConfigurationError("RetryPolicy.attempts must be an int >= 1")

    def delay(self, attempt: int) -> float:
        """The jittered pause before retry number ``attempt`` (0-based)."""
        return min(self.max_delay, self.base_delay * 2.0**attempt) * random.uniform(0.5, 1.5)
