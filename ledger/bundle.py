"""Offline verification bundles: everything an inspector needs to check packs with no network.

A bundle holds a signed checkpoint, a manifest signed by the ledger key that names each included chain
and its head at that checkpoint, and every entry of those chains with an RFC 9162 inclusion proof. The
actor registry's chains are always included, so signing keys are rebuilt from root-signed entries and never
taken on trust. Verification needs only the two pinned public keys (ledger and regulator root):

1. the checkpoint is signed by the ledger key; the manifest is signed by the ledger key and names the same
   tree size and root;
2. every entry is in the tree (inclusion proof against the checkpoint root);
3. every chain is complete: it starts with ``prev = null``, each ``prev`` is the hash of the entry before,
   and it ends at the head the manifest names (so a dropped entry, even the last one, is detected);
4. replaying the entries in log order, every signature verifies against the registry as it stood, and the
   custody rules accept every event; the resulting state gives the verdict for any pack of the bundle.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger import errors as E
from ledger import events as ev
from ledger.admission import TrustAnchors, authenticate
from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint, verifier_key
from ledger.custody import Context, decide
from ledger.entry import Entry
from ledger.merkle import ProofError, verify_inclusion
from ledger.replay import MemoryState
from ledger.verdict import Finding, judge
from signing import BadSignatureError, b64decode, canonical
from signing.errors import SigningError

FORMAT = "athar-bundle/1"
MANIFEST_PURPOSE = "bundle-manifest"


class TamperedBundle(E.IntegrityError):
    code = "tampered_bundle"
    title = "The bundle fails verification"


# ---- verifying (anywhere, offline) --------------------------------------------------------------------------


@dataclass
class VerifiedBundle:
    checkpoint: Checkpoint
    entries: list[Entry]
    state: MemoryState
    created: dt.datetime
    # per batch chain: its entries naming no serial, and its entries by the serials they name
    _pack_index: dict[str, tuple[list[Entry], dict[str, list[Entry]]]] = field(
        default_factory=dict, repr=False, compare=False)

    def verdict(self, gtin: str, serial: str, *, lot: str | None = None, expiry: dt.date | None = None,
                scanner: str | None = None, now: dt.datetime | None = None) -> Finding:
        pack = self.state.pack(gtin, serial)
        batch = self.state.batch(gtin, pack.lot) if pack else None
        pooled = bool(scanner and pack and pack.holder is None and self.state.holding(scanner, gtin, pack.lot) > 0)
        return judge(pack, batch, gtin=gtin, serial=serial, lot=lot, expiry=expiry, now=now or dt.datetime.now(dt.UTC),
                     scanner=scanner, scanner_holds_pooled=pooled)

    def covers(self, gtin: str) -> bool:
        return any(b.gtin == gtin for b in self.state.batches.values())

    def history(self, gtin: str, lot: str) -> list[Entry]:
        chain = f"batch/{gtin}/{lot}"
        return [e for e in self.entries if e.chain == chain]

    def pack_history(self, gtin: str, lot: str, serial: str) -> list[Entry]:
        """The entries of the batch chain that may concern one pack: those naming its serial and those naming
        none. Indexed per chain on first use, as a scanning session asks for many packs of the same batches."""
        chain = f"batch/{gtin}/{lot}"
        if chain not in self._pack_index:
            wide: list[Entry] = []
            by_serial: dict[str, list[Entry]] = {}
            for e in self.history(gtin, lot):
                one, many = e.signed.body.get("serial"), e.signed.body.get("serials")
                named = [one] if isinstance(one, str) else [s for s in many if isinstance(s, str)] \
                    if isinstance(many, list) else None
                if named is None:
                    wide.append(e)
                for s in named or ():
                    by_serial.setdefault(s, []).append(e)
            self._pack_index[chain] = (wide, by_serial)
        wide, by_serial = self._pack_index[chain]
        return sorted([*wide, *by_serial.get(serial, ())], key=lambda e: e.index)


def _fail(index: int | None, reason: str) -> TamperedBundle:
    where = f"entry {index}: " if index is not None else ""
    return TamperedBundle(where + reason, index=index)


def verify_bundle(doc: Any, trust: TrustAnchors) -> VerifiedBundle:
    """Verify a bundle against the pinned keys; raise TamperedBundle naming what fails."""
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise _fail(None, f"not an {FORMAT} bundle")
    try:
        note = str(doc["checkpoint"])
        origin = note.split("\n", 1)[0]
        cp = open_checkpoint(note, verifier_key(origin, trust.ledger))
    except (KeyError, CheckpointError, ValueError) as exc:
        raise _fail(None, f"the checkpoint is not signed by the pinned ledger key: {exc}") from exc
    manifest = doc.get("manifest")
    if not isinstance(manifest, Mapping):
        raise _fail(None, "the bundle has no manifest")
    try:
        trust.ledger.verify(MANIFEST_PURPOSE, dict(manifest), b64decode(str(doc.get("manifest_signature", ""))))
    except (BadSignatureError, SigningError) as exc:
        raise _fail(None, "the manifest is not signed by the pinned ledger key") from exc
    if manifest.get("tree_size") != cp.size or manifest.get("root_hash") != cp.root.hex():
        raise _fail(None, "the manifest and the checkpoint describe different trees")
    entries = _proven_entries(doc.get("entries"), cp)
    _check_chains(entries, manifest.get("chains"))
    state = _replay(entries, trust)
    created = ev.parse_time(manifest.get("created"), "created")
    return VerifiedBundle(cp, entries, state, created)


def _proven_entries(raw: Any, cp: Checkpoint) -> list[Entry]:
    if not isinstance(raw, list):
        raise _fail(None, "the bundle has no entry list")
    entries: list[Entry] = []
    seen: set[int] = set()
    for item in raw:
        if not isinstance(item, Mapping):
            raise _fail(None, "malformed entry: an entry is not a JSON object")
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise _fail(None, f"malformed entry: its index is {str(index)[:40]!r}, not a whole number")
        hashes = item.get("proof")
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            raise _fail(index, "malformed entry: its proof is not a list of hex hashes")
        try:
            entry = Entry.from_leaf(canonical(item.get("entry")))
            proof = [bytes.fromhex(h) for h in hashes]
        except (TypeError, ValueError, E.IntegrityError, SigningError) as exc:
            raise _fail(index, f"malformed entry: {exc}") from exc
        if entry.index != index or index in seen:
            raise _fail(index, "the entry's index does not match its position")
        try:
            verify_inclusion(entry.hash, index, cp.size, proof, cp.root)
        except ProofError as exc:
            raise _fail(index, f"not in the signed tree: {exc}") from exc
        seen.add(index)
        entries.append(entry)
    entries.sort(key=lambda e: e.index)
    return entries


def _check_chains(entries: list[Entry], heads: Any) -> None:
    if not isinstance(heads, Mapping):
        raise _fail(None, "the manifest names no chains")
    by_chain: dict[str, list[Entry]] = {}
    for e in entries:
        by_chain.setdefault(e.chain, []).append(e)
    if set(by_chain) != set(heads):
        extra = sorted(set(by_chain) ^ set(heads))
        raise _fail(None, f"chains present and chains in the manifest differ: {', '.join(extra[:5])}")
    for chain, items in by_chain.items():
        prev: bytes | None = None
        for e in items:
            if e.prev != prev:
                raise _fail(e.index, f"chain {chain} is broken before this entry (an entry was dropped or altered)")
            prev = e.hash
        head = heads[chain]
        if not isinstance(head, Mapping) or head.get("length") != len(items) or \
                head.get("head_hash") != items[-1].hash.hex():
            raise _fail(items[-1].index, f"chain {chain} does not end at the signed head (entries were dropped)")


def _replay(entries: list[Entry], trust: TrustAnchors) -> MemoryState:
    state = MemoryState()
    for entry in entries:
        try:
            event = ev.parse_event(entry.signed.body)
            authenticate(entry.signed, event, entry.index, state, trust)
            decision = decide(event, Context(entry.index, entry.received), state)
        except E.LedgerError as err:
            raise _fail(entry.index, f"{err.message}") from err
        if decision.chain != entry.chain:
            raise _fail(entry.index, f"recorded in chain {entry.chain} but belongs to {decision.chain}")
        state.apply(decision.changes)
    return state
