"""RFC 9162 (Certificate Transparency v2) Merkle tree math: hashing, node selection, proofs.

Pure code: no I/O. Storage keeps only the hashes of *perfect* subtrees, addressed by
``NodeID(level, index)``: level 0 holds the leaf hashes and node ``(L, i)`` covers the leaves
``[i * 2**L, (i + 1) * 2**L)``. A perfect node never changes once its last leaf is appended, so
it can be stored write-once. The functions here decide *which* nodes they need (``append_plan``,
``range_nodes``, ``inclusion_plan``, ``consistency_plan``); the caller fetches them and hands the
hashes back. Every function touches O(log n) nodes.

Where RFC 9162 needs the hash of a non-perfect subtree (an "ephemeral" node on the right border),
a ``ProofPlan`` lists the perfect nodes that cover it and folds them back (``rehash``), the way
transparency-dev/merkle ``proof/proof.go`` does.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) and raises
``ProofError`` with the expected and computed values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

HASH_SIZE = 32
"""SHA-256 output size: every leaf, node and root hash is this long."""

LEAF_PREFIX = b"\x00"
"""RFC 9162 §2.1.1: leaf hashes are SHA-256(0x00 || entry)."""

NODE_PREFIX = b"\x01"
"""RFC 9162 §2.1.1: interior node hashes are SHA-256(0x01 || left || right)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""RFC 9162 §2.1.1: the hash of an empty list is the hash of an empty string."""


class ProofError(Exception):
    """A proof does not verify, or its inputs are malformed (wrong sizes, lengths, indices)."""

    code = "bad_proof"


class TreeRangeError(ValueError):
    """A caller asked for a node, proof or root outside the tree (e.g. index >= size)."""

    code = "out_of_range"


class MissingNodeError(LookupError):
    """The hashes handed back by storage lack a node the plan asked for."""

    code = "missing_node"


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class NodeID(NamedTuple):
    """A perfect subtree: ``level`` 0 are leaves; ``(L, i)`` covers leaves [i*2^L, (i+1)*2^L).

    A named tuple, not a dataclass: proofs, receipts and audits look nodes up by the hundred per entry, and a
    tuple's hash and equality run in C (five times faster than a frozen dataclass's)."""

    level: int
    index: int  # type: ignore[assignment]  # replaces tuple.index(), which nothing calls on a node

    def coverage(self) -> tuple[int, int]:
        """The half-open leaf range [begin, end) under this node."""
        return self.index << self.level, (self.index + 1) << self.level

    def parent(self) -> NodeID:
        return NodeID(self.level + 1, self.index >> 1)

    def sibling(self) -> NodeID:
        return NodeID(self.level, self.index ^ 1)


def _check_size(size: int, what: str = "tree size") -> None:
    if size < 0:
        raise TreeRangeError(f"{what} must be >= 0, got {size}")


def range_nodes(begin: int, end: int) -> list[NodeID]:
    """The perfect subtrees that exactly cover leaves [begin, end), left to right, largest first.

    At most 2*log2(end - begin) nodes. ``range_nodes(0, size)`` is the root decomposition.
    """
    if begin < 0 or end < begin:
        raise TreeRangeError(f"invalid leaf range [{begin}, {end}): want 0 <= begin <= end")
    nodes: list[NodeID] = []
    while begin < end:
        # The largest aligned power of two that starts at `begin` and fits before `end`.
        level = (begin & -begin).bit_length() - 1 if begin else (end - begin).bit_length() - 1
        while begin + (1 << level) > end:
            level -= 1
        nodes.append(NodeID(level, begin >> level))
        begin += 1 << level
    return nodes


def root_nodes(size: int) -> list[NodeID]:
    """The perfect subtrees decomposing [0, size), left to right (one per set bit of ``size``)."""
    _check_size(size)
    return range_nodes(0, size)


def _get(fetched: Mapping[NodeID, bytes], node: NodeID) -> bytes:
    try:
        value = fetched[node]
    except KeyError:
        raise MissingNodeError(f"node (level={node.level}, index={node.index}) was not fetched") from None
    if len(value) != HASH_SIZE:
        raise MissingNodeError(
            f"node (level={node.level}, index={node.index}) has a {len(value)}-byte hash, "
            f"want {HASH_SIZE}"
        )
    return value


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash perfect subtree roots given left to right (largest first) into the RFC 9162 MTH."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def root_from(size: int, fetched: Mapping[NodeID, bytes]) -> bytes:
    """The tree head MTH(D[0:size]) from the hashes of ``root_nodes(size)``."""
    return fold_right([_get(fetched, n) for n in root_nodes(size)])


# --- appending ------------------------------------------------------------------------------------


def append_plan(size: int) -> list[NodeID]:
    """Stored nodes needed to append leaf number ``size`` to a tree of ``size`` leaves.

    These are the left siblings of the new perfect nodes, lowest level first: one per trailing
    one-bit of ``size``.
    """
    _check_size(size)
    plan: list[NodeID] = []
    index, level = size, 0
    while index & 1:
        plan.append(NodeID(level, index ^ 1))
        index >>= 1
        level += 1
    return plan


def new_nodes(size: int, leaf: bytes, fetched: Mapping[NodeID, bytes]) -> list[tuple[NodeID, bytes]]:
    """The perfect nodes created by appending ``leaf`` (a leaf hash) as leaf number ``size``.

    ``fetched`` must hold the nodes of ``append_plan(size)``. The first node returned is the leaf
    itself, ``(0, size)``; the rest go up the right border.
    """
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(leaf)} bytes, want {HASH_SIZE}")
    out = [(NodeID(0, size), leaf)]
    h, node = leaf, NodeID(0, size)
    for sibling in append_plan(size):
        h = node_hash(_get(fetched, sibling), h)
        node = node.parent()
        out.append((node, h))
    return out


class CompactRange:
    """The perfect subtree roots covering [0, size): enough to append and to compute the root.

    The sequencer loads it with O(log n) reads (``from_nodes(size, fetched)`` over
    ``range_nodes(0, size)``), appends a group of leaves, stores every node that ``append``
    returns, and signs ``root()``.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_nodes(cls, size: int, fetched: Mapping[NodeID, bytes]) -> CompactRange:
        """Build from the hashes of ``root_nodes(size)`` (``range_nodes(0, size)``)."""
        cr = cls()
        cr._size = size
        cr._hashes = [_get(fetched, n) for n in root_nodes(size)]
        return cr

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Build from the hashes ``nodes()`` gave, left to right (an auditor keeps them between audits)."""
        want = len(root_nodes(size)) if size >= 0 else -1
        if len(hashes) != want or any(len(h) != HASH_SIZE for h in hashes):
            raise ProofError(f"a compact range of {size} leaves has {want} hashes of {HASH_SIZE} bytes")
        cr = cls()
        cr._size = size
        cr._hashes = list(hashes)
        return cr

    @property
    def size(self) -> int:
        return self._size

    def nodes(self) -> list[tuple[NodeID, bytes]]:
        """The covering perfect nodes and their hashes, left to right."""
        return list(zip(root_nodes(self._size), self._hashes, strict=True))

    def append(self, leaf: bytes) -> list[tuple[NodeID, bytes]]:
        """Append one leaf hash; return the new perfect nodes to store (leaf first, then parents)."""
        if len(leaf) != HASH_SIZE:
            raise ProofError(f"leaf hash has {len(leaf)} bytes, want {HASH_SIZE}")
        node = NodeID(0, self._size)
        out = [(node, leaf)]
        h = leaf
        while node.index & 1:
            h = node_hash(self._hashes.pop(), h)
            node = node.parent()
            out.append((node, h))
        self._hashes.append(h)
        self._size += 1
        return out

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[NodeID, bytes]]:
        """Append several leaf hashes; return all new perfect nodes."""
        out: list[tuple[NodeID, bytes]] = []
        for leaf in leaves:
            out.extend(self.append(leaf))
        return out

    def root(self) -> bytes:
        """MTH(D[0:size]) (RFC 9162 §2.1.1)."""
        return fold_right(self._hashes)

    def copy(self) -> CompactRange:
        cr = CompactRange()
        cr._size = self._size
        cr._hashes = list(self._hashes)
        return cr

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size})"


# --- proofs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProofPlan:
    """Which perfect nodes to fetch for a proof, and how to turn their hashes into the proof.

    ``ids[begin:end]`` (if non-empty) are the perfect nodes covering one ephemeral node, ordered
    from the lowest (rightmost) to the highest; ``proof`` folds them into that node's hash.
    """

    ids: tuple[NodeID, ...]
    begin: int = 0
    end: int = 0

    def proof(self, fetched: Mapping[NodeID, bytes]) -> list[bytes]:
        """The RFC 9162 proof path, from the fetched hashes of ``ids``."""
        return self.rehash([_get(fetched, n) for n in self.ids])

    def rehash(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Fold the hashes of ``ids`` (same order) into the proof path."""
        if len(hashes) != len(self.ids):
            raise MissingNodeError(f"got {len(hashes)} hashes, want {len(self.ids)}")
        out = list(hashes[: self.begin])
        if self.begin < self.end:
            acc = hashes[self.begin]
            for h in hashes[self.begin + 1 : self.end]:
                acc = node_hash(h, acc)
            out.append(acc)
        out.extend(hashes[self.end :])
        return out


