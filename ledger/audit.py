"""Full verification of a stored log, streaming: every signature, every chain link, every Merkle node
and checkpoint, and a replay of the custody rules. It trusts nothing but the two trust anchors; the
actor registry it checks signatures against is rebuilt from the log itself, never read from the
projection tables (which an attacker could edit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ledger import errors as E
from ledger import events as ev
from ledger.admission import TrustAnchors, authenticate
from ledger.checkpoint import CheckpointError, open_checkpoint, verifier_key
from ledger.custody import Context, decide
from ledger.entry import Entry
from ledger.merkle import CompactRange, NodeID
from ledger.replay import MemoryState
from ledger.storage.sql import SqlStore, StoredEntry

PAGE = 2000


@dataclass(frozen=True)
class Failure:
    index: int | None
    reason: str


@dataclass
class AuditReport:
    entries: int = 0
    tree_size: int = 0
    chains: int = 0
    actors: int = 0
    batches: int = 0
    checkpoints: int = 0
    failure: Failure | None = None
    state: MemoryState = field(default_factory=MemoryState, repr=False)

    @property
    def ok(self) -> bool:
        return self.failure is None


class _Stop(Exception):
    def __init__(self, index: int | None, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(index, reason)


def verify_store(store: SqlStore, trust: TrustAnchors, origin: str,
                 progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Verify the whole log. Stops at the first failure and names the entry."""
    report = AuditReport()
    vkey = verifier_key(origin, trust.ledger)
    try:
        with store.read() as u:
            size, head_root = u.head()
            report.tree_size = size
            checkpoints = {c.tree_size: c for c in u.checkpoints()}
            tree = CompactRange()
            chain_heads: dict[str, bytes] = {}
            state = report.state
            for start in range(0, size, PAGE):
                page = u.entries(start, min(size, start + PAGE))
                new_nodes: list[tuple[NodeID, bytes]] = []
                for offset, stored in enumerate(page):
                    if stored.index != start + offset:
                        raise _Stop(start + offset, f"entry {start + offset} is missing (found {stored.index} next)")
                    _verify_entry(stored, chain_heads, state, trust)
                    new_nodes.extend(tree.append(stored.entry_hash))
                    report.entries += 1
                    cp = checkpoints.get(tree.size)
                    if cp is not None:
                        _verify_checkpoint(cp.note, cp.root_hash, tree, vkey)
                        report.checkpoints += 1
                if len(page) != min(size, start + PAGE) - start:
                    raise _Stop(start + len(page), f"entry {start + len(page)} is missing: the log head says "
                                                   f"{size} entries")
                stored_nodes = u.nodes(n for n, _ in new_nodes)
                for node, h in new_nodes:
                    if stored_nodes.get(node) != h:
                        raise _Stop(node.index << node.level,
                                    f"stored Merkle node (level {node.level}, index {node.index}) does not match "
                                    "the entries")
                if progress:
                    progress(report.entries, size)
            if tree.root() != head_root:
                raise _Stop(None, f"the log head root {head_root.hex()} does not match the entries' root "
                                  f"{tree.root().hex()}")
            extra = sorted(s for s in checkpoints if s > size or s == 0)
            if extra:
                raise _Stop(None, f"checkpoint for tree size {extra[0]} does not match the log of {size} entries")
            report.chains = len(chain_heads)
            report.actors = len(state.actors)
            report.batches = len(state.batches)
    except _Stop as stop:
        report.failure = stop.failure
    except E.LedgerError as err:
        report.failure = Failure(None, err.message)
    return report


def _verify_entry(stored: StoredEntry, chain_heads: dict[str, bytes], state: MemoryState,
                  trust: TrustAnchors) -> None:
    i = stored.index
    try:
        entry = Entry.from_leaf(stored.leaf)
    except E.IntegrityError as err:
        raise _Stop(i, f"entry {i}: {err.message}") from err
    if entry.hash != stored.entry_hash:
        raise _Stop(i, f"entry {i}: its content does not match its hash (stored {stored.entry_hash.hex()}, "
                       f"computed {entry.hash.hex()})")
    if entry.index != i:
        raise _Stop(i, f"entry {i} says it is entry {entry.index}: entries were moved")
    expected_prev = chain_heads.get(entry.chain)
    if entry.prev != expected_prev:
        raise _Stop(i, f"entry {i}: chain {entry.chain} link broken (prev {entry.prev.hex() if entry.prev else None}, "
                       f"expected {expected_prev.hex() if expected_prev else None})")
    body = entry.signed.body
    if (stored.chain, stored.prev, stored.event_id, stored.actor, stored.event_type) != (
            entry.chain, entry.prev, body.get("id"), body.get("actor"), body.get("type")):
        raise _Stop(i, f"entry {i}: the indexed columns do not match the signed entry")
    try:
        event = ev.parse_event(body)
        authenticate(entry.signed, event, i, state, trust)
        decision = decide(event, Context(i, entry.received), state)
    except E.LedgerError as err:
        raise _Stop(i, f"entry {i} ({body.get('type')} by {body.get('actor')}): {err.message}") from err
    if decision.chain != entry.chain:
        raise _Stop(i, f"entry {i}: recorded in chain {entry.chain}, but belongs to {decision.chain}")
    state.apply(decision.changes)
    chain_heads[entry.chain] = entry.hash


def _verify_checkpoint(note: str, root: bytes, tree: CompactRange, vkey: str) -> None:
    try:
        cp = open_checkpoint(note, vkey)
    except CheckpointError as err:
        raise _Stop(tree.size - 1, f"checkpoint at tree size {tree.size}: {err}") from err
    want = tree.root()
    if cp.size != tree.size or cp.root != want or root != want:
        raise _Stop(tree.size - 1, f"checkpoint at tree size {tree.size} does not match the entries "
                                   f"(signed root {cp.root.hex()}, computed {want.hex()})")

