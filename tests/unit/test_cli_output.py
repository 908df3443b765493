"""What the CLI prints: whole identifiers at 80 columns, JSON Lines for every ``--json``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.outbox import OutboxDispatcher, record
from chronik.projections import ErrorPolicy, Projection, ProjectionProcessor, ReadModel, Table
from chronik.transports.memory import MemoryTransport
from chronik.transports.message import Message

PROJECTION = "money_transfer_saga_with_a_long_descriptive_name"
STREAM = "money_transfer/transfer-2024-0001-from-checking-account-to-savings-account-of-customer-42"
TYPE = "money_transfer.transfer_requested_by_customer"
MESSAGE = "msg-0001-money-transfer-requested-notification"
TOPIC = "bank.money_transfer.requested.notifications"


class Down(MemoryTransport):
    """A transport that is always down."""

    async def _publish(self, message: Message) -> None:
        raise chronik.ChronikError("down")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with long names everywhere: a stream, an event type, a projection that parked
    that event, and a failed outbox message."""
    url = f"sqlite:///{tmp_path_factory.mktemp('out')}/long.db"
    p = Projection(
        PROJECTION,
        tables=[Table("transfers", {"id": str}, primary_key="id")],
        policy=ErrorPolicy(retries=0),
    )

    @p.on(TYPE)
    def fail(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        raise ValueError("this transfer cannot be projected")

    async def fill() -> None:
        async with chronik.open_store(url) as store:
            domain, aggregate_id = STREAM.split("/")
            r = await store.append(
                chronik.StreamId(domain, aggregate_id),
                [chronik.EventData(TYPE, {"amount_cents": 1}) for _ in range(2)],
            )
            async with ProjectionProcessor(store, p, heartbeat=0.05) as proc:
                await proc.wait_for(r.position)
            async with store.transaction() as tx:
                record(tx, Message(topic=TOPIC, body=b"{}", id=MESSAGE, key="k"))
            async with Down("memory://") as down:
                await OutboxDispatcher(store, down, max_attempts=1).dispatch_once()

    asyncio.run(fill())
    return url


def invoke(url: str, *args: str) -> str:
    """Run one command against the store at 80 columns; its stdout (exit code 0 checked)."""
    result = CliRunner().invoke(_build(), [*args, "--store", url])
    assert result.exit_code == 0, result.output
    return result.stdout


TABLES = {
    ("streams", "list"): [STREAM],
    ("events", "read", STREAM): [TYPE],
    ("projections", "status"): [PROJECTION],
    ("projections", "dead-letters", "list"): [PROJECTION, STREAM, TYPE],
    ("outbox", "list"): [MESSAGE, TOPIC],
}


@pytest.mark.parametrize("args", list(TABLES), ids=" ".join)
def test_tables_never_cut_identifiers_at_80_columns(
    url: str, args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns every name, stream, type and id shows whole, on one line."""
    monkeypatch.setenv("COLUMNS", "80")
    out = invoke(url, *args)
    assert "…" not in out
    for name in TABLES[args]:
        assert any(name in line for line in out.splitlines()), (name, out)


JSON_COMMANDS = [  # (command, its other arguments, a field every line has)
    (("streams", "list"), (), "stream"),
    (("events", "read"), (STREAM,), "event_id"),
    (("events", "tail"), ("--from-start", "--count", "2"), "event_id"),
    (("projections", "status"), (), "name"),
    (("projections", "dead-letters", "list"), (), "event_id"),
    (("outbox", "status"), (), "failed"),
    (("outbox", "list"), (), "id"),
    (("cluster", "status"), (), "members"),  # one line: the membership view
]
#: --json commands that need a broker, not a store: JSON Lines checked in test_cli_transport.py
OTHER_JSON_COMMANDS = {("transport", "dead-letters", "list"), ("transport", "dead-letters", "show")}
#: --json commands that read an export file or a second store: checked in test_export.py
OTHER_JSON_COMMANDS |= {("import",), ("move",)}
#: --json commands of retention and the scavenger: JSON Lines checked in test_cli_streams.py
OTHER_JSON_COMMANDS |= {("streams", "retention", "set"), ("streams", "retention", "show")}
OTHER_JSON_COMMANDS |= {("scavenge",)}
#: compaction needs an app config: its --json is checked in integration/test_compact_cli_http.py
OTHER_JSON_COMMANDS |= {("streams", "compact")}
#: the archiver needs an archive URL: its --json is checked in test_archiver.py
OTHER_JSON_COMMANDS |= {("archive", "run"), ("archive", "status")}


@pytest.mark.parametrize(("command", "args", "field"), JSON_COMMANDS, ids=lambda v: " ".join(v))
def test_every_json_output_is_json_lines(
    url: str, command: tuple[str, ...], args: tuple[str, ...], field: str
) -> None:
    """--json prints one JSON object per line, whatever the command."""
    lines = invoke(url, *command, *args, "--json").splitlines()
    assert lines
    for line in lines:
        row = json.loads(line)
        assert isinstance(row, dict) and field in row, line


def _json_commands(group: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The command paths of a (click) ``group`` that take ``--json``."""
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a sub-group
            found |= _json_commands(command, (*path, name))
        elif any("--json" in p.opts for p in command.params):
            found.add((*path, name))
    return found


def test_the_json_test_covers_every_json_command() -> None:
    """Each CLI command with --json is in the JSON Lines test above; docs/cli.md says JSON
    Lines."""
    root = typer.main.get_command(_build())
    assert _json_commands(root) == {c for c, _, _ in JSON_COMMANDS} | OTHER_JSON_COMMANDS
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    assert "JSON Lines" in docs
