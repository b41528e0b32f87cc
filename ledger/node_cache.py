"""Merkle nodes kept in memory by a process that serves proofs.

A stored node is the hash of a perfect subtree: it is written once, with the log head that completes it, and
never changes, as the leaves under it never do. Proofs of random entries share their upper nodes (at 10^6
entries the 15 upper levels of an inclusion path hold about 65,000 nodes in all, the 5 lower ones about 2
million), so a process that keeps the nodes it has read asks the database for the lower ones only: each node
it asks for is one index probe, in a table larger than PostgreSQL's default buffers. Measured in one process on
a 10^6-entry ledger, alternating proofs with and without the cache: 0.88 against 0.96 ms and 1.32 against 1.57
ms (means of 3,000 random inclusion proofs each, two runs); the statement alone, asking for the 5 lower
levels against all 20, 0.34-0.47 against 0.41-0.59 ms.

The one way a stored node can change is the database being put back to an earlier state (a restore from a
backup) and the log growing again with other entries. The database then reports a shorter log than before,
and the cache forgets everything it holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ledger.merkle import NodeID

#: nodes kept per process (about 250 bytes each with the dictionary's own cost, 16 MB in all): the upper 15
#: levels of a 10^6-entry tree, or the upper levels of a larger one, where proofs share the most
CAPACITY = 1 << 16


class NodeCache:
    """The most recently used perfect nodes, up to ``capacity``; safe to share between threads."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._nodes: OrderedDict[NodeID, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._log_size = 0

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

    def learn(self, nodes: Mapping[NodeID, bytes], log_size: int) -> None:
        """Keep nodes just read from a log of ``log_size`` entries."""
        with self._lock:
            if log_size < self._log_size:
                self._nodes.clear()  # the database went back to an earlier state: see the module's docstring
            self._log_size = log_size
            for node, h in nodes.items():
                self._nodes[node] = h
                self._nodes.move_to_end(node)
            while len(self._nodes) > self.capacity:
                self._nodes.popitem(last=False)
