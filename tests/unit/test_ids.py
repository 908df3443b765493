"""Ids derived from a command id stay the ids earlier versions stored."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from chronik.ids import event_id_for

NAMESPACE = uuid.UUID("6f1d3c52-7a0e-4c3b-9d61-2f8e5b7a9c14")


@given(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=128),
    st.integers(0, 10**9),
)
def test_event_id_for_is_the_uuid5_of_the_command_id_and_index(command_id: str, index: int) -> None:
    """event_id_for equals uuid.uuid5 of (command id, NUL, index) in chronik's namespace, so a
    command retried after an upgrade finds the events an older chronik stored."""
    expected = str(uuid.uuid5(NAMESPACE, f"{command_id}\x00{index}"))
    assert event_id_for(command_id, index) == expected


def test_a_known_derived_id() -> None:
    """One pinned value: the derivation never changes."""
    assert event_id_for("order-1", 0) == str(uuid.uuid5(NAMESPACE, "order-1\x000"))
    assert uuid.UUID(event_id_for("order-1", 0)).version == 5
