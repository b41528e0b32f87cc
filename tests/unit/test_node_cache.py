"""The Merkle nodes a process keeps for its proofs (``ledger.node_cache.NodeCache``)."""

from __future__ import annotations

import threading

from ledger.merkle import NodeID
from ledger.node_cache import NodeCache


def h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_split_gives_what_is_kept_and_what_to_read() -> None:
    cache = NodeCache()
    cache.learn({NodeID(0, 1): h(1), NodeID(1, 1): h(2)}, log_size=4)
    known, missing = cache.split([NodeID(0, 1), NodeID(0, 2), NodeID(1, 1), NodeID(2, 0)])
    assert known == {NodeID(0, 1): h(1), NodeID(1, 1): h(2)}
    assert missing == [NodeID(0, 2), NodeID(2, 0)]


def test_the_least_recently_used_node_goes_first() -> None:
    cache = NodeCache(capacity=3)
    cache.learn({NodeID(0, i): h(i) for i in range(3)}, log_size=3)
    cache.split([NodeID(0, 0)])  # used: now the most recent
    cache.learn({NodeID(0, 3): h(3)}, log_size=4)
    assert len(cache) == 3
    known, missing = cache.split([NodeID(0, i) for i in range(4)])
    assert missing == [NodeID(0, 1)] and set(known) == {NodeID(0, 0), NodeID(0, 2), NodeID(0, 3)}


def test_a_shorter_log_than_before_forgets_every_node() -> None:
    # a database put back to an earlier state may store other nodes at the same places once it grows again
    cache = NodeCache()
    cache.learn({NodeID(0, 5): h(5), NodeID(2, 1): h(9)}, log_size=8)
    cache.learn({}, log_size=8)  # the same log: kept
    assert len(cache) == 2
    cache.learn({NodeID(0, 0): h(0)}, log_size=6)
    known, missing = cache.split([NodeID(0, 5), NodeID(2, 1), NodeID(0, 0)])
    assert known == {NodeID(0, 0): h(0)} and missing == [NodeID(0, 5), NodeID(2, 1)]


def test_a_cache_of_no_capacity_keeps_nothing() -> None:
    cache = NodeCache(capacity=0)
    cache.learn({NodeID(0, 0): h(0)}, log_size=1)
    assert len(cache) == 0 and cache.split([NodeID(0, 0)]) == ({}, [NodeID(0, 0)])


def test_threads_sharing_a_cache_keep_it_consistent() -> None:
    cache = NodeCache(capacity=500)

    def work(offset: int) -> None:
        for i in range(2_000):
            node = NodeID(i % 7, (i + offset) % 900)
            known, _ = cache.split([node])
            assert known.get(node, h(node.index)) == h(node.index)  # a kept node is always the one learnt
            cache.learn({node: h(node.index)}, log_size=10_000)

    threads = [threading.Thread(target=work, args=(k * 97,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) <= 500
