"""The application service: one unit of work per call, the sequencer, and the read side.

Writes go through ``append``: it takes a group of signed submissions, locks the log head (so several
processes append to one linear log), checks each submission (shape, signature, custody rules), appends
the accepted ones with their chain links and Merkle nodes, applies their projection changes, signs one
checkpoint for the group and commits once. Each submission gets a receipt, or the error that refused it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger import errors as E
from ledger import events as ev
from ledger.admission import TrustAnchors
from ledger.appender import GroupAppend, Prechecked, precheck
from ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    split_note,
    verifier_key,
    verify_cosignature,
)
from ledger.entry import Receipt, SignedEvent
from ledger.group_state import Carried
from ledger.merkle import (
    MissingNodeError,
    NodeID,
    ProofError,
    TreeRangeError,
    consistency_plan,
    inclusion_plan,
    verify_consistency,
    verify_inclusion,
)
from ledger.node_cache import NodeCache
from ledger.state import KeyRecord
from ledger.storage.rows import StoredEntry
from ledger.storage.sql import (
    ProofMaterial,
    SqlStore,
    StoredCheckpoint,
    erase_personal_data,
    put_personal_data,
)
from signing import KeyPair, PublicKey, SigningError

MAX_ENTRIES_PAGE = 1000
#: at most this many bytes of leaves in a page of entries read with ``max_bytes`` (as the API serves them)
MAX_ENTRIES_BYTES = 8 << 20


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class CheckedProof:
    """A proof with the signed tree head(s) it is checked against, as the API serves it."""

    hashes: list[bytes]
    root: bytes  # of the checkpoint at the proof's tree size
    first_root: bytes | None = None  # consistency: of the checkpoint at the first size
    leaf_hash: bytes | None = None  # inclusion: RFC 9162 hash of the stored leaf


@dataclass(frozen=True)
class LedgerConfig:
    origin: str
    ledger_key: KeyPair
    trust: TrustAnchors
    #: witnesses whose cosignatures the ledger accepts and serves (name -> public key)
    witnesses: Mapping[str, PublicKey] = field(default_factory=dict)

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.origin, self.ledger_key.public)


class Ledger:
    def __init__(self, store: SqlStore, config: LedgerConfig, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._keys: dict[str, KeyRecord | None] = {}
        self._carried: Carried | None = None  # what the last group committed by this process leaves to the next
        self._nodes = NodeCache()  # perfect Merkle nodes read for proofs, which never change

    # ---- set-up -------------------------------------------------------------------------------------------

    def bind(self) -> None:
        """Record the trust anchors in a new database, or check that an existing one uses the same keys."""
        want = {"origin": self.config.origin, "ledger_key_id": self.config.ledger_key.key_id,
                "ledger_public_key": self.config.ledger_key.public.b64,
                "root_key_id": self.config.trust.root.key_id, "root_public_key": self.config.trust.root.b64}
        with self.store.write() as u:
            have = u.meta()
            if not have:
                u.put_meta(want)
                return
        diff = [k for k in want if have.get(k) != want[k]]
        if diff:
            raise E.IntegrityError(f"this database belongs to another ledger ({', '.join(diff)} differ): "
                                   f"it was created with ledger key {have.get('ledger_key_id')} and root key "
                                   f"{have.get('root_key_id')}")

    # ---- writes ---------------------------------------------------------------------------------------------

    def submit(self, signed: SignedEvent) -> Receipt:
        result = self.append([signed])[0]
        if isinstance(result, E.LedgerError):
            raise result
        return result

    def precheck(self, signed: SignedEvent) -> Prechecked:
        """Parse and signature-check a submission without the lock (the GroupCommitter calls this in the
        submitting thread, so signatures are verified in parallel)."""
        self._load_keys([signed.key_id])
        return precheck(signed, self._keys, self.config.trust)

    def knows_key(self, key_id: str) -> bool:
        """Whether ``precheck`` can check this key's signatures without reading the database."""
        return key_id in self._keys or key_id in (self.config.trust.root.key_id, self.config.trust.ledger.key_id)

    def _load_keys(self, key_ids: Sequence[str]) -> None:
        # A key id is the hash of its public key, so a cached record's key never goes stale; whether the key
        # may still sign is checked again under the lock.
        trusted = (self.config.trust.root.key_id, self.config.trust.ledger.key_id)  # not in the registry
        missing = [k for k in key_ids if k not in self._keys and k not in trusted]
        if missing:
            with self.store.read() as u:
                self._keys.update(u.keys_by_id(missing))

    def append(self, submissions: Sequence[SignedEvent | Prechecked]) -> list[Receipt | E.LedgerError]:
        self._load_keys([s.key_id for s in submissions if isinstance(s, SignedEvent)])
        items = [s if isinstance(s, Prechecked) else precheck(s, self._keys, self.config.trust) for s in submissions]
        with self.store.write() as u:
            group = GroupAppend(u, now=self.clock(), origin=self.config.origin, ledger_key=self.config.ledger_key,
                                trust=self.config.trust, carried=self._carried, items=items)
            outcomes: list[Any] = []
            for item in items:
                try:
                    outcomes.append(group.admit(item))
                except E.LedgerError as err:
                    outcomes.append(err)
                except SigningError as err:  # one malformed submission must not sink the others in its group
                    outcomes.append(E.InvalidEvent(f"the event cannot be encoded canonically: {err}"))
            note = group.finish()  # on PostgreSQL this commits, with the writes
            receipts = group.receipts(outcomes, note)
        self._carried = group.carry()  # only once committed
        return receipts

    def file_alerts(self, alerts: Sequence[dict[str, Any]]) -> list[Receipt]:
        """Append ledger-signed alerts found by the ledger itself (overdue shipments, suspect scans).

        Each alert's id is derived from what it is about, so filing the same finding twice adds nothing.
        """
        with self.store.read() as u:
            fresh = [a for a in alerts if u.entry_by_event_id(a["id"]) is None]
        now = self.clock()
        signed = []
        for a in fresh:
            body = {"v": ev.SCHEMA_VERSION, "type": "alert", "actor": ev.LEDGER_ACTOR, "time": ev.format_time(now),
                    **a}
            signed.append(SignedEvent.create(body, self.config.ledger_key))
        results = self.append(signed) if signed else []
        return [r for r in results if isinstance(r, Receipt)]

    def overdue_shipments(self, max_transit: dt.timedelta) -> list[Receipt]:
        """Alert on every shipment still in transit after ``max_transit`` (received late or never)."""
        cutoff = self.clock() - max_transit
        with self.store.read() as u:
            late = u.shipments_in_transit(before=cutoff)
        return self.file_alerts([{
            "id": f"alert:overdue:{s.id}"[:128], "kind": "shipment_overdue",
            "message": f"shipment {s.id} of {s.quantity} pack(s) from {s.sender} to {s.recipient}, shipped "
                       f"{ev.format_time(s.shipped_at)}, was not received within {max_transit.days} day(s)",
            "gtin": s.gtin, "lot": s.lot, "suspect": s.recipient,
            "cause": "goods lost or diverted in transit, or a receipt not recorded",
            "evidence": {"shipment": s.id, "shipped_index": s.shipped_index}} for s in late])

    def suspect_scan(self, actor: str, gtin: str, serial: str, verdict: str, reason: str) -> list[Receipt]:
        """Alert on an authenticated scan of an unknown pack (the ledger never saw this serial)."""
        digest = hashlib.sha256(f"{actor}|{gtin}|{serial}".encode()).hexdigest()[:32]
        return self.file_alerts([{
            "id": f"alert:scan:{digest}", "kind": "unknown_pack_scan",
            "message": f"{actor} scanned GTIN {gtin} serial {serial}: {verdict} ({reason})", "gtin": gtin,
            "serial": serial, "suspect": actor,
            "cause": "a pack that was never registered: falsified, or outside the national supply chain",
            "evidence": {"scanner": actor, "gtin": gtin, "serial": serial, "verdict": verdict}}])

    # ---- proofs ------------------------------------------------------------------------------------------------

    # Proofs read without a transaction, in one statement on PostgreSQL (the log's size with the nodes): the
    # nodes of a tree no bigger than the head are written once, with the head, and never change.
    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        with self.store.read_statements() as u, _proof_errors():
            plan = inclusion_plan(index, tree_size)
            got = u.proof_material(plan.ids)
            _within(got, tree_size)
            return plan.proof(got.nodes)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        with self.store.read_statements() as u, _proof_errors():
            plan = consistency_plan(first, second)
            got = u.proof_material(plan.ids)
            _within(got, second)
            return plan.proof(got.nodes)

    # What the API serves: these keep the nodes they read (``NodeCache``) and ask for the others only.
    def inclusion_at_checkpoint(self, index: int, tree_size: int) -> CheckedProof:
        """An inclusion proof against the checkpoint of ``tree_size`` (NotFound if there is none), with the hash
        of the stored leaf, read together (one statement on PostgreSQL)."""
        with _proof_errors():
            return self._served(_ServedProof(self._nodes, tree_size, index=index))

    def consistency_at_checkpoints(self, first: int, second: int) -> CheckedProof:
        with _proof_errors():
            return self._served(_ServedProof(self._nodes, second, first=first))

    async def inclusion_at_checkpoint_on(self, reads: ProofReads, index: int, tree_size: int) -> CheckedProof | None:
        """``inclusion_at_checkpoint`` read by ``reads`` on the caller's event loop; None if it could not read."""
        with _proof_errors():
            return await self._served_on(reads, _ServedProof(self._nodes, tree_size, index=index))

    async def consistency_at_checkpoints_on(self, reads: ProofReads, first: int, second: int) -> CheckedProof | None:
        with _proof_errors():
            return await self._served_on(reads, _ServedProof(self._nodes, second, first=first))

    def _served(self, proof: _ServedProof) -> CheckedProof:
        while True:  # twice at most: see _ServedProof.finish
            with self.store.read_statements() as u:
                got = u.proof_material(proof.missing, **proof.asked)
            done = proof.finish(got, self._nodes)
            if done is not None:
                return done

    async def _served_on(self, reads: ProofReads, proof: _ServedProof) -> CheckedProof | None:
        while True:
            got = await reads.proof_material(proof.missing, **proof.asked)
            if got is None:
                return None
            done = proof.finish(got, self._nodes)
            if done is not None:
                return done

    # ---- reads -----------------------------------------------------------------------------------------------

    def checkpoint(self, tree_size: int | None = None) -> StoredCheckpoint | None:
        with self.store.read() as u:
            return u.checkpoint(tree_size)

    def cosigned_checkpoint(self) -> str | None:
        """The latest checkpoint with every witness cosignature received for it."""
        with self.store.read() as u:
            cp = u.checkpoint()
            return cp.note + "".join(u.cosignature_lines(cp.tree_size)) if cp else None

    def add_cosignatures(self, note: str) -> list[str]:
        """Store the cosignatures of known witnesses on one of our checkpoints; return the witnesses accepted."""
        text, sigs = split_note(note)
        body = Checkpoint.parse_body(text)
        with self.store.write() as u:
            stored = u.checkpoint(body.size)
            if stored is None or split_note(stored.note)[0] != text:
                raise E.NotFound(f"no checkpoint of this ledger has that body (tree size {body.size})")
            accepted = []
            for sig in sigs:
                key = self.config.witnesses.get(sig.name)
                if key is None or sig.name == self.config.origin:
                    continue
                try:  # this line itself: another good line by the same name must not carry a bad one in
                    timestamp = verify_cosignature(f"{text}\n{sig.line()}", sig.name, key)
                except CheckpointError as exc:
                    raise E.SignatureInvalid(f"the cosignature of witness {sig.name} does not verify: {exc}") from exc
                u.put_cosignature(body.size, sig.name, sig.line(), timestamp)
                if sig.name not in accepted:
                    accepted.append(sig.name)
        if not accepted:
            raise E.UnknownKey("the note carries no cosignature by a witness this ledger knows")
        return accepted

    def size(self) -> int:
        with self.store.read() as u:
            return u.head()[0]

    def entries(self, start: int, end: int, max_bytes: int | None = None) -> list[StoredEntry]:
        """Entries ``start`` to ``end - 1``, at most ``MAX_ENTRIES_PAGE`` of them; with ``max_bytes``, fewer when
        their leaves would hold more bytes than that (but at least one): read on from ``start + len(...)``."""
        if start < 0 or end < start:
            raise E.InvalidQuery(f"invalid range [{start}, {end})")
        end = min(end, start + MAX_ENTRIES_PAGE)
        with self.store.read() as u:
            if max_bytes is not None and end > start:
                end = u.page_end(start, end, max_bytes)
            return u.entries(start, end)


