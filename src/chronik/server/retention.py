"""``chronik serve``'s retention: the ``retention`` config section and the supervised scavenger.

    retention:
      domains:                         # defaults for streams without rules of their own
        metrics: {max_count: 1000}
        audit: {max_age: 90d}
      scavenger: {enabled: true, interval: 1h, batch_size: 500, lease_ttl: 60}

``start_scavenger`` runs a ``chronik.lifecycle.scavenger.Scavenger`` as the supervised task
``scavenger`` (health shows it: running, restarted after a failure with a backoff); it works
only while it holds the store's scavenger lease, so one runner per store whatever the number of
nodes. Imports chronik's core, never the HTTP stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from chronik.app import Chronik
from chronik.errors import ConfigurationError, ValidationError
from chronik.lifecycle.scavenger import Scavenger
from chronik.store.retention import Retention, check_retention, parse_duration

__all__ = ["RetentionConfig", "RetentionRule", "ScavengerConfig", "start_scavenger"]


class RetentionRule(msgspec.Struct, forbid_unknown_fields=True):
    """A domain's default rules: ``max_age`` (seconds or "30d"), ``max_count``."""

    max_age: float | str | None = None
    max_count: int | None = None


class ScavengerConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The background scavenger: off unless enabled; ``interval`` between runs."""

    enabled: bool = False
    interval: float | str = 3600.0
    batch_size: int = 500
    lease_ttl: float = 60.0


class RetentionConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The ``retention`` section: per-domain defaults and the scavenger."""

    domains: dict[str, RetentionRule] = msgspec.field(default_factory=dict)
    scavenger: ScavengerConfig = msgspec.field(default_factory=ScavengerConfig)

    def defaults(self) -> dict[str, Retention]:
        """The per-domain rules, checked (ConfigurationError naming the setting)."""
        out: dict[str, Retention] = {}
        for domain, rule in self.domains.items():
            try:
                out[domain] = check_retention(rule.max_age, rule.max_count)
            except ValidationError as exc:
                raise ConfigurationError(f"retention.domains.{domain}.{exc.field}: {exc}") from None
        return out

    def check(self) -> None:
        """Refuse a section that cannot work (ConfigurationError naming the setting)."""
        self.defaults()
        sc = self.scavenger
        try:
            parse_duration(sc.interval, "interval")
        except ValidationError as exc:
            raise ConfigurationError(f"retention.scavenger.interval: {exc}") from None
        if not 1 <= sc.batch_size <= 100_000:
            raise ConfigurationError("retention.scavenger.batch_size: must be 1..100000")
        if not sc.lease_ttl > 0:
            raise ConfigurationError("retention.scavenger.lease_ttl: must be > 0")

    def scavenger_for(self, app: Chronik) -> Scavenger:
        """The Scavenger this section describes, on ``app``'s store."""
        self.check()
        sc = self.scavenger
        return Scavenger(
            app.store,
            self.defaults(),
            interval=parse_duration(sc.interval, "interval"),
            batch_size=sc.batch_size,
            lease_ttl=sc.lease_ttl,
        )


def start_scavenger(
    config: RetentionConfig, app: Chronik
) -> tuple[Scavenger, Callable[[], Awaitable[None]]]:
    """Start the scavenger as the supervised task ``scavenger`` of ``app.health``; it and the
    step that stops it (and lets its lease go)."""
    scavenger = config.scavenger_for(app)
    app.health.supervise("scavenger", scavenger.run_forever, vital=False)

    async def stop_scavenger() -> None:
        await app.health.stop_task("scavenger")
        await scavenger.stop()

    return scavenger, stop_scavenger
