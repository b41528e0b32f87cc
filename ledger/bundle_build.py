"""Building offline bundles on the server (the format and its verification are in ``ledger.bundle``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from ledger import errors as E
from ledger import events as ev
from ledger.bundle import FORMAT, MANIFEST_PURPOSE
from ledger.entry import Entry
from ledger.storage.rows import StoredEntry
from ledger.storage.sql import SqlUnit, prove_entries
from signing import KeyPair, b64encode


def build_bundle(u: SqlUnit, ledger_key: KeyPair, chains: Iterable[str], *, created: dt.datetime) -> dict[str, Any]:
    cp = u.checkpoint()
    if cp is None:
        raise E.NotFound("the log is empty: nothing to bundle")
    by_chain: dict[str, list[StoredEntry]] = {}
    for e in u.registry_entries():  # the whole registry, in one query: signatures are checked against it
        by_chain.setdefault(e.chain, []).append(e)
    for chain in set(chains):
        by_chain[chain] = u.chain_entries(chain)
    heads: dict[str, Any] = {}
    stored = []
    for chain in sorted(by_chain):
        entries = [e for e in by_chain[chain] if e.index < cp.tree_size]
        if not entries:
            continue
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
        "entries": [{"index": e.index, "entry": Entry.from_leaf(e.leaf).to_json(),
                     "proof": [h.hex() for h in proof]} for e, proof in proved],
    }
