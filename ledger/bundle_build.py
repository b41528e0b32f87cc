"""Building offline bundles on the server (the formats and their verification are in ``ledger.bundle`` and
``ledger.pack_bundle``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from ledger import errors as E
from ledger import events as ev
from ledger import pack_bundle as pb
from ledger.bundle import FORMAT, MANIFEST_PURPOSE
from ledger.entry import Entry
from ledger.merkle import NodeID, inclusion_plan, leaf_hash
from ledger.provenance import Step
from ledger.state import Batch, Pack
from ledger.storage.rows import StoredEntry
from ledger.storage.sql import SqlUnit, prove_entries
from signing import KeyPair, PublicKey, b64encode


def build_bundle(u: SqlUnit, ledger_key: KeyPair, chains: Iterable[str], *, created: dt.datetime) -> dict[str, Any]:
    cp = u.checkpoint()
    if cp is None:
        raise E.NotFound("the log is empty: nothing to bundle")
    size = u.head()[0]
    if cp.tree_size != size:
        # the appender writes the head and its checkpoint in one transaction
        raise E.IntegrityError(f"the newest checkpoint is of tree size {cp.tree_size} but the log head says {size} "
                               "entries: run athar audit verify")
    by_chain: dict[str, list[StoredEntry]] = {}
    for e in u.registry_entries():  # the whole registry, in one query: signatures are checked against it
        by_chain.setdefault(e.chain, []).append(e)
    for chain in set(chains):
        by_chain[chain] = u.chain_entries(chain)
    by_chain = {c: entries for c, entries in by_chain.items() if entries}
    parsed = _whole_chains(u, by_chain)
    heads: dict[str, Any] = {}
    stored = []
    for chain in sorted(by_chain):
        entries = by_chain[chain]
        stored.extend(entries)
        heads[chain] = {"length": len(entries), "head_index": entries[-1].index,
                        "head_hash": entries[-1].entry_hash.hex()}
    stored.sort(key=lambda e: e.index)
    manifest = {"format": FORMAT, "tree_size": cp.tree_size, "root_hash": cp.root_hash.hex(),
                "created": ev.format_time(created), "chains": heads}
    proved = prove_entries(u, stored, cp.tree_size)
    return {
        "format": FORMAT,
        "checkpoint": cp.note,
        "manifest": manifest,
        "manifest_signature": b64encode(ledger_key.sign(MANIFEST_PURPOSE, manifest)),
        "entries": [{"index": e.index, "entry": parsed[e.index].to_json(),
                     "proof": [h.hex() for h in proof]} for e, proof in proved],
    }


def _whole_chains(u: SqlUnit, by_chain: dict[str, list[StoredEntry]]) -> dict[int, Entry]:
    """The entries of each chain, parsed by index, once it is checked whole; the manifest signs each chain's head
    and length, and the bundle's verifier can only check the entries it is given, so a chain with an entry
    deleted (its head, or one between) would otherwise be signed as complete. Each entry must be its stored leaf
    in the Merkle tree (which the checkpoint signs), link to the one before it by its signed ``prev``, and the last
    must be the head the appender recorded in ``chain_heads``. Not caught here: an attacker who also rewrites
    ``chain_heads`` after deleting a head (the audit and monitors see it, through the checkpoints)."""
    recorded = u.chain_heads(by_chain)
    leaves = u.nodes(NodeID(0, e.index) for entries in by_chain.values() for e in entries)
    parsed: dict[int, Entry] = {}
    for chain, entries in by_chain.items():
        prev: bytes | None = None
        for e in entries:
            entry = Entry.from_leaf(e.leaf)
            if leaf_hash(e.leaf) != e.entry_hash or leaves.get(NodeID(0, e.index)) != e.entry_hash:
                raise E.IntegrityError(f"entry {e.index} is not the leaf the Merkle tree holds at its index: "
                                       "run athar audit verify", index=e.index)
            if entry.index != e.index or entry.chain != chain or entry.prev != prev:
                raise E.IntegrityError(f"chain {chain} is broken at entry {e.index} (an entry before it is missing "
                                       "or moved): run athar audit verify", index=e.index)
            parsed[e.index] = entry
            prev = e.entry_hash
        last = entries[-1]
        if recorded.get(chain) != (last.entry_hash, last.index, len(entries)):
            raise E.IntegrityError(f"chain {chain} ends at entry {last.index} after {len(entries)} entries, not at "
                                   "the head recorded for it (an entry is missing): run athar audit verify",
                                   index=last.index)
    return parsed


def build_pack_bundle(u: SqlUnit, ledger_key: KeyPair, pack: Pack, batch: Batch, tree_size: int,
                      steps: Sequence[Step], *, created: dt.datetime) -> dict[str, Any]:
    """A one-pack bundle (``ledger.pack_bundle``) at ``tree_size``, the log size ``pack``, ``batch`` and ``steps``
    were read at (in one snapshot)."""
    cp = u.checkpoint(tree_size)
    if cp is None or not steps:
        # the log head and its checkpoint are written in one transaction, and every pack has its commissioning
        raise E.IntegrityError(f"no checkpoint of tree size {tree_size}, or no commissioning of pack {pack.serial}, "
                               "is stored: run athar audit verify")
    last = steps[-1]
    plan = inclusion_plan(last.index, tree_size)
    nodes = u.nodes([*plan.ids, *(NodeID(0, s.index) for s in steps)])
    whole = signer = None
    if last.type in pb.WHOLE_ENTRY_KINDS:
        stored = u.entry(last.index)
        if stored is None:
            raise E.IntegrityError(f"entry {last.index}, named by pack {pack.serial}'s trail, is not stored",
                                   index=last.index)
        entry = Entry.from_leaf(stored.leaf)
        whole = entry.to_json()
        key = u.key(entry.signed.key_id)
        signer = PublicKey.from_b64(key.public_key) if key is not None else None
    statement = pb.statement_json(
        tree_size=tree_size, root=cp.root_hash, created=created, pack=pack,
        batch=pb.AttestedBatch(batch.gtin, batch.lot, batch.expiry, batch.product, batch.manufacturer, batch.status,
                               batch.status_reason),
        steps=[pb.AttestedStep(s.index, s.type, s.actor, s.time, nodes[NodeID(0, s.index)]) for s in steps],
        actors={s.actor: pb.AttestedActor(s.actor_name, s.role, s.region) for s in steps}, signer=signer)
    return {
        "format": pb.FORMAT,
        "checkpoint": cp.note,
        "statement": statement,
        "signature": b64encode(ledger_key.sign(pb.STATEMENT_PURPOSE, statement)),
        "anchor": {"index": last.index, "proof": b64encode(b"".join(plan.proof(nodes))), "entry": whole},
    }
