"""The Merkle nodes a process keeps for its proofs (``ledger.node_cache.NodeCache``)."""

from __future__ import annotations

from ledger.merkle import NodeID
from ledger.node_cache import NodeCache


def h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_split_gives_what_is_kept_and_what_to_read() -> None:
    cache = NodeCache()
    cache.learn({NodeID(0, 1): h(1), NodeID(1, 1): h(2)})
    known, missing = cache.split([NodeID(0, 1), NodeID(0, 2), NodeID(1, 1), NodeID(2, 0)])
    assert known == {NodeID(0, 1): h(1), NodeID(1, 1): h(2)}
    assert missing == [NodeID(0, 2), NodeID(2, 0)]


def test_the_least_recently_used_node_goes_first() -> None:
    cache = NodeCache(capacity=3)
    cache.learn({NodeID(0, i): h(i) for i in range(3)})
    cache.split([NodeID(0, 0)])  # used: now the most recent
    cache.learn({NodeID(0, 3): h(3)})
    assert len(cache) == 3
    known, missing = cache.split([NodeID(0, i) for i in range(4)])
    assert missing == [NodeID(0, 1)] and set(known) == {NodeID(0, 0), NodeID(0, 2), NodeID(0, 3)}


def test_a_cache_of_no_capacity_keeps_nothing() -> None:
    cache = NodeCache(capacity=0)
    cache.learn({NodeID(0, 0): h(0)})
    assert len(cache) == 0 and cache.split([NodeID(0, 0)]) == ({}, [NodeID(0, 0)])