class ProofReads(Protocol):
    """Reads a proof's material on an event loop (``ledger.storage.async_scans.AsyncScans``)."""

    async def proof_material(self, ids: Sequence[NodeID], *, checkpoint: int = -1, first: int = -1,
                             index: int = -1) -> ProofMaterial | None: ...


class _ServedProof:
    """One served proof: an inclusion proof of ``index`` or a consistency proof from ``first``, against the
    checkpoint of ``size``; the nodes this process keeps, and those to read."""

    def __init__(self, nodes: NodeCache, size: int, *, index: int | None = None, first: int | None = None) -> None:
        self.size, self.index, self.first = size, index, first
        if index is not None:
            self.plan = inclusion_plan(index, size)
            self.asked = {"checkpoint": size, "index": index}
        else:
            assert first is not None
            self.plan = consistency_plan(first, size)
            self.asked = {"checkpoint": size, "first": first}
        self.known, self.missing = nodes.split(self.plan.ids)

    def finish(self, got: ProofMaterial, nodes: NodeCache) -> CheckedProof | None:
        """The proof from the kept nodes and those read. Made with kept nodes, it is checked against the root of
        the checkpoint read with them (and the stored leaf's hash): if it fails (the database was put back to an
        earlier state under this process, see ``ledger.node_cache``), the kept nodes are dropped and None asks
        for every node to be read, the proof then made from the database alone, as it always was, and checked
        by the client against the signed checkpoint."""
        nodes.learn(got.nodes)
        first_root = _root(got.first_root, self.first) if self.first is not None else None
        root = _root(got.root, self.size)
        hashes = self.plan.proof({**self.known, **got.nodes})
        if self.known:
            try:
                if self.index is not None:
                    if got.leaf_hash is None:
                        raise ProofError("no stored leaf")
                    verify_inclusion(got.leaf_hash, self.index, self.size, hashes, root)
                else:
                    assert self.first is not None and first_root is not None
                    verify_consistency(self.first, self.size, first_root, root, hashes)
            except ProofError:
                nodes.clear()
                self.known, self.missing = {}, list(self.plan.ids)
                return None
        return CheckedProof(hashes, root, first_root=first_root, leaf_hash=got.leaf_hash)


