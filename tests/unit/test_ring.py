"""The consistent-hash ring of command routing by aggregate affinity (chronik.cluster.ring)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronik.cluster.member import Member, MembershipView, live_digest
from chronik.cluster.ring import HashRing, key_of
from chronik.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]
KEYS = [key_of("", "account", f"acc-{i}") for i in range(3000)]
node_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12).map(
    lambda s: "n" + s
)


def _owners(ring: HashRing) -> list[str | None]:
    return [ring.owner(k) for k in KEYS]


@settings(max_examples=40, deadline=None)
@given(st.lists(node_ids, min_size=1, max_size=8, unique=True), node_ids)
def test_adding_one_member_moves_about_one_nth_of_the_keys_all_to_it(
    nodes: list[str], joiner: str
) -> None:
    """Adding a member to N moves ~1/(N+1) of the keys, and every moved key moves to it."""
    if joiner in nodes:
        return
    before = _owners(HashRing(nodes))
    after = _owners(HashRing([*nodes, joiner]))
    moved = [(b, a) for b, a in zip(before, after, strict=True) if a != b]
    assert all(a == joiner for _, a in moved)
    share = len(moved) / len(KEYS)
    expected = 1 / (len(nodes) + 1)
    assert 0.5 * expected <= share <= 1.6 * expected, (share, expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(node_ids, min_size=2, max_size=8, unique=True), st.data())
def test_removing_one_member_moves_only_its_keys(nodes: list[str], data: st.DataObject) -> None:
    """Removing a member moves exactly the keys it owned (~1/N), and no other key."""
    leaver = data.draw(st.sampled_from(nodes))
    before = _owners(HashRing(nodes))
    after = _owners(HashRing([n for n in nodes if n != leaver]))
    for b, a in zip(before, after, strict=True):
        assert (a != b) == (b == leaver)
    share = before.count(leaver) / len(KEYS)
    assert 0.5 / len(nodes) <= share <= 1.6 / len(nodes), share


def test_the_ring_is_the_same_in_another_process_with_another_hash_seed() -> None:
    """Owners are computed alike in processes with different PYTHONHASHSEEDs (no hash())."""
    code = (
        "import json; from chronik.cluster.ring import HashRing, key_of; "
        "r = HashRing(['node-1', 'node-2', 'node-3']); "
        "print(json.dumps([r.owner(key_of('t', 'account', f'acc-{i}')) for i in range(500)]))"
    )
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    here = HashRing(["node-3", "node-1", "node-2"])
    assert (
        runs[0] == runs[1] == [here.owner(key_of("t", "account", f"acc-{i}")) for i in range(500)]
    )
    assert set(runs[0]) == {"node-1", "node-2", "node-3"}


def test_the_key_is_the_stream_identity_tenant_domain_and_aggregate() -> None:
    """Tenant, domain and aggregate id all take part in the key; separators cannot collide."""
    assert len({key_of("a", "b", "c"), key_of("", "b", "c"), key_of("a", "bc", "")}) == 3
    ring = HashRing([f"n{i}" for i in range(5)])
    owners = {ring.owner(key_of(t, "acct", "x")) for t in ("t1", "t2", "t3", "t4", "t5", "t6")}
    assert len(owners) > 1  # tenants spread


def _member(node_id: str, alive: bool = True, grpc: str = "127.0.0.1:1") -> Member:
    return Member(
        node_id=node_id,
        grpc=grpc,
        http="",
        version="",
        started_at=0.0,
        incarnation=1,
        parts=(),
        load={},
        ttl=10.0,
        alive=alive,
        state="alive" if alive else "dead",
        last_seen=0.0,
        lease_epoch=1,
    )


def test_of_view_takes_the_live_members_that_serve_grpc() -> None:
    """A view's ring holds the live members with a gRPC address; an empty ring owns nothing."""
    members = (_member("a"), _member("b", alive=False), _member("c", grpc=""), _member("d"))
    view = MembershipView(members=members, at=0.0, digest=live_digest(members))
    ring = HashRing.of_view(view)
    assert ring.nodes == ("a", "d") and len(ring) == 2
    assert {ring.owner(k) for k in KEYS[:200]} == {"a", "d"}
    assert HashRing([]).owner(b"x") is None
    assert repr(ring) == "<HashRing 2 nodes x 128 vnodes>"


@pytest.mark.parametrize("vnodes", [0, -1, 5000, True, 1.5])
def test_a_bad_vnodes_count_is_a_validation_error(vnodes: object) -> None:
    """vnodes outside 1..4096 (or not an int) is a ValidationError naming the field."""
    with pytest.raises(ValidationError) as caught:
        HashRing(["a"], vnodes=vnodes)  # type: ignore[arg-type]
    assert caught.value.field == "vnodes"
