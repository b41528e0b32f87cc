"""Known-answer tests for ledger.merkle against shared/reference/merkle/."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    InMemoryTree,
    MissingNodeError,
    NodeID,
    ProofError,
    TreeRangeError,
    append_plan,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    new_nodes,
    node_hash,
    range_nodes,
    root_from,
    root_from_inclusion,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)
from tests.reference import REFERENCE_DIR, reference_files, reference_path

MERKLE = ("merkle",)
PROBES = ("merkle", "transparency-dev-testdata")


def _load(*parts: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(reference_path(*parts).read_text())
    return data


def _hex(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    return _load(*MERKLE, "rfc6962-vectors.json")


@pytest.fixture(scope="module")
def tree(vectors: dict[str, Any]) -> InMemoryTree:
    t = InMemoryTree()
    for leaf in vectors["leafInputs"]:
        t.append_data(bytes.fromhex(leaf))
    return t


# --- hashing -------------------------------------------------------------------------------------


def test_hash_prefixes_and_empty_root(vectors: dict[str, Any]) -> None:
    assert EMPTY_ROOT.hex() == vectors["emptyTreeRootHash"]
    for data, want in zip(vectors["leafInputs"], vectors["leafHashes"], strict=True):
        assert leaf_hash(bytes.fromhex(data)).hex() == want
    levels = vectors["nodeHashes"]["levels"]
    assert node_hash(bytes.fromhex(levels[0][0]), bytes.fromhex(levels[0][1])).hex() == levels[1][0]


def test_roots_by_size(vectors: dict[str, Any], tree: InMemoryTree) -> None:
    for item in vectors["rootHashesBySize"]:
        assert tree.root(item["treeSize"]).hex() == item["rootHash"], item["treeSize"]


def test_stored_perfect_nodes_match_vectors(vectors: dict[str, Any], tree: InMemoryTree) -> None:
    for level, hashes in enumerate(vectors["nodeHashes"]["levels"]):
        for index, h in enumerate(hashes):
            assert tree.nodes[NodeID(level, index)].hex() == h
    # Only perfect nodes are ever stored: 8 + 4 + 2 + 1.
    assert len(tree.nodes) == 15


# --- transcribed RFC 6962 vectors ------------------------------------------------------------------


def test_inclusion_vectors(vectors: dict[str, Any], tree: InMemoryTree) -> None:
    for p in vectors["inclusionProofs"]:
        proof = tree.inclusion_proof(p["leafIndex"], p["treeSize"])
        assert [h.hex() for h in proof] == p["auditPath"]
        verify_inclusion(bytes.fromhex(p["leafHash"]), p["leafIndex"], p["treeSize"], proof,
                         bytes.fromhex(p["rootHash"]))


def test_consistency_vectors(vectors: dict[str, Any], tree: InMemoryTree) -> None:
    for p in vectors["consistencyProofs"]:
        proof = tree.consistency_proof(p["firstSize"], p["secondSize"])
        assert [h.hex() for h in proof] == p["consistencyProof"]
        verify_consistency(p["firstSize"], p["secondSize"], bytes.fromhex(p["firstRootHash"]),
                           bytes.fromhex(p["secondRootHash"]), proof)


def test_negative_inclusion_vectors(vectors: dict[str, Any]) -> None:
    assert vectors["negativeInclusionProofs"]
    for p in vectors["negativeInclusionProofs"]:
        assert p["expectValid"] is False
        with pytest.raises(ProofError):
            verify_inclusion(bytes.fromhex(p["leafHash"]), p["leafIndex"], p["treeSize"],
                             _hex(p["auditPath"]), bytes.fromhex(p["rootHash"]))


def test_negative_consistency_vectors(vectors: dict[str, Any]) -> None:
    assert vectors["negativeConsistencyProofs"]
    for p in vectors["negativeConsistencyProofs"]:
        assert p["expectValid"] is False
        with pytest.raises(ProofError):
            verify_consistency(p["firstSize"], p["secondSize"], bytes.fromhex(p["firstRootHash"]),
                               bytes.fromhex(p["secondRootHash"]), _hex(p["consistencyProof"]))


# --- derived exhaustive vectors (every proof up to size 8) ----------------------------------------


def test_derived_exhaustive() -> None:
    data = _load(*MERKLE, "rfc6962-derived-exhaustive.json")
    t = InMemoryTree()
    for leaf in data["leafInputs"]:
        t.append_data(bytes.fromhex(leaf))
    assert len(data["inclusionProofs"]) == 36 and len(data["consistencyProofs"]) == 36
    for p in data["inclusionProofs"]:
        proof = t.inclusion_proof(p["leafIndex"], p["treeSize"])
        assert [h.hex() for h in proof] == p["auditPath"]
        leaf, root = bytes.fromhex(p["leafHash"]), bytes.fromhex(p["rootHash"])
        verify_inclusion(leaf, p["leafIndex"], p["treeSize"], proof, root)
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            with pytest.raises(ProofError):
                verify_inclusion(leaf, p["leafIndex"], p["treeSize"], bad, root)
    for p in data["consistencyProofs"]:
        proof = t.consistency_proof(p["firstSize"], p["secondSize"])
        assert [h.hex() for h in proof] == p["consistencyProof"]
        r1, r2 = bytes.fromhex(p["firstRootHash"]), bytes.fromhex(p["secondRootHash"])
        verify_consistency(p["firstSize"], p["secondSize"], r1, r2, proof)
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = bad[i][:-1] + bytes([bad[i][-1] ^ 0x80])
            with pytest.raises(ProofError):
                verify_consistency(p["firstSize"], p["secondSize"], r1, r2, bad)


# --- transparency-dev probe files -------------------------------------------------------------------

# Probes where athar is deliberately stricter than transparency-dev/merkle: it requires every root
# to be a 32-byte SHA-256 hash even when sizes are equal and nothing is hashed.
STRICTER_THAN_UPSTREAM = {"consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"}


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _probe_id(path: Path) -> str:
    return path.relative_to(REFERENCE_DIR.joinpath(*PROBES)).as_posix()


INCLUSION_PROBES = reference_files(*PROBES, "inclusion")
CONSISTENCY_PROBES = reference_files(*PROBES, "consistency")


def test_probe_files_found() -> None:
    reference_path(*PROBES)
    assert len(INCLUSION_PROBES) > 50 and len(CONSISTENCY_PROBES) > 50


@pytest.mark.parametrize("path", INCLUSION_PROBES, ids=_probe_id)
def test_inclusion_probe(path: Path) -> None:
    p = json.loads(path.read_text())
    args = (_b64(p["leafHash"]), p["leafIdx"], p["treeSize"], [_b64(h) for h in p["proof"] or []], _b64(p["root"]))
    if p["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY_PROBES, ids=_probe_id)
def test_consistency_probe(path: Path) -> None:
    p = json.loads(path.read_text())
    args = (p["size1"], p["size2"], _b64(p["root1"]), _b64(p["root2"]), [_b64(h) for h in p["proof"] or []])
    if p["wantErr"] or _probe_id(path) in STRICTER_THAN_UPSTREAM:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


# --- node selection -----------------------------------------------------------------------------


def test_range_and_root_nodes() -> None:
    assert root_nodes(0) == []
    assert root_nodes(1) == [NodeID(0, 0)]
    assert root_nodes(7) == [NodeID(2, 0), NodeID(1, 2), NodeID(0, 6)]
    assert root_nodes(8) == [NodeID(3, 0)]
    assert range_nodes(3, 13) == [NodeID(0, 3), NodeID(2, 1), NodeID(2, 2), NodeID(0, 12)]
    assert range_nodes(5, 5) == []
    with pytest.raises(TreeRangeError):
        range_nodes(4, 3)


def test_append_plan_and_new_nodes(tree: InMemoryTree) -> None:
    assert append_plan(0) == []
    assert append_plan(4) == []
    assert append_plan(3) == [NodeID(0, 2), NodeID(1, 0)]
    assert append_plan(7) == [NodeID(0, 6), NodeID(1, 2), NodeID(2, 0)]
    store: dict[NodeID, bytes] = {}
    for i in range(tree.size):
        fetched = {n: store[n] for n in append_plan(i)}
        created = new_nodes(i, tree.leaf(i), fetched)
        assert created[0] == (NodeID(0, i), tree.leaf(i))
        assert len(created) == 1 + len(append_plan(i))
        store.update(created)
        assert root_from(i + 1, store) == tree.root(i + 1)
    assert store == tree.nodes


def test_compact_range_from_stored_nodes(tree: InMemoryTree) -> None:
    for size in range(tree.size + 1):
        cr = CompactRange.from_nodes(size, {n: tree.nodes[n] for n in root_nodes(size)})
        assert cr.size == size and cr.root() == tree.root(size)
        assert [n for n, _ in cr.nodes()] == root_nodes(size)
        created = cr.extend(tree.leaf(i) for i in range(size, tree.size))
        assert cr.root() == tree.root()
        assert all(tree.nodes[n] == h for n, h in created)


def test_plans_ask_only_for_perfect_nodes_that_exist() -> None:
    for size2 in range(1, 40):
        for i in range(size2):
            for n in inclusion_plan(i, size2).ids:
                assert n.coverage()[1] <= size2
        for size1 in range(1, size2 + 1):
            for n in consistency_plan(size1, size2).ids:
                assert n.coverage()[1] <= size2


def test_missing_node_is_named() -> None:
    with pytest.raises(MissingNodeError, match=r"level=0, index=1"):
        inclusion_plan(0, 2).proof({})
    with pytest.raises(MissingNodeError, match="want 32"):
        root_from(1, {NodeID(0, 0): b"short"})


# --- preconditions -------------------------------------------------------------------------------


def test_plan_preconditions() -> None:
    with pytest.raises(TreeRangeError, match=r"leaf index 3 out of range for tree size 3"):
        inclusion_plan(3, 3)
    with pytest.raises(TreeRangeError, match="-1"):
        inclusion_plan(-1, 3)
    with pytest.raises(TreeRangeError, match=r"first tree size 5 > second tree size 4"):
        consistency_plan(5, 4)
    with pytest.raises(TreeRangeError, match="empty tree"):
        consistency_plan(0, 4)
    assert consistency_plan(4, 4).ids == ()
    with pytest.raises(TreeRangeError):
        root_nodes(-1)


def test_verifier_errors_carry_expected_and_computed(tree: InMemoryTree) -> None:
    proof = tree.inclusion_proof(2, 8)
    wrong_root = tree.root(7)
    with pytest.raises(ProofError) as info:
        verify_inclusion(tree.leaf(2), 2, 8, proof, wrong_root)
    assert wrong_root.hex() in str(info.value) and tree.root(8).hex() in str(info.value)
    assert info.value.code == "bad_proof"
    with pytest.raises(ProofError, match=r"has 2 hashes, want 3"):
        verify_inclusion(tree.leaf(2), 2, 8, proof[:2], tree.root())
    with pytest.raises(ProofError, match=r"leaf hash has 5 bytes, want 32"):
        verify_inclusion(b"short", 2, 8, proof, tree.root())
    with pytest.raises(ProofError, match=r"has 1 hashes, want 4"):
        verify_consistency(3, 8, tree.root(3), tree.root(8), [tree.root(3)])
    assert root_from_inclusion(tree.leaf(2), 2, 8, proof) == tree.root()


def test_in_memory_tree_bounds(tree: InMemoryTree) -> None:
    assert InMemoryTree().root() == EMPTY_ROOT
    with pytest.raises(TreeRangeError):
        tree.root(9)
    with pytest.raises(TreeRangeError):
        tree.inclusion_proof(0, 9)
    with pytest.raises(TreeRangeError):
        tree.leaf(8)
    with pytest.raises(ProofError, match="want 32"):
        InMemoryTree().append(b"not a hash")