def _plan(index: int, level: int, size: int, *, skip_first: bool) -> ProofPlan:
    """Nodes proving that node (level, index) is in the tree of ``size`` leaves.

    Port of ``nodes`` in transparency-dev/merkle proof/proof.go. Requires index < size >> level.
    """
    # The fork is where the path to (level, index) leaves the path to the right border; its
    # sibling is the (possibly ephemeral) node covering everything to the right of the fork.
    inner = (index ^ (size >> level)).bit_length() - 1
    fork = NodeID(level + inner, index >> inner)
    begin, end = fork.coverage()
    node = NodeID(level, index)
    ids = [node]
    while node.level < fork.level:
        ids.append(node.sibling())
        node = node.parent()
    len1 = len(ids)
    ids.extend(reversed(range_nodes(end, size)))
    len2 = len(ids)
    ids.extend(reversed(range_nodes(0, begin)))
    if len1 >= len2:
        len1 = len2 = 0
    if skip_first:
        ids = ids[1:]
        if len1 < len2:
            len1, len2 = len1 - 1, len2 - 1
    return ProofPlan(tuple(ids), len1, len2)


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """Nodes for PATH(index, D[0:size]), the RFC 9162 §2.1.3.1 inclusion proof."""
    _check_size(size)
    if index < 0 or index >= size:
        raise TreeRangeError(f"leaf index {index} out of range for tree size {size}: want 0 <= index < size")
    return _plan(index, 0, size, skip_first=True)


