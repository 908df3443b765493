"""``chronik db``: create a store's schema or bring it up to date."""

from __future__ import annotations

import typer

from chronik.cli.common import STORE_OPTION, console, run, store_url
from chronik.store import open_store

__all__ = ["db", "migrate"]

db = typer.Typer(help="Database schema.", no_args_is_help=True)


async def migrate(url: str) -> str:
    """Run the store's migrations; PostgreSQL reports the schema versions."""
    if url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        open_store(url)  # checks the scheme and that the driver is installed
        from chronik.adapters import safe_url
        from chronik.store.postgres import migrate_database

        before, after = await migrate_database(url)
        change = f"migrated from version {before} to {after}" if before != after else "up to date"
        return f"store {safe_url(url)} is ready: schema {change}"
    async with open_store(url) as s:
        head = await s.head()
    return f"store {url} is ready (head position: {head or 'empty'})"


@db.command("init")
def db_init(store: str | None = STORE_OPTION) -> None:
    """Create the store's schema (or bring it up to date)."""
    console().print(run(lambda: migrate(store_url(store))), highlight=False)


@db.command("migrate")
def db_migrate(store: str | None = STORE_OPTION) -> None:
    """Apply the store's pending schema migrations (PostgreSQL: ?schema=NAME)."""
    console().print(run(lambda: migrate(store_url(store))), highlight=False)
