"""Overload protection of one node: bounded in-flight commands and subscriptions, per-API-key
rate limits. A request past a limit is refused at once with a retry hint, never queued.

    limits: {max_inflight_commands: 256, max_subscriptions: 1000, retry_after_ms: 100}
    auth:
      api_keys: [{name: web, key_env: WEB_KEY, rate: {per_s: 50, burst: 100}, ...}]

``Limiter`` is shared by the gRPC and HTTP servers of a node (``chronik serve`` builds one):
``command()`` and ``subscription()`` are context managers that hold a slot while the call runs
or raise ``Overloaded`` naming the limit; ``check_rate(key)`` takes a token from the key's
bucket or raises ``RateLimited`` with the time until the next token. Every refusal is counted
(``refused``) and told to the ``observers`` (``chronik.server.metrics`` counts them).
Plain Python: imports chronik.errors and msgspec only (the gRPC and HTTP edges wrap it:
``grpc_limits``, ``http_limits``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Annotated, Final

import msgspec

from chronik.errors import ConfigurationError, Overloaded, RateLimited

__all__ = [
    "RETRY_AFTER_METADATA",
    "LimitsConfig",
    "Limiter",
    "Rate",
    "TokenBucket",
]

#: the gRPC trailing metadata key of the retry hint (milliseconds, as text)
RETRY_AFTER_METADATA: Final = "retry-after-ms"

Positive = Annotated[int, msgspec.Meta(ge=1)]


class Rate(msgspec.Struct, forbid_unknown_fields=True):
    """A token bucket: ``per_s`` requests a second on average, bursts of up to ``burst``."""

    per_s: Annotated[float, msgspec.Meta(gt=0)]
    burst: Positive = 1


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The ``limits:`` section: None means unbounded."""

    #: commands being handled at once on this node (gRPC and HTTP together)
    max_inflight_commands: Positive | None = None
    #: open event subscriptions on this node (gRPC Subscribe, HTTP SSE streams)
    max_subscriptions: Positive | None = None
    #: the retry hint sent with a refusal for a node limit (rate limits compute their own)
    retry_after_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 100

    @property
    def configured(self) -> bool:
        """Whether any node limit is set."""
        return self.max_inflight_commands is not None or self.max_subscriptions is not None


class TokenBucket:
    """``rate.burst`` tokens, refilled at ``rate.per_s`` a second; ``take`` one or learn how
    long until there is one."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = float(rate.burst)
        self._at = clock()

    def take(self) -> float:
        """0.0 if a token was taken, else the seconds until one is there (nothing taken)."""
        now = self._clock()
        self._tokens = min(
            float(self.rate.burst), self._tokens + (now - self._at) * self.rate.per_s
        )
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate.per_s


Observer = Callable[[str, Overloaded], None]


class Limiter:
    """The limits of one node, shared by its servers (see the module docstring)."""

    def __init__(
        self,
        config: LimitsConfig | None = None,
        rates: Mapping[str, Rate] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or LimitsConfig()
        self._buckets = {name: TokenBucket(rate, clock) for name, rate in (rates or {}).items()}
        self.inflight_commands = 0
        self.subscriptions = 0
        #: refusals so far, by limit name
        self.refused: dict[str, int] = {}
        #: called with (api, error) on each refusal; api is "grpc" or "http"
        self.observers: list[Observer] = []

    @property
    def rated(self) -> bool:
        """Whether any API key has a rate."""
        return bool(self._buckets)

    @property
    def active(self) -> bool:
        """Whether there is anything to enforce (node limits or a rate)."""
        return self.config.configured or bool(self._buckets)

    def _refuse(self, api: str, exc: Overloaded) -> Overloaded:
        self.refused[exc.limit] = self.refused.get(exc.limit, 0) + 1
        for observe in self.observers:
            observe(api, exc)
        return exc

    @contextmanager
    def command(self, api: str = "grpc") -> Iterator[None]:
        """Hold an in-flight command slot for the block; Overloaded if none is free."""
        limit = self.config.max_inflight_commands
        if limit is not None and self.inflight_commands >= limit:
            raise self._refuse(
                api, Overloaded("limits.max_inflight_commands", self.config.retry_after_ms)
            )
        self.inflight_commands += 1
        try:
            yield
        finally:
            self.inflight_commands -= 1

    @contextmanager
    def subscription(self, api: str = "grpc") -> Iterator[None]:
        """Hold a subscription slot for the block; Overloaded if none is free."""
        limit = self.config.max_subscriptions
        if limit is not None and self.subscriptions >= limit:
            raise self._refuse(
                api, Overloaded("limits.max_subscriptions", self.config.retry_after_ms)
            )
        self.subscriptions += 1
        try:
            yield
        finally:
            self.subscriptions -= 1

    def check_rate(self, key: str, api: str = "grpc") -> None:
        """Take a token of API key ``key``'s bucket (a key without a rate is not limited);
        RateLimited with the wait until the next token otherwise."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return
        wait = bucket.take()
        if wait > 0.0:
            raise self._refuse(api, RateLimited(key, max(1, math.ceil(wait * 1000))))

    @classmethod
    def from_config(cls, limits: LimitsConfig, api_keys: Sequence[Mapping[str, object]]) -> Limiter:
        """The limiter of the ``limits:`` section and the ``rate`` of each API key."""
        rates: dict[str, Rate] = {}
        for i, entry in enumerate(api_keys):
            rate, name = entry.get("rate"), entry.get("name")
            if rate is None:
                continue
            try:
                rates[str(name)] = msgspec.convert(rate, Rate)
            except msgspec.ValidationError as exc:
                raise ConfigurationError(f"auth.api_keys[{i}].rate: {exc}") from None
        return cls(limits, rates)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<Limiter commands {self.inflight_commands}/{c.max_inflight_commands or 'inf'}, "
            f"subscriptions {self.subscriptions}/{c.max_subscriptions or 'inf'}, "
            f"{len(self._buckets)} rated keys, refused {sum(self.refused.values())}>"
        )