def consistency_plan(size1: int, size2: int) -> ProofPlan:
    """Nodes for PROOF(size1, D[0:size2]), the RFC 9162 §2.1.4.1 consistency proof."""
    _check_size(size1, "first tree size")
    _check_size(size2, "second tree size")
    if size1 > size2:
        raise TreeRangeError(f"first tree size {size1} > second tree size {size2}")
    if size1 == 0:
        raise TreeRangeError("a consistency proof from the empty tree (size 0) is meaningless")
    if size1 == size2:
        return ProofPlan(())
    # The largest perfect subtree of [0, size1) that ends at size1.
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    # If size1 is a power of two, that subtree is the old root: the verifier already has it.
    return _plan(index, level, size2, skip_first=size1 & (size1 - 1) == 0)


# --- verification -------------------------------------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} has {len(value)} bytes, want {HASH_SIZE}")


def _inclusion_len(index: int, size: int) -> int:
    """Length of PATH(index, D[0:size]) (transparency-dev decompInclProof: inner + border)."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def _mismatch(what: str, expected: bytes, computed: bytes) -> ProofError:
    return ProofError(f"{what} mismatch: expected {expected.hex()}, computed {computed.hex()}")


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2 steps 1-4)."""
    if index < 0 or size < 0 or index >= size:
        raise ProofError(f"leaf index {index} out of range for tree size {size}: want 0 <= index < size")
    _check_hash(leaf, "leaf hash")
    want = _inclusion_len(index, size)
    if len(proof) != want:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, want {want} for index {index} of {size}")
    for i, p in enumerate(proof):
        _check_hash(p, f"inclusion proof element {i}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:  # unreachable after the length check; kept as in the RFC
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree ``root``."""
    _check_hash(root, "root hash")
    computed = root_from_inclusion(leaf, index, size, proof)
    if computed != root:
        raise _mismatch(f"root hash (inclusion of leaf {index} in tree of size {size})", root, computed)


def _consistency_len(size1: int, size2: int) -> int:
    level = (size1 & -size1).bit_length() - 1
    inner = (((size1 - 1) ^ (size2 - 1)).bit_length()) - level
    border = bin((size1 - 1) >> (inner + level)).count("1")
    return inner + border + (0 if size1 == 1 << level else 1)


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: check that the tree ``root2`` of ``size2`` extends ``root1`` of ``size1``.

    Like transparency-dev/merkle, a proof from the empty tree (size1 = 0) is rejected: it proves
    nothing. Equal sizes need an empty proof and equal roots.
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"tree sizes must be >= 0, got {size1} and {size2}")
    if size1 > size2:
        raise ProofError(f"first tree size {size1} > second tree size {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree (size 0) is meaningless")
    _check_hash(root1, "first root hash")
    _check_hash(root2, "second root hash")
    if size1 == size2:
        if proof:
            raise ProofError(f"consistency proof between equal sizes has {len(proof)} hashes, want 0")
        if root1 != root2:
            raise _mismatch(f"root hash at equal sizes {size1}", root1, root2)
        return
    want = _consistency_len(size1, size2)
    if len(proof) != want:
        raise ProofError(f"consistency proof has {len(proof)} hashes, want {want} for sizes {size1} -> {size2}")
    for i, p in enumerate(proof):
        _check_hash(p, f"consistency proof element {i}")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check; kept as in the RFC
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    if fr != root1:
        raise _mismatch(f"first root hash (size {size1})", root1, fr)
    if sr != root2:
        raise _mismatch(f"second root hash (size {size2})", root2, sr)


# --- an in-memory tree ----------------------------------------------------------------------------


class InMemoryTree:
    """Leaf hashes and perfect nodes in memory, built by the same append code as storage."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._range = CompactRange()
        self.nodes: dict[NodeID, bytes] = {}
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return self._range.size

    def append(self, leaf: bytes) -> None:
        """Append a leaf *hash*."""
        self.nodes.update(self._range.append(leaf))

    def append_data(self, data: bytes) -> bytes:
        """Append an entry; return its leaf hash."""
        h = leaf_hash(data)
        self.append(h)
        return h

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise TreeRangeError(f"leaf index {index} out of range for tree size {self.size}")
        return self.nodes[NodeID(0, index)]

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise TreeRangeError(f"tree size {size} out of range: want 0 <= size <= {self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        return root_from(self._size(size), self.nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_plan(index, self._size(size)).proof(self.nodes)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_plan(size1, self._size(size2)).proof(self.nodes)
