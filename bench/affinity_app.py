"""The app the ``affinity`` bench serves on each node: an ``account`` decider whose every
decision is counted (a decision beyond the first of a command is a retry after a conflict).

The counts are written to ``$CHRONIK_BENCH_COUNTS/<pid>.json`` when the node exits.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any

import msgspec

import chronik

registry = chronik.EventRegistry()
counts = {"decisions": 0, "commands": 0}


@registry.event()
class Deposited(msgspec.Struct):
    amount: int


class Deposit(msgspec.Struct):
    amount: int


def decide(command: chronik.Command, state: dict[str, Any]) -> list[Deposited]:
    assert isinstance(command.payload, Deposit)
    return [Deposited(command.payload.amount)]


def evolve(state: dict[str, Any], event: Deposited) -> dict[str, Any]:
    return {"balance": state.get("balance", 0) + event.amount}


async def count_decisions(command: chronik.Command, state: Any, call_next: Any) -> Any:
    counts["decisions"] += 1
    return await call_next(command, state)


def _write() -> None:
    where = os.environ.get("CHRONIK_BENCH_COUNTS")
    if where:
        Path(where, f"{os.getpid()}.json").write_text(json.dumps(counts))


def build_app(store: str) -> chronik.Chronik:
    """The node's app: the counted ``account`` domain."""
    app = chronik.Chronik(store, registry=registry)
    app.add_decider("account", decide, evolve, dict, commands={"Deposit": Deposit})
    app.use_handler(count_decisions)
    atexit.register(_write)
    return app
