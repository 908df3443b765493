"""Deletions reach the archive on PostgreSQL: the memory/SQLite cases of
``tests/unit/test_archive_deletions.py`` against a real server and a directory archive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chronik
from chronik.archive import Archive
from chronik.archive.directory import DirectoryBlobs
from chronik.store.base import EventStore
from tests.unit.test_archive_deletions import (
    test_a_run_cut_short_before_the_archive_rewrite_is_completed,
    test_another_process_holding_the_archiver_lease_defers_the_rewrite,
    test_compaction_over_an_archived_prefix,
    test_default_tenant_reads_through_the_archive_limit_after_the_filter,
    test_max_age_counts_archived_record_times,
    test_scavenging_removes_archived_events_everywhere,
)

__all__ = [
    "test_a_run_cut_short_before_the_archive_rewrite_is_completed",
    "test_another_process_holding_the_archiver_lease_defers_the_rewrite",
    "test_compaction_over_an_archived_prefix",
    "test_default_tenant_reads_through_the_archive_limit_after_the_filter",
    "test_max_age_counts_archived_record_times",
    "test_scavenging_removes_archived_events_everywhere",
]


@pytest.fixture
async def store(postgres_url: str, tmp_path: Path) -> AsyncIterator[EventStore]:
    """A PostgreSQL store with a directory archive attached."""
    async with chronik.open_store(postgres_url) as s:
        archive = Archive(DirectoryBlobs(tmp_path / "arc"))
        await archive.open()
        s.attach_archive(archive)
        yield s
