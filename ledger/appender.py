"""One group append: the sequencer's unit of work, under the log-head lock.

The expensive, state-free part of admitting an event (parsing it, canonicalising it, checking its Ed25519
signature) is done before the lock by ``precheck``, in the submitting thread. Under the lock, for each event
in order: idempotency, the signer's registry status, the custody rules, the entry and its chain link; then
the alerts of the suspect refusals, after the group's events. The projection changes are applied at once (the
next event's rules read them); the log rows (entries, Merkle nodes, chain heads) are kept and written together
at the end, with one checkpoint for the whole group.
Receipts are built from what the group already holds: its own Merkle nodes and the perfect subtrees left of it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections import ChainMap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger import errors as E
from ledger import events as ev
from ledger.admission import TrustAnchors, check_signer, registered_public_key, verify_signature
from ledger.causes import likely_cause, needs_known_lots
from ledger.custody import Context, decide
from ledger.entry import Entry, Receipt, SignedEvent, indexed_columns
from ledger.group_state import Carried, GroupState, overlay
from ledger.merkle import CompactRange, NodeID, inclusion_plan, root_nodes
from ledger.state import (
    KeyRecord,
)
from ledger.storage.rows import StoredEntry
from ledger.storage.sql import SqlUnit
from signing import KeyPair, PublicKey, SigningError, canonical


@dataclass(frozen=True)
class Prechecked:
    """A submission parsed and, when its key was known, signature-checked before the lock."""

    signed: SignedEvent
    event: ev.Event | None = None
    error: E.LedgerError | None = None
    signature_ok: bool = False


def precheck(signed: SignedEvent, key_of: dict[str, KeyRecord | None], trust: TrustAnchors) -> Prechecked:
    """Parse and verify a submission using registry keys looked up beforehand (``key_of``)."""
    try:
        event = ev.parse_event(signed.body)
        public: PublicKey | None
        if event.actor in (ev.ROOT_ACTOR, ev.LEDGER_ACTOR):
            public = trust.root if event.actor == ev.ROOT_ACTOR else trust.ledger
            if public.key_id != signed.key_id:
                return Prechecked(signed, event)  # the lock-side check gives the precise refusal
        else:
            record = key_of.get(signed.key_id)
            # a key of another actor is refused under the lock as a signer mismatch, the more useful error
            public = registered_public_key(record) if record is not None and record.actor == event.actor else None
        if public is None:
            return Prechecked(signed, event)  # perhaps registered earlier in this very group
        verify_signature(signed, public)
        return Prechecked(signed, event, signature_ok=True)
    except E.LedgerError as err:
        return Prechecked(signed, error=err)


def _alert_id(signed: SignedEvent) -> str:
    """The id of the alert a refused submission is filed under: the same submission, the same alert."""
    return "alert:" + hashlib.sha256(canonical(signed.to_json())).hexdigest()[:40]


@dataclass
class _Written:
    index: int
    entry_hash: bytes
    chain: str
    prev: bytes | None
    received: dt.datetime
    event_id: str


class GroupAppend:
    def __init__(self, u: SqlUnit, *, now: dt.datetime, origin: str, ledger_key: KeyPair,
                 trust: TrustAnchors, carried: Carried | None = None, items: Sequence[Prechecked] = ()) -> None:
        """Lock the log head; with ``items``, also read what they will ask for (in the lock's round trip where
        the database allows, see ``SqlUnit.lock_and_read``)."""
        self.u = u
        self.now = now
        self.origin = origin
        self.ledger_key = ledger_key
        self.trust = trust
        events = [i.event for i in items if i.event is not None]
        key_ids = {i.signed.key_id for i in items}
        event_ids = sorted({i.signed.event_id for i in items if i.signed.event_id})
        self.state = GroupState(u, carried)
        reads = None
        if items and u.pipelines_reads:
            wants = self.state.wants(events, key_ids)
            wants.event_ids = event_ids
            reads = u.lock_and_read(wants)
        self.start, root, metas = reads.head if reads is not None else u.lock_head_versioned()
        self.version = (self.start, root, metas)
        if carried is not None and carried.version != self.version:
            carried = None  # someone else wrote since: read everything afresh
            self.state = GroupState(u, None)
        self.tree = (carried.tree.copy() if carried is not None
                     else CompactRange.from_nodes(self.start, u.nodes(root_nodes(self.start))))
        # the perfect subtrees left of the group: with the group's own nodes, all an inclusion proof of one of
        # its entries needs (a left sibling is either in the group or one of these)
        self.frontier = dict(self.tree.nodes())
        self.new_nodes: dict[NodeID, bytes] = {}
        self.entries: list[tuple[Entry, str, str | None, str | None]] = []
        self.heads: ChainMap[str, tuple[bytes, int, int] | None] = overlay(carried.heads if carried else None)
        self.changed_chains: set[str] = set()
        self.written: dict[str, _Written] = {}  # by event id, this group's entries
        self.suspects: list[tuple[str, dict[str, Any]]] = []  # alerts to file (id, body) for refusals
        self.known_ids: set[str] = set()  # event ids of this group's submissions already in the log
        self.known: dict[str, StoredEntry] = {}  # their entries, where read with them
        if reads is not None:
            self.known = reads.existing
            self.known_ids = set(self.known)
            self.state.absorb(reads, wants, events)
        elif items:
            self.known_ids = u.existing_event_ids(event_ids)
            self.state.prefetch(events, key_ids)

    # ---- admitting -------------------------------------------------------------------------------------------

    def admit(self, item: Prechecked) -> tuple[_Written, bool]:
        """Append one submission; return where it is and whether it was a replay. Raises its refusal."""
        signed = item.signed
        if item.error is not None:
            raise item.error  # a body that does not parse cannot be a replay of a recorded event
        replay = self._replay(signed)
        if replay is not None:
            return replay, True
        event = item.event
        assert event is not None
        public = check_signer(signed, event, self.tree.size, self.state, self.trust)
        if not item.signature_ok:
            verify_signature(signed, public)
        if isinstance(event, ev.AlertUpdate) and self.suspects:
            self._file_alerts()  # it may name the alert of a refusal of this group: filed before it, as one by one
        try:
            decision = decide(event, Context(self.tree.size, self.now), self.state)
        except E.LedgerError as err:
            if err.raises_alert:
                self._suspect(signed, event, err)
            raise
        return self._write(signed, event, decision.chain, decision.changes), False

    def _replay(self, signed: SignedEvent) -> _Written | None:
        event_id = signed.event_id
        if not event_id:
            return None
        mine = self.written.get(event_id)
        prior_signed: SignedEvent | None = None
        if mine is not None:
            prior_signed = next(e.signed for e, *_ in self.entries if e.index == mine.index)
            where = mine
        else:
            stored = None
            if event_id in self.known_ids:  # read with the group's lock where the database allows, else here
                stored = self.known.get(event_id) or self.u.entry_by_event_id(event_id)
            if stored is None:
                return None
            prior_signed = Entry.from_leaf(stored.leaf).signed
            where = _Written(stored.index, stored.entry_hash, stored.chain, stored.prev, stored.received_at,
                             stored.event_id)
        if prior_signed.same_as(signed):
            return where
        raise E.EventIdConflict(f"event id {event_id!r} was already used by entry {where.index} for a different "
                                "event; choose a new id", index=where.index)

    def _head(self, chain: str) -> tuple[bytes, int, int] | None:
        if chain not in self.heads:
            self.heads[chain] = self.u.chain_head(chain)
        return self.heads[chain]

    def _write(self, signed: SignedEvent, event: ev.Event, chain: str, changes: Sequence[Any]) -> _Written:
        head = self._head(chain)
        entry = Entry(self.tree.size, self.now, chain, head[0] if head else None, signed)
        entry_hash = entry.hash
        gtin, lot, _ = indexed_columns(event.type, event, entry)
        self.entries.append((entry, event.type, gtin, lot))
        self.heads[chain] = (entry_hash, entry.index, (head[2] if head else 0) + 1)
        self.changed_chains.add(chain)
        self.new_nodes.update(self.tree.append(entry_hash))
        self.state.apply(changes)
        written = _Written(entry.index, entry_hash, chain, entry.prev, self.now, signed.event_id)
        self.written[signed.event_id] = written
        return written

    def _suspect(self, signed: SignedEvent, event: ev.Event, err: E.LedgerError) -> None:
        """Write the alert of a suspect refusal from the state at the refusal (its lot, its likely cause); it is
        filed with the group's end (``_file_alerts``)."""
        with contextlib.suppress(E.LedgerError, SigningError):  # not fileable: the refusal stands alone
            alert_id = _alert_id(signed)
            self.suspects.append((alert_id, self._alert_body(alert_id, signed, event, err)))

    def _file_alerts(self) -> None:
        """Keep each refused but properly signed suspect submission in the log as evidence, in an alert signed by
        the ledger, after the group's events (before an alert update among them, which may name one). The same
        refused submission sent again gets no second alert; whether its alert is already filed is one read for
        all of them (a wave of cloned packs scanned across the country cost the sequencer one round trip each).
        An alert's chain is decided where it stands in the log, as the audit replays it. The refusals stand even
        if an alert cannot be filed; the clients still get them."""
        named, self.suspects = self.suspects, []
        filed = self.u.existing_event_ids([a for a, _ in named if a not in self.written]) if named else set()
        for alert_id, body in named:
            if alert_id in filed or alert_id in self.written:
                continue
            try:
                alert = ev.parse_event(body)
                decision = decide(alert, Context(self.tree.size, self.now), self.state)
                self._write(SignedEvent.create(body, self.ledger_key), alert, decision.chain, decision.changes)
            except (E.LedgerError, SigningError):  # one alert that cannot be filed must not sink the group
                continue

    def _alert_body(self, alert_id: str, signed: SignedEvent, event: ev.Event,
                    err: E.LedgerError) -> dict[str, Any]:
        body: dict[str, Any] = {"v": ev.SCHEMA_VERSION, "type": "alert", "id": alert_id, "actor": ev.LEDGER_ACTOR,
                                "time": ev.format_time(self.now), "kind": err.code, "message": err.message[:2000],
                                "suspect": event.actor, "evidence": signed.to_json()}
        for name in ("gtin", "lot", "serial"):
            value = err.details.get(name, getattr(event, name, None))
            if isinstance(value, str):
                body[name] = value
        gtin, serial = body.get("gtin"), body.get("serial")
        pack = self.state.pack(gtin, serial) if isinstance(gtin, str) and isinstance(serial, str) else None
        if pack is not None:
            body["lot"] = pack.lot  # file the alert in the real batch chain; the scanned lot is in the evidence
        # every lot of the GTIN, read only for the one cause that uses them (a suspect scan of a cloned pack
        # costs no read of its product's batches)
        known_lots = ([b.lot for b in self.u.batches(gtin)] if isinstance(gtin, str) and needs_known_lots(err)
                      else [])
        cause = likely_cause(err, event, registered_lot=pack.lot if pack else None, known_lots=known_lots)
        if cause:
            body["cause"] = cause
        return body

    # ---- committing ------------------------------------------------------------------------------------------

    def finish(self) -> str | None:
        """Write the group's log rows and its checkpoint, and commit; return the checkpoint note (None if nothing
        new). Nothing below reads: the writes and the commit go out together, one round trip on PostgreSQL."""
        from ledger.checkpoint import Checkpoint, sign_checkpoint

        self._file_alerts()
        with self.u.pipelined(commit=True):
            self.state.flush()
            if self.tree.size == self.start:
                return None
            self.u.insert_entries(self.entries)
            self.u.insert_nodes(sorted(self.new_nodes.items()))
            self.u.set_chain_heads([(chain, *head) for chain in sorted(self.changed_chains)
                                    if (head := self.heads[chain]) is not None])
            root = self.tree.root()
            note = sign_checkpoint(Checkpoint(self.origin, self.tree.size, root), self.origin, self.ledger_key)
            self.u.insert_checkpoint(self.tree.size, root, note, self.now)
            self.u.set_head(self.tree.size, root)
            return note

    def carry(self) -> Carried:
        """What the next group may reuse, once this one has committed."""
        version = (self.tree.size, self.tree.root(), self.version[2]) if self.tree.size != self.start else self.version
        return self.state.carry(version, self.tree, self.heads)

    def receipts(self, outcomes: Sequence[tuple[_Written, bool] | E.LedgerError],
                 note: str | None) -> list[Receipt | E.LedgerError]:
        if note is None:
            cp = self.u.checkpoint()
            if cp is None:
                return [o for o in outcomes if isinstance(o, E.LedgerError)]
            note, size, root = cp.note, cp.tree_size, cp.root_hash
        else:
            size, root = self.tree.size, self.tree.root()
        plans = {w.index: inclusion_plan(w.index, size) for o in outcomes if not isinstance(o, E.LedgerError)
                 for w in (o[0],)}
        known = {**self.frontier, **self.new_nodes}
        missing = {n for p in plans.values() for n in p.ids if n not in known}
        nodes = {**self.u.nodes(missing), **known} if missing else known
        out: list[Receipt | E.LedgerError] = []
        for o in outcomes:
            if isinstance(o, E.LedgerError):
                out.append(o)
                continue
            w, replayed = o
            out.append(Receipt(w.index, w.entry_hash, w.chain, w.prev, w.received, w.event_id, size, root,
                               tuple(plans[w.index].proof(nodes)), note, replayed))
        return out