def _root(root: bytes | None, tree_size: int) -> bytes:
    if root is None:
        raise E.NotFound(f"no checkpoint for tree size {tree_size}")
    return root


def _within(got: ProofMaterial, tree_size: int) -> None:
    if tree_size > got.log_size:
        raise E.InvalidQuery(f"tree size {tree_size} is larger than the log ({got.log_size} entries)")


@contextlib.contextmanager
def _proof_errors() -> Iterator[None]:
    """Proof requests out of range are the caller's error; a missing stored node is the database's."""
    try:
        yield
    except TreeRangeError as exc:
        raise E.InvalidQuery(str(exc)) from exc
    except MissingNodeError as exc:
        raise E.IntegrityError(f"a Merkle node the proof needs is missing from the database: {exc}") from exc


class PublicReports:
    """Reports from citizens: the ledger key signs them, and personal details stay off the log."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def file(self, *, gtin: str, category: str, serial: str | None = None, lot: str | None = None,
             expiry: dt.date | None = None, region: str | None = None, details: str | None = None) -> Receipt:
        details_hash = None
        if details:
            salt = secrets.token_bytes(16)
            details_hash = hashlib.sha256(salt + details.encode()).hexdigest()
            with self.ledger.store.write() as u:
                put_personal_data(u, details_hash, salt, details, self.ledger.clock())
        body: dict[str, Any] = {"v": ev.SCHEMA_VERSION, "type": "report", "id": "public:" + secrets.token_hex(16),
                                "actor": ev.LEDGER_ACTOR, "time": ev.format_time(self.ledger.clock()),
                                "gtin": gtin, "category": category}
        optional = {"serial": serial, "lot": lot, "expiry": expiry.isoformat() if expiry else None,
                    "region": region, "details_hash": details_hash}
        body.update({k: v for k, v in optional.items() if v is not None})
        try:
            return self.ledger.submit(SignedEvent.create(body, self.ledger.config.ledger_key))
        except E.LedgerError:
            if details_hash:
                with self.ledger.store.write() as u:
                    erase_personal_data(u, details_hash)
            raise

    def erase(self, details_hash: str) -> bool:
        """Erase the personal details behind a report (the right to erasure); the log is untouched."""
        with self.ledger.store.write() as u:
            return erase_personal_data(u, details_hash)
