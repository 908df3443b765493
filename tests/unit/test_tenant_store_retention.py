"""Retention defaults per tenant: ``tenant:domain`` and ``tenant:*`` keys over domain keys."""

from __future__ import annotations

from pathlib import Path

import pytest

import chronik
from chronik import EventData, StreamId
from chronik.lifecycle.scavenger import check_defaults, scavenge
from chronik.store.retention import Retention


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_tenant_defaults_win_over_domain_defaults(kind: str, tmp_path: Path) -> None:
    """acme keeps 1 event of domain d, beta 3 of every domain, others the domain's 2."""
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path}/r.db"
    async with chronik.open_store(url) as store:
        streams = [
            StreamId("d", "s", "acme"),
            StreamId("d", "s", "beta"),
            StreamId("e", "s", "beta"),
            StreamId("d", "s", ""),
            StreamId("d", "s", "gamma"),
            StreamId("e", "s", "acme"),
        ]
        for stream in streams:
            await store.append(stream, [EventData("x", {"n": n}) for n in range(5)])
        defaults = {
            "d": Retention(max_count=2),
            "acme:d": Retention(max_count=1),
            "beta:*": Retention(max_count=3),
        }
        report = await scavenge(store, defaults)
        kept = {str(s): len([e async for e in store.read_stream(s)]) for s in streams}
        assert kept == {
            "acme:d/s": 1,
            "beta:d/s": 3,
            "beta:e/s": 3,
            "d/s": 2,
            "gamma:d/s": 2,
            "acme:e/s": 5,
        }
        assert report.events == 4 + 2 + 2 + 3 + 3


def test_a_bad_tenant_in_a_default_key_is_refused() -> None:
    """A key whose tenant part breaks the naming rule is a ValidationError."""
    with pytest.raises(chronik.ValidationError):
        check_defaults({"Bad Tenant:d": Retention(max_count=1)})
