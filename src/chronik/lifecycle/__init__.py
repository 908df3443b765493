"""Data over time: export, import, move and back up a store (``chronik export/import/move/backup``).

What lives here: ``format`` (the export file: JSON lines with a versioned header, one line per
event, an end line), ``export`` (a store's events in global order, streamed), ``importer`` (an
export appended to a store, idempotent and resumable), ``move`` (export piped into import in
one process, then verified) and ``sqlite_backup`` (SQLite's online backup API). Everything
works through the store port (``chronik.store``), so every adapter can be exported from and
imported into; only ``sqlite_backup`` is specific to one backend.

Imports: chronik.errors, chronik.messages, chronik.values, chronik.store (the port and
``open_store``) and the standard library's sqlite3; never chronik.projections, chronik.server
or chronik.cli.
"""

from chronik.lifecycle.export import ExportReport, export_events, export_lines
from chronik.lifecycle.format import FORMAT_VERSION, ImportConflict, InvalidExport
from chronik.lifecycle.importer import ImportReport, import_events
from chronik.lifecycle.move import MoveReport, move_store
from chronik.lifecycle.sqlite_backup import BackupReport, backup_sqlite

__all__ = [
    "FORMAT_VERSION",
    "BackupReport",
    "ExportReport",
    "ImportConflict",
    "ImportReport",
    "InvalidExport",
    "MoveReport",
    "backup_sqlite",
    "export_events",
    "export_lines",
    "import_events",
    "move_store",
]
