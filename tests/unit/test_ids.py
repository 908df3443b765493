"""New event ids (UUIDv7) and ids derived from a command id (the ids earlier versions stored)."""

from __future__ import annotations

import os
import uuid

from hypothesis import given
from hypothesis import strategies as st

from chronik.ids import event_id_for, new_event_id

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


def test_new_event_ids_are_uuid7_in_creation_order_and_unique() -> None:
    """New ids are RFC 9562 version 7 in canonical text, sort in the order they were made
    (past one counter's 4,096 ids in a millisecond) and never repeat."""
    ids = [new_event_id() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for text in ids[::97]:
        u = uuid.UUID(text)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == text


def test_a_forked_child_never_hands_out_its_parents_random_bits() -> None:
    """The random bytes are drawn ahead in blocks: a forked child drops the block it inherited,
    so parent and child make different ids from then on."""
    new_event_id()  # the parent has a block of random bytes in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then exit at once
        os.close(read)
        os.write(write, "\n".join(new_event_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    mine = [new_event_id() for _ in range(50)]
    with os.fdopen(read) as f:
        theirs = f.read().split("\n")
    os.waitpid(pid, 0)
    assert len(theirs) == 50
    assert not {i[19:] for i in mine} & {i[19:] for i in theirs}  # the random parts differ
