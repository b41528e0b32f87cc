"""ledger.merkle cross-checked against a naive, literal RFC 9162 §2.1 implementation."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    CompactRange,
    InMemoryTree,
    NodeID,
    ProofError,
    leaf_hash,
    node_hash,
    range_nodes,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)

# --- naive reference: RFC 9162 §2.1.1 MTH, §2.1.3.1 PATH, §2.1.4.1 PROOF / SUBPROOF --------------


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def ref_mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = _split(n)
    return hashlib.sha256(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:])).digest()


def ref_path(m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*ref_path(m, entries[:k]), ref_mth(entries[k:])]
    return [*ref_path(m - k, entries[k:]), ref_mth(entries[:k])]


def ref_subproof(m: int, entries: list[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [ref_mth(entries)]
    k = _split(n)
    if m <= k:
        return [*ref_subproof(m, entries[:k], b), ref_mth(entries[k:])]
    return [*ref_subproof(m - k, entries[k:], False), ref_mth(entries[:k])]


def ref_proof(m: int, entries: list[bytes]) -> list[bytes]:
    return ref_subproof(m, entries, True)


# --- strategies ------------------------------------------------------------------------------------

MAX_SIZE = 300


def _entries(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") + b"athar" for i in range(n)]


_TREES: dict[int, tuple[list[bytes], InMemoryTree]] = {}


def _tree(n: int) -> tuple[list[bytes], InMemoryTree]:
    if n not in _TREES:
        entries = _entries(n)
        t = InMemoryTree()
        for e in entries:
            t.append_data(e)
        _TREES[n] = (entries, t)
    return _TREES[n]


sizes = st.integers(min_value=1, max_value=MAX_SIZE)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(sizes)
    return draw(st.integers(min_value=1, max_value=size2)), size2


def _flip(value: bytes, pos: int, bit: int) -> bytes:
    pos %= len(value)
    return value[:pos] + bytes([value[pos] ^ (1 << bit)]) + value[pos + 1 :]


# --- properties ------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_root_matches_reference(size: int) -> None:
    entries, t = _tree(MAX_SIZE)
    assert t.root(size) == ref_mth(entries[:size])


@given(size_and_index())
def test_inclusion_matches_reference_and_verifies(args: tuple[int, int]) -> None:
    size, index = args
    entries, t = _tree(MAX_SIZE)
    proof = t.inclusion_proof(index, size)
    assert proof == ref_path(index, entries[:size])
    verify_inclusion(leaf_hash(entries[index]), index, size, proof, ref_mth(entries[:size]))


@given(two_sizes())
def test_consistency_matches_reference_and_verifies(args: tuple[int, int]) -> None:
    size1, size2 = args
    entries, t = _tree(MAX_SIZE)
    proof = t.consistency_proof(size1, size2)
    assert proof == ref_proof(size1, entries[:size2])
    verify_consistency(size1, size2, t.root(size1), t.root(size2), proof)


@given(size_and_index(), st.data())
def test_any_tampering_breaks_inclusion(args: tuple[int, int], data: st.DataObject) -> None:
    size, index = args
    entries, t = _tree(MAX_SIZE)
    leaf, root = leaf_hash(entries[index]), t.root(size)
    proof = t.inclusion_proof(index, size)
    pos, bit = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7))
    what = data.draw(st.sampled_from(["proof", "leaf", "root", "index", "size", "drop", "extra"]))
    bad_proof, bad_leaf, bad_root, bad_index, bad_size = list(proof), leaf, root, index, size
    if what == "proof":
        if not proof:
            return
        i = data.draw(st.integers(0, len(proof) - 1))
        bad_proof[i] = _flip(proof[i], pos, bit)
    elif what == "leaf":
        bad_leaf = _flip(leaf, pos, bit)
    elif what == "root":
        bad_root = _flip(root, pos, bit)
    elif what == "index":
        bad_index = data.draw(st.integers(0, size + 3).filter(lambda j: j != index))
    elif what == "size":
        # A proof for one tree size must not verify against the tree head of another size.
        # (Against the *same* root it may: the path shape alone does not bind the size.)
        bad_size = data.draw(st.integers(1, MAX_SIZE).filter(lambda s: s != size))
        bad_root = t.root(bad_size)
    elif what == "drop":
        if not proof:
            return
        bad_proof.pop(data.draw(st.integers(0, len(proof) - 1)))
    else:
        bad_proof.insert(data.draw(st.integers(0, len(proof))), root)
    try:
        verify_inclusion(bad_leaf, bad_index, bad_size, bad_proof, bad_root)
    except ProofError:
        return
    raise AssertionError(f"tampered inclusion ({what}) verified")


@given(two_sizes(), st.data())
def test_any_tampering_breaks_consistency(args: tuple[int, int], data: st.DataObject) -> None:
    size1, size2 = args
    _, t = _tree(MAX_SIZE)
    r1, r2 = t.root(size1), t.root(size2)
    proof = t.consistency_proof(size1, size2)
    pos, bit = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7))
    what = data.draw(st.sampled_from(["proof", "root1", "root2", "size1", "size2"]))
    bad = list(proof)
    s1, s2, b1, b2 = size1, size2, r1, r2
    if what == "proof":
        if not proof:
            return
        i = data.draw(st.integers(0, len(proof) - 1))
        bad[i] = _flip(proof[i], pos, bit)
    elif what == "root1":
        b1 = _flip(r1, pos, bit)
    elif what == "root2":
        b2 = _flip(r2, pos, bit)
    elif what == "size1":
        # Claimed sizes come with their own tree heads (see the inclusion test).
        s1 = data.draw(st.integers(0, size2).filter(lambda s: s != size1))
        b1 = t.root(s1)
    else:
        s2 = data.draw(st.integers(0, MAX_SIZE).filter(lambda s: s != size2))
        b2 = t.root(s2)
    try:
        verify_consistency(s1, s2, b1, b2, bad)
    except ProofError:
        return
    raise AssertionError(f"tampered consistency ({what}) verified")


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=12), st.integers(0, 100))
def test_compact_range_groups_match_in_memory_tree(groups: list[int], start: int) -> None:
    entries, t = _tree(MAX_SIZE)
    size = start
    store = {n: h for n, h in t.nodes.items() if n.coverage()[1] <= start}
    cr = CompactRange.from_nodes(size, {n: store[n] for n in root_nodes(size)})
    for g in groups:
        g = min(g, MAX_SIZE - size)
        # The sequencer's path: reload from storage (O(log n) reads), append a group, store.
        cr = CompactRange.from_nodes(size, {n: store[n] for n in range_nodes(0, size)})
        created = cr.extend(leaf_hash(e) for e in entries[size : size + g])
        for node, h in created:
            assert node not in store, f"node {node} written twice"
            store[node] = h
        size += g
        assert cr.root() == t.root(size) == ref_mth(entries[:size])
    assert store == {n: h for n, h in t.nodes.items() if n.coverage()[1] <= size}


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_range_nodes_cover_exactly(a: int, b: int) -> None:
    begin, end = min(a, b), max(a, b)
    nodes = range_nodes(begin, end)
    pos = begin
    for n in nodes:
        lo, hi = n.coverage()
        assert lo == pos and n.index << n.level == lo
        pos = hi
    assert pos == end
    assert len(nodes) <= 2 * max(1, (end - begin).bit_length())


def test_node_hash_is_rfc_interior_hash() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == ref_mth([b"a", b"b"])
    assert NodeID(3, 5).coverage() == (40, 48)
