"""The command path's parts: middleware chains built once, deadline events kept from the
business logic in one place, the naming rules defined once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
import chronik.middleware
from chronik import Command
from chronik.deadlines import DeadlineScheduled, schedule
from chronik.messages import DOMAIN_RE, TENANT_RE, TYPE_NAME_RE

registry = chronik.EventRegistry()


@registry.event()
class Noted(msgspec.Struct):
    text: str


def decide(command: Command, state: list[str]) -> Any:
    return [Noted(command.type), schedule("later", 60, "Later")]


def note(domain: str) -> Command:
    return Command(domain=domain, aggregate_id="n-1", type="Note")


async def test_handler_chains_are_built_when_middleware_changes_not_per_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handler middleware wraps every domain, added before or after it, and dispatching builds
    no chain: the chains are built on use_handler / register only."""
    binds: list[Any] = []
    bind = chronik.middleware._bind_handler

    def counting(mw: Any, call_next: Any) -> Any:
        binds.append(mw)
        return bind(mw, call_next)

    monkeypatch.setattr(chronik.middleware, "_bind_handler", counting)
    calls: list[str] = []

    def tracer(name: str) -> Any:
        async def mw(command: Command, state: Any, call_next: Any) -> list[Any]:
            calls.append(f"{name}:{command.domain}")
            result: list[Any] = await call_next(command, state)
            return result

        return mw

    app = chronik.Chronik("memory://", registry=registry)
    app.add_decider("early", decide, lambda s, e: s, list)
    app.use_handler(tracer("outer"))
    app.add_decider("late", decide, lambda s, e: s, list)
    app.use_handler(tracer("inner"))
    built = len(binds)
    async with app:
        for _ in range(3):
            for domain in ("early", "late"):
                await app.dispatch(note(domain))
    assert len(binds) == built  # no chain built while dispatching
    assert calls[:4] == ["outer:early", "inner:early", "outer:late", "inner:late"]
    assert len(calls) == 12


async def test_deadline_events_never_reach_evolve_after_a_decision_or_a_load() -> None:
    """evolve sees the logic's own events, never chronik's DeadlineScheduled: neither right
    after the command (settle) nor when the stream is loaded again."""
    seen: list[type[Any]] = []

    def evolve(state: list[str], event: Any) -> list[str]:
        seen.append(type(event))
        return [*state, event.text]

    app = chronik.Chronik("memory://", registry=registry)
    app.add_decider("notes", decide, evolve, list)
    async with app:
        result = await app.dispatch(note("notes"))
        assert [e.type for e in result.events] == ["Noted", "chronik.DeadlineScheduled"]
        assert await app.load("notes", "n-1") == ["Note"]
    assert seen == [Noted, Noted] and DeadlineScheduled not in seen


async def test_a_bus_registers_the_deadline_events_in_its_registry() -> None:
    """The repository (the one place that knows deadline events) allows them in the registry
    it decodes with, so a registry given to the app gets them."""
    own = chronik.EventRegistry()
    chronik.Chronik("memory://", registry=own)
    assert "chronik.DeadlineScheduled" in own and "chronik.DeadlineCancelled" in own


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (DOMAIN_RE, ["a", "shop.orders-2"], ["A", "1a", "a/b", "a" * 65]),
        (TENANT_RE, ["0", "acme_1"], ["-a", "A", "a:b"]),
        (TYPE_NAME_RE, ["customer.created", "Place:v2"], ["1x", "a b", "x" * 129]),
    ],
)
def test_the_naming_rules(rule: re.Pattern[str], good: list[str], bad: list[str]) -> None:
    """Each naming rule accepts its names and refuses the others."""
    assert all(rule.fullmatch(n) for n in good)
    assert not any(rule.fullmatch(n) for n in bad)


def test_each_naming_rule_is_compiled_in_one_module() -> None:
    """No module but chronik.messages compiles the domain or type-name pattern again."""
    src = Path(chronik.__file__).parent
    patterns = [DOMAIN_RE.pattern, TENANT_RE.pattern, TYPE_NAME_RE.pattern]
    copies = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if path.name != "messages.py"
        and any(f're.compile(r"{p}"' in path.read_text() for p in patterns)
    ]
    assert copies == []
