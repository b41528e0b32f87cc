"""Proofs from the Merkle nodes a ledger process keeps (``ledger.node_cache``), on SQLite and on PostgreSQL.

A process serving proofs keeps the nodes it has read, as stored nodes never change, and asks the database for
the others only. Its proofs must be exactly those of a process that keeps nothing, and verify against the
signed checkpoints."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger import errors as E
from ledger.home import open_ledger
from ledger.merkle import (
    NodeID,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ledger.storage.sql import SqlUnit
from tests.support import World, make_world


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", db_url)
    try:
        serials = w.commission("L1", 8)
        w.deliver("maphar", "dist-north", "L1", serials)
        w.deliver("dist-north", "ph-rabat", "L1", serials[:4])
        w.commission("L2", 3)
        yield w
    finally:
        w.db.dispose()


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[set[NodeID]]:
    """The nodes each proof asked the database for (the real read still runs)."""
    calls: list[set[NodeID]] = []
    real = SqlUnit.proof_material

    def spy(self: SqlUnit, ids: Iterable[NodeID], **kw: Any) -> Any:
        ids = list(ids)
        calls.append(set(ids))
        return real(self, ids, **kw)

    monkeypatch.setattr(SqlUnit, "proof_material", spy)
    return calls


def test_proofs_from_kept_nodes_equal_proofs_read_afresh_and_verify(world: World, tmp_path: Path) -> None:
    warm = world.ledger
    with warm.store.read() as u:
        checkpoints = u.checkpoints()
        leaves = [bytes(e.leaf) for e in u.entries(0, warm.size())]
    assert len(checkpoints) == warm.size() > 10  # one checkpoint per submission: a tree of every size
    for _round in range(2):  # the second round is served from the nodes kept in the first
        for cp in checkpoints:
            for index in range(cp.tree_size):
                got = warm.inclusion_at_checkpoint(index, cp.tree_size)
                assert got.root == cp.root_hash and got.leaf_hash == leaf_hash(leaves[index])
                verify_inclusion(leaf_hash(leaves[index]), index, cp.tree_size, got.hashes, cp.root_hash)
        for a, b in itertools.combinations(checkpoints, 2):
            got = warm.consistency_at_checkpoints(a.tree_size, b.tree_size)
            verify_consistency(a.tree_size, b.tree_size, a.root_hash, b.root_hash, got.hashes)
    cold, db = open_ledger(world.home.path, world.db.url)  # another process: nothing kept
    try:
        for cp in checkpoints:
            for index in range(cp.tree_size):
                assert warm.inclusion_at_checkpoint(index, cp.tree_size) == \
                    cold.inclusion_at_checkpoint(index, cp.tree_size)
                assert warm.inclusion_at_checkpoint(index, cp.tree_size).hashes == \
                    warm.inclusion_proof(index, cp.tree_size)  # which reads every node, every time
        for a, b in itertools.combinations(checkpoints, 2):
            assert warm.consistency_at_checkpoints(a.tree_size, b.tree_size) == \
                cold.consistency_at_checkpoints(a.tree_size, b.tree_size)
    finally:
        db.dispose()


def test_a_kept_node_that_no_longer_holds_is_dropped_and_the_proof_read_again(world: World,
                                                                               asked: list[set[NodeID]]) -> None:
    # what a database put back to an earlier state under a running process, then grown again, would leave
    ledger, size = world.ledger, world.ledger.size()
    plan = inclusion_plan(1, size)
    ledger.inclusion_at_checkpoint(1, size)
    ledger._nodes.learn({n: bytes(32) for n in plan.ids})  # every node of the path now wrong
    got = ledger.inclusion_at_checkpoint(1, size)
    assert got.leaf_hash is not None
    verify_inclusion(got.leaf_hash, 1, size, got.hashes, got.root)
    assert asked[-2:] == [set(), set(plan.ids)]  # from the kept nodes first, then from the database
    again = ledger.inclusion_at_checkpoint(1, size)  # the nodes kept now are the database's
    assert asked[-1] == set() and again == got
    first = max(1, size - 3)
    ledger.consistency_at_checkpoints(first, size)
    ledger._nodes.learn({n: bytes(32) for n in consistency_plan(first, size).ids})
    got = ledger.consistency_at_checkpoints(first, size)
    assert got.first_root is not None
    verify_consistency(first, size, got.first_root, got.root, got.hashes)


def test_a_proof_asks_the_database_only_for_nodes_not_read_before(world: World,
                                                                   asked: list[set[NodeID]]) -> None:
    ledger, size = world.ledger, world.ledger.size()
    first, second = inclusion_plan(0, size), inclusion_plan(size - 1, size)
    ledger.inclusion_at_checkpoint(0, size)
    assert asked[-1] == set(first.ids)
    ledger.inclusion_at_checkpoint(0, size)
    assert asked[-1] == set()  # everything kept; the statement still reads the checkpoint and the leaf
    ledger.inclusion_at_checkpoint(size - 1, size)
    assert asked[-1] == set(second.ids) - set(first.ids)
    assert set(first.ids) & set(second.ids)  # the two paths share nodes, which were not read again


def test_a_proof_past_the_log_is_refused_whatever_is_kept(world: World) -> None:
    size = world.ledger.size()
    world.ledger.inclusion_at_checkpoint(0, size)  # its nodes are kept
    world.ledger.consistency_at_checkpoints(1, size)
    with pytest.raises(E.NotFound, match=f"tree size {size + 1}"):
        world.ledger.inclusion_at_checkpoint(0, size + 1)
    with pytest.raises(E.NotFound, match=f"tree size {size + 1}"):
        world.ledger.consistency_at_checkpoints(1, size + 1)
    with pytest.raises(E.NotFound, match=f"tree size {size + 1}"):  # the first one is named first
        world.ledger.consistency_at_checkpoints(size + 1, size + 2)
