"""Full verification of a log, streaming: every signature, every chain link, every Merkle node and
checkpoint, and a replay of the custody rules. It trusts nothing but the two trust anchors; the actor
registry it checks signatures against is rebuilt from the log itself, never read from the projection
tables (which an attacker could edit).

``LogVerifier`` is fed entries in order; ``verify_store`` feeds it from the database (and also checks the
stored Merkle nodes and every stored checkpoint), a remote auditor feeds it pages from the API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ledger import errors as E
from ledger import events as ev
from ledger.admission import TrustAnchors, authenticate, check_signer
from ledger.audit_reader import Columns, LogReader
from ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_verifier_key,
    split_note,
    verifier_key,
    verify_every_cosignature,
)
from ledger.custody import Context, decide
from ledger.entry import Entry, indexed_columns
from ledger.merkle import CompactRange, NodeID, leaf_hash
from ledger.replay import MemoryState
from ledger.storage.sql import ProjectionSnapshot, SqlStore
from signing import PublicKey


@dataclass(frozen=True)
class Failure:
    index: int | None
    reason: str


@dataclass(frozen=True)
class ChainHead:
    hash: bytes
    index: int
    length: int


@dataclass
class AuditReport:
    entries: int = 0
    tree_size: int = 0
    chains: int = 0
    actors: int = 0
    batches: int = 0
    checkpoints: int = 0
    #: witness cosignatures verified with a witness key at hand, and those of witnesses whose key is not (by name)
    cosignatures: int = 0
    unchecked_witnesses: dict[str, int] = field(default_factory=dict)
    failure: Failure | None = None
    #: the entries an earlier audit verified, whose state this one resumed from (0: a full audit)
    resumed_from: int = 0
    state: MemoryState = field(default_factory=MemoryState, repr=False)
    chain_heads: dict[str, ChainHead] = field(default_factory=dict, repr=False)
    #: the Merkle tree's compact range over the verified entries (what a later audit resumes from)
    tree: CompactRange = field(default_factory=CompactRange, repr=False)
    #: the stored projections, read in the same snapshot as the log head (``verify_store(projections=True)``)
    projections: ProjectionSnapshot | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.failure is None


class CosignatureMemory(Protocol):
    """The stored witness cosignatures an earlier audit verified (an auditor's kept state): a resumed audit
    verifies only the rows it has not seen, whatever checkpoint they are for."""

    def seen(self, size: int, witness: str, line: str) -> bool | None:
        """True: verified; False: seen, its witness's key not at hand then; None: not seen."""

    def remember(self, size: int, witness: str, line: str, verified: bool) -> None: ...


class AuditFailure(Exception):
    def __init__(self, index: int | None, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(index, reason)


class LogVerifier:
    """Verifies entries fed in index order, from 0."""

    def __init__(self, trust: TrustAnchors, origin: str) -> None:
        self.trust, self.origin = trust, origin
        self.vkey = verifier_key(origin, trust.ledger)
        self._vkey = parse_verifier_key(self.vkey)  # once: it was 27 of the 95 us each checkpoint took here
        self.report = AuditReport()
        self.tree = CompactRange()

    def add(self, index: int, leaf: bytes, entry_hash: bytes, columns: Columns | None = None, *,
            checked: bool = False) -> list[tuple[NodeID, bytes]]:
        """Verify one entry; return the Merkle nodes it completes (for comparison with stored ones).
        ``columns``: the indexed columns stored beside the leaf, which must say what the signed entry says.
        ``checked``: its leaf was already found well-formed, matching ``entry_hash``, and its signature valid for
        the key its key id names (by a helper process); whether that key may sign it is still checked here."""
        if index != self.tree.size:
            raise AuditFailure(self.tree.size, f"entry {self.tree.size} is missing (found {index} next)")
        entry = self._entry(index, leaf, entry_hash, checked=checked)
        event = self._replay(entry, checked)
        if columns is not None:
            body = entry.signed.body
            gtin, lot, serial = indexed_columns(event.type, event, entry)
            # a NULL serial is what entries from before that column hold; readers then use the signed body
            if (*columns[:7], columns[7] or serial) != (
                    entry.chain, entry.prev, body.get("id"), body.get("actor"), body.get("type"), gtin, lot, serial):
                raise AuditFailure(index, f"entry {index}: the indexed columns do not match the signed entry")
        self.report.entries += 1
        return self.tree.append(entry_hash)

    def checkpoint(self, note: str, stored_root: bytes | None = None, *, signed: bool = False) -> Checkpoint:
        """Check a signed checkpoint for the current tree size against the entries verified so far. ``signed``:
        its note was already found well-formed and signed by the ledger key (by a helper process)."""
        size = self.tree.size
        try:
            cp = Checkpoint.parse_body(split_note(note)[0]) if signed else open_checkpoint(note, self._vkey)
        except CheckpointError as err:
            raise AuditFailure(size - 1 if size else None, f"checkpoint at tree size {size}: {err}") from err
        want = self.tree.root()
        if cp.size != size or cp.root != want:
            raise AuditFailure(size - 1 if size else None,
                               f"checkpoint at tree size {size} does not match the entries (signed size {cp.size} "
                               f"root {cp.root.hex()}, computed {want.hex()})")
        if stored_root is not None and stored_root != want:
            raise AuditFailure(size - 1 if size else None,
                               f"checkpoint at tree size {size}: the root stored beside it ({stored_root.hex()}) is "
                               f"not the root it signs ({want.hex()})")
        self.report.checkpoints += 1
        return cp

    def cosignatures(self, note: str, witnesses: Mapping[str, PublicKey]) -> None:
        """Check the witness cosignatures on a checkpoint note of this log (already checked with ``checkpoint``):
        each by a witness whose key is at hand must verify; the others are counted as unchecked."""
        text, sigs = split_note(note)
        size = Checkpoint.parse_body(text).size
        for name in sorted({sig.name for sig in sigs if sig.name != self.origin}):
            key = witnesses.get(name)
            if key is None:
                self.report.unchecked_witnesses[name] = self.report.unchecked_witnesses.get(name, 0) + 1
                continue
            try:
                verify_every_cosignature(note, name, key)
            except CheckpointError as err:
                raise AuditFailure(None, f"the cosignature of witness {name} on the checkpoint at tree size {size} "
                                         f"does not verify with its key: {err}") from err
            self.report.cosignatures += 1

    def finish(self) -> AuditReport:
        r = self.report
        r.tree = self.tree
        r.tree_size = self.tree.size
        r.chains = len(r.chain_heads)
        r.actors = len(r.state.actors)
        r.batches = len(r.state.batches)
        return r

    def _entry(self, i: int, leaf: bytes, entry_hash: bytes, checked: bool = False) -> Entry:
        try:
            entry = Entry.from_checked_leaf(leaf) if checked else Entry.from_leaf(leaf)
        except E.IntegrityError as err:
            raise AuditFailure(i, f"entry {i}: {err.message}") from err
        if not checked and leaf_hash(leaf) != entry_hash:
            raise AuditFailure(i, f"entry {i}: its content does not match its hash (stored {entry_hash.hex()}, "
                                  f"computed {leaf_hash(leaf).hex()})")
        if entry.index != i:
            raise AuditFailure(i, f"entry {i} says it is entry {entry.index}: entries were moved")
        head = self.report.chain_heads.get(entry.chain)
        expected = head.hash if head else None
        if entry.prev != expected:
            raise AuditFailure(i, f"entry {i}: chain {entry.chain} link broken (prev "
                                  f"{entry.prev.hex() if entry.prev else None}, expected "
                                  f"{expected.hex() if expected else None})")
        return entry

    def _replay(self, entry: Entry, signature_ok: bool = False) -> ev.Event:
        i, body, state = entry.index, entry.signed.body, self.report.state
        try:
            event = ev.parse_event(body)
            if signature_ok:
                check_signer(entry.signed, event, i, state, self.trust)
            else:
                authenticate(entry.signed, event, i, state, self.trust)
            decision = decide(event, Context(i, entry.received), state)
        except E.LedgerError as err:
            raise AuditFailure(i, f"entry {i} ({body.get('type')} by {body.get('actor')}): {err.message}") from err
        if decision.chain != entry.chain:
            raise AuditFailure(i, f"entry {i}: recorded in chain {entry.chain}, but belongs to {decision.chain}")
        state.apply(decision.changes)
        head = self.report.chain_heads.get(entry.chain)
        self.report.chain_heads[entry.chain] = ChainHead(entry.hash, i, (head.length if head else 0) + 1)
        return event


def verify_store(store: SqlStore, trust: TrustAnchors, origin: str,
                 progress: Callable[[int, int], None] | None = None, *,
                 helpers: int | None = None, witnesses: Mapping[str, PublicKey] | None = None,
                 projections: bool = False, resume: LogVerifier | None = None,
                 cosigned: CosignatureMemory | None = None) -> AuditReport:
    """Verify the whole stored log, its Merkle nodes, checkpoints and witness cosignatures. Stops at the first
    failure. ``helpers``: processes checking signatures ahead (default: one per spare core, for big logs only).
    ``witnesses``: the witness keys at hand (name -> key); cosignatures of other witnesses are counted, unchecked.
    ``projections``: also read the stored projections in the log head's snapshot (``AuditReport.projections``).
    ``resume``: a verifier an earlier audit left (``ledger.audit_state``): only the entries after it are read and
    verified, with the checkpoints and cosignatures from its size on; the roots they are checked against still
    commit to every entry, so a log whose verified part was changed fails. ``cosigned``: the cosignature rows
    verified before, and where to note those verified now; without it, those from the resumed size on are checked.
    A database that cannot be read is ``StorageUnavailable``, raised: that is not a finding about the log."""
    verifier = resume or LogVerifier(trust, origin)
    start = verifier.tree.size
    reader = LogReader(store, trust, verifier.vkey, helpers, projections=projections, start=start)
    try:
        head = reader.head()
        verifier.report.projections = head.projections
        checkpoints = head.checkpoints
        if head.size < start:
            raise AuditFailure(None, f"the log shrank from the {start} entries verified before to {head.size}: "
                                     "history was rolled back")
        if start and start in checkpoints:  # the log's own word on the verified part, if it signed one there
            verifier.checkpoint(checkpoints[start].note, checkpoints[start].root_hash)
        for page in reader.pages():
            checked, signed = reader.results(page)
            new_nodes: list[tuple[NodeID, bytes]] = []
            for (index, entry_hash, leaf, columns), ok in zip(page.rows, checked, strict=True):
                new_nodes.extend(verifier.add(index, leaf, entry_hash, columns, checked=ok))
                cp = checkpoints.get(verifier.tree.size)
                if cp is not None:
                    verifier.checkpoint(cp.note, cp.root_hash, signed=verifier.tree.size in signed)
            if verifier.tree.size != page.end:
                raise AuditFailure(verifier.tree.size, f"entry {verifier.tree.size} is missing: the log head "
                                                       f"says {head.size} entries")
            for node, h in new_nodes:
                if page.nodes.get(node) != h:
                    raise AuditFailure(node.index << node.level,
                                       f"stored Merkle node (level {node.level}, index {node.index}) does not "
                                       "match the entries")
            if progress:
                progress(verifier.tree.size, head.size)
        if verifier.tree.root() != head.root:
            raise AuditFailure(None, f"the log head root {head.root.hex()} does not match the entries' root "
                                     f"{verifier.tree.root().hex()}")
        extra = sorted(s for s in checkpoints if s > head.size or s == 0)
        if extra:
            raise AuditFailure(None, f"checkpoint for tree size {extra[0]} does not match the log of {head.size} "
                                     "entries")
        _check_stored_cosignatures(store, verifier, witnesses or {}, start, cosigned)
    except AuditFailure as stop:
        verifier.report.failure = stop.failure
    except E.StorageUnavailable:
        raise
    except E.LedgerError as err:  # e.g. a stored row the readers refuse: the error names it
        named = err.details.get("index")
        verifier.report.failure = Failure(named if isinstance(named, int) else None, err.message)
    finally:
        reader.close()
    return verifier.finish()


def _check_stored_cosignatures(store: SqlStore, verifier: LogVerifier, witnesses: Mapping[str, PublicKey],
                               since: int, cosigned: CosignatureMemory | None) -> None:
    """A cosignature row is a witness's word that it saw this log at that size: one an attacker forged or moved to
    another checkpoint must not pass for it. Those for sizes from ``since`` on (a resumed audit's), and with
    ``cosigned`` every row it has not seen verified (a witness may cosign an older checkpoint late)."""
    with store.read() as u:
        rows = u.cosignatures(0 if cosigned is not None else since)
        if cosigned is not None:  # those seen before: verified, or still of a witness whose key is not at hand
            rows = [r for r in rows if r[0] >= since or (seen := cosigned.seen(*r[:3])) is None
                    or (not seen and r[1] in witnesses)]
        notes = {cp.tree_size: cp.note for cp in u.checkpoints(min(r[0] for r in rows))} if rows else {}
    for size, witness, line, timestamp in rows:
        if witness == verifier.origin:
            raise AuditFailure(None, f"a cosignature is stored under the log's own name {verifier.origin} at tree "
                                     f"size {size}")
        note = notes.get(size)
        if note is None:
            raise AuditFailure(None, f"a cosignature of witness {witness} is stored for tree size {size}, which has "
                                     "no checkpoint")
        try:
            sigs = split_note(note + line)[1]
        except CheckpointError as err:
            raise AuditFailure(None, f"the stored cosignature of witness {witness} at tree size {size} is not a "
                                     f"signature line: {err}") from err
        names = {sig.name for sig in sigs}
        if witness not in names:
            raise AuditFailure(None, f"the stored cosignature of witness {witness} at tree size {size} is signed "
                                     f"under another name ({', '.join(sorted(names))})")
        # the time column is a copy of the time the witness signed (the first 8 bytes of its signature): a copy
        # that says otherwise would date the witness's word wrongly for whoever queries it
        signed = {int.from_bytes(sig.signature[:8], "big") for sig in sigs if sig.name == witness}
        if signed != {timestamp}:
            raise AuditFailure(None, f"the stored cosignature of witness {witness} at tree size {size} is dated "
                                     f"{timestamp}, but the witness signed it at {', '.join(map(str, sorted(signed)))}")
        verifier.cosignatures(note + line, witnesses)
        if cosigned is not None:
            cosigned.remember(size, witness, line, witness in witnesses)
