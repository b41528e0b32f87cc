"""Merkle nodes kept in memory by a process that serves proofs.

A stored node is the hash of a perfect subtree: it is written once, with the log head that completes it, and
never changes, as the leaves under it never do. Proofs of random entries share their upper nodes (at 10^6
entries the 15 upper levels of an inclusion path hold about 65,000 nodes in all, the 5 lower ones about 2
million), so a process that keeps the nodes it has read asks the database for fewer of them: each one an index
probe, in a table larger than PostgreSQL's default buffers. At 10^6 entries, of the 25 nodes a path needs, 14
were still read on average over the first 100 random proofs, 8 after 3,000 and 6.6 after 10,000 (the most
recently used are kept, so lower nodes, seldom asked for again, take places too). Measured in one process,
alternating proofs with and without it, 5 runs of 3,000: means 0.84-0.94 against 0.94-1.04 ms.

What is kept is not checked here. The caller checks every proof made with kept nodes against the checkpoint's
root and drops them all if it fails: the one way a kept node can be wrong is the database put back to an
earlier state under a running process and grown again with other entries. A node row changed in the database
while a process keeps that node is served as it was, from memory; ``athar audit verify`` checks every stored
node.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ledger.merkle import NodeID

#: nodes kept per process (about 250 bytes each with the dictionary's own cost, 16 MB in all): as many as the
#: upper 15 levels of a 10^6-entry tree hold
CAPACITY = 1 << 16


class NodeCache:
    """The most recently used perfect nodes, up to ``capacity``; safe to share between threads."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._nodes: OrderedDict[NodeID, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._nodes)

    def split(self, ids: Iterable[NodeID]) -> tuple[dict[NodeID, bytes], list[NodeID]]:
        """The nodes among ``ids`` held here, and those to read."""
        known: dict[NodeID, bytes] = {}
        missing: list[NodeID] = []
        with self._lock:
            for node in ids:
                h = self._nodes.get(node)
                if h is None:
                    missing.append(node)
                else:
                    self._nodes.move_to_end(node)
                    known[node] = h
        return known, missing

    def clear(self) -> None:
        with self._lock:
            self._nodes.clear()

    def learn(self, nodes: Mapping[NodeID, bytes]) -> None:
        """Keep nodes just read."""
        with self._lock:
            for node, h in nodes.items():
                self._nodes[node] = h
                self._nodes.move_to_end(node)
            while len(self._nodes) > self.capacity:
                self._nodes.popitem(last=False)
