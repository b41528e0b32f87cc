"""Response models (the OpenAPI contract) and their construction from ledger views."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ledger.entry import Entry, Receipt
from ledger.provenance import Step
from ledger.queries import BatchView, History, PackReport, ProvedEntry
from ledger.state import Actor, AlertRecord, KeyRecord, Shipment
from ledger.storage.rows import StoredEntry

HEX = r"^[0-9a-f]{64}$"


class ReceiptOut(BaseModel):
    index: int = Field(description="the entry's position in the log, from 0")
    entry_hash: str = Field(pattern=HEX, description="RFC 9162 leaf hash SHA-256(0x00 || entry), hex")
    chain: str = Field(description="the per-batch (or per-actor) hash chain the entry belongs to")
    prev: str | None = Field(description="hash of the previous entry of the same chain, null for the first")
    received: str = Field(description="when the sequencer received the event (RFC 3339 UTC)")
    event_id: str
    tree_size: int = Field(description="size of the tree the proof and checkpoint are for")
    root_hash: str = Field(pattern=HEX)
    inclusion_proof: list[str] = Field(description="RFC 9162 inclusion proof, hex hashes, leaf to root")
    checkpoint: str = Field(description="C2SP signed checkpoint note for tree_size")
    replayed: bool = Field(description="true when the same signed event had already been recorded")

    @classmethod
    def of(cls, r: Receipt) -> ReceiptOut:
        return cls(**r.to_json())

    model_config = {"json_schema_extra": {"examples": [{
        "index": 42, "entry_hash": "5f" * 32, "chain": "batch/06111234567895/L2026A", "prev": "a1" * 32,
        "received": "2026-11-22T10:15:00.123456Z", "event_id": "0b6c...", "tree_size": 43, "root_hash": "c3" * 32,
        "inclusion_proof": ["9e" * 32], "checkpoint": "athar.local/ledger\n43\nw5Nd...=\n\n— athar.local/ledger ...\n",
        "replayed": False}]}}


class EntryOut(BaseModel):
    index: int
    entry_hash: str = Field(pattern=HEX)
    entry: dict[str, Any] = Field(description="the entry's JSON; its RFC 8785 canonical form is the Merkle leaf")
    inclusion_proof: list[str] | None = None

    @classmethod
    def of(cls, e: StoredEntry, proof: list[bytes] | None = None) -> EntryOut:
        return cls(index=e.index, entry_hash=e.entry_hash.hex(), entry=Entry.from_leaf(e.leaf).to_json(),
                   inclusion_proof=[h.hex() for h in proof] if proof is not None else None)

    @classmethod
    def proved(cls, p: ProvedEntry) -> EntryOut:
        return cls.of(p.entry, p.proof)


class EntriesOut(BaseModel):
    start: int
    entries: list[EntryOut]


class ProofOut(BaseModel):
    tree_size: int
    root_hash: str = Field(pattern=HEX)
    hashes: list[str]
    leaf_index: int | None = None
    leaf_hash: str | None = None
    first: int | None = None
    first_root_hash: str | None = None


class KeyOut(BaseModel):
    key_id: str
    public_key: str = Field(description="base64 Ed25519 public key")
    status: str
    added_index: int
    retired_index: int | None

    @classmethod
    def of(cls, k: KeyRecord) -> KeyOut:
        return cls(key_id=k.key_id, public_key=k.public_key, status=k.status, added_index=k.added_index,
                   retired_index=k.retired_index)


class ActorOut(BaseModel):
    id: str
    name: str
    role: str
    region: str
    city: str | None
    gln: str | None
    status: str
    registered_index: int
    keys: list[KeyOut]

    @classmethod
    def of(cls, a: Actor, keys: list[KeyRecord]) -> ActorOut:
        return cls(id=a.id, name=a.name, role=a.role.value, region=a.region, city=a.city, gln=a.gln,
                   status=a.status, registered_index=a.registered_index, keys=[KeyOut.of(k) for k in keys])


class ShipmentOut(BaseModel):
    id: str
    kind: str
    sender: str
    recipient: str
    quantity: int
    by_serial: bool
    channel: str | None
    status: str
    shipped_index: int
    shipped_at: dt.datetime
    closed_index: int | None

    @classmethod
    def of(cls, s: Shipment) -> ShipmentOut:
        return cls(id=s.id, kind=s.kind, sender=s.sender, recipient=s.recipient, quantity=s.quantity,
                   by_serial=s.serials is not None, channel=s.channel.value if s.channel else None, status=s.status,
                   shipped_index=s.shipped_index, shipped_at=s.shipped_at, closed_index=s.closed_index)


class BatchOut(BaseModel):
    gtin: str
    lot: str
    expiry: dt.date
    product: str
    manufacturer: str
    quantity: int
    channel: str
    status: str
    status_reason: str | None
    commissioned_index: int
    commissioned_at: dt.datetime
    holdings: dict[str, int] = Field(description="packs held per actor (in stock, not in transit)")
    packs: dict[str, int] = Field(description="packs per status: active, in_transit, dispensed, destroyed")
    shipments: list[ShipmentOut]

    @classmethod
    def of(cls, v: BatchView) -> BatchOut:
        b = v.batch
        return cls(gtin=b.gtin, lot=b.lot, expiry=b.expiry, product=b.product, manufacturer=b.manufacturer,
                   quantity=b.quantity, channel=b.channel.value, status=b.status, status_reason=b.status_reason,
                   commissioned_index=b.commissioned_index, commissioned_at=b.commissioned_at, holdings=v.holdings,
                   packs=v.pack_counts, shipments=[ShipmentOut.of(s) for s in v.shipments])


class HistoryOut(BaseModel):
    checkpoint: str = Field(description="signed checkpoint every proof below is against")
    tree_size: int
    root_hash: str
    entries: list[EntryOut]

    @classmethod
    def of(cls, h: History) -> HistoryOut:
        return cls(checkpoint=h.checkpoint.note, tree_size=h.checkpoint.tree_size,
                   root_hash=h.checkpoint.root_hash.hex(), entries=[EntryOut.proved(p) for p in h.entries])


class StepOut(BaseModel):
    index: int
    type: str
    actor: str
    actor_name: str
    role: str
    region: str
    time: dt.datetime

    @classmethod
    def of(cls, s: Step) -> StepOut:
        return cls(index=s.index, type=s.type, actor=s.actor, actor_name=s.actor_name, role=s.role,
                   region=s.region, time=s.time)


class PackOut(BaseModel):
    gtin: str
    serial: str
    verdict: str = Field(description="AUTHENTIC, UNKNOWN, MISMATCH, ALREADY_DISPENSED, RECALLED, QUARANTINED, "
                                     "EXPIRED, NOT_IN_CUSTODY")
    reason: str
    lot: str | None
    expiry: dt.date | None
    product: str | None
    manufacturer: str | None
    provenance: list[StepOut] = Field(description="who handled the pack, where and when (no volumes)")

    @classmethod
    def of(cls, r: PackReport) -> PackOut:
        b = r.batch
        return cls(gtin=r.gtin, serial=r.serial, verdict=r.finding.verdict.value, reason=r.finding.reason,
                   lot=b.lot if b else None, expiry=b.expiry if b else None, product=b.product if b else None,
                   manufacturer=b.manufacturer if b else None, provenance=[StepOut.of(s) for s in r.steps])


class _StatementPack(BaseModel):
    gtin: str
    serial: str
    lot: str
    status: str = Field(description="active, in_transit, dispensed or destroyed")
    dispensed_by: str | None
    dispensed_at: str | None
    dispensed_index: int | None


class _StatementBatch(BaseModel):
    gtin: str
    lot: str
    expiry: str
    product: str
    manufacturer: str
    status: str = Field(description="active, recalled or quarantined")
    status_reason: str | None = Field(description="the recall's or quarantine's reason; null for an active batch")


class _StatementStep(BaseModel):
    index: int
    type: str
    actor: str
    time: str
    hash: str = Field(description="the entry's RFC 9162 leaf hash, base64")


class _StatementActor(BaseModel):
    name: str
    role: str
    region: str


class _StatementSigner(BaseModel):
    key_id: str
    public_key: str = Field(description="base64 Ed25519 public key, registered for the latest step's actor")


class PackStatementOut(BaseModel):
    format: str
    tree_size: int
    root_hash: str = Field(description="base64, as in the checkpoint")
    created: str
    pack: _StatementPack
    batch: _StatementBatch
    steps: list[_StatementStep] = Field(description="the pack's public provenance, in log order")
    actors: dict[str, _StatementActor]
    signer: _StatementSigner | None


class _PackBundleAnchor(BaseModel):
    index: int = Field(description="the latest step's entry index")
    proof: str = Field(description="its RFC 9162 inclusion proof at the checkpoint: the hashes concatenated, base64")
    entry: dict[str, Any] | None = Field(description="that entry, for a dispense, a recall or a quarantine")


class PackBundleOut(BaseModel):
    """``athar-pack-bundle/1`` (docs/protocol.md, "One-pack bundles"; verified by ``ledger.pack_bundle``)."""

    format: str
    checkpoint: str = Field(description="the C2SP signed checkpoint note")
    statement: PackStatementOut
    signature: str = Field(description="the ledger key's Ed25519 signature of the statement, purpose "
                                       "pack-statement, base64")
    anchor: _PackBundleAnchor


def pack_json(r: PackReport) -> dict[str, Any]:
    """``PackOut.of(r).model_dump(mode="json")`` without building the models: a scan is the busiest request, and
    validating and dumping its models cost about a tenth of its CPU (a property test keeps the two equal)."""
    b = r.batch
    return {"gtin": r.gtin, "serial": r.serial, "verdict": r.finding.verdict.value, "reason": r.finding.reason,
            "lot": b.lot if b else None, "expiry": b.expiry.isoformat() if b else None,
            "product": b.product if b else None, "manufacturer": b.manufacturer if b else None,
            "provenance": [{"index": s.index, "type": s.type, "actor": s.actor, "actor_name": s.actor_name,
                            "role": s.role, "region": s.region, "time": _json_time(s.time)} for s in r.steps]}


def _json_time(when: dt.datetime) -> str:
    """A datetime as pydantic writes it in JSON (UTC as ``Z``)."""
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class AlertOut(BaseModel):
    id: str
    kind: str
    message: str
    gtin: str | None
    lot: str | None
    serial: str | None
    suspect: str = Field(description="the actor the alert is about; for a report (kind 'report'), the actor who "
                                     "filed it, 'ledger' for an anonymous public report: not a suspect")
    index: int
    raised_at: dt.datetime
    status: str
    cause: str | None = Field(default=None, description="the most likely explanation")
    outcome: str | None = Field(default=None, description="when closed: confirmed, false_alarm, inconclusive")
    finding: str | None = None

    @classmethod
    def of(cls, a: AlertRecord) -> AlertOut:
        return cls(id=a.id, kind=a.kind, message=a.message, gtin=a.gtin, lot=a.lot, serial=a.serial,
                   suspect=a.suspect, index=a.index, raised_at=a.raised_at, status=a.status, cause=a.cause,
                   outcome=a.outcome, finding=a.finding)


class PublicReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a report without it

    gtin: str = Field(min_length=8, max_length=14, pattern=r"^[0-9]+$")
    serial: str | None = Field(default=None, max_length=20)
    lot: str | None = Field(default=None, max_length=20)
    # as printed on the pack (GS1 YYMMDD) or ISO; a plain date field would also take a number as a Unix time
    expiry: str | None = Field(default=None, max_length=10, description="YYYY-MM-DD or GS1 YYMMDD")
    category: str = Field(description="suspected_falsified, damaged_pack, quality_defect, diversion, other")
    region: str | None = Field(default=None, max_length=100)
    details: str | None = Field(default=None, max_length=4000,
                                description="free text and contact details; kept off the log, erasable")


class HealthOut(BaseModel):
    status: str
    tree_size: int | None = None
    detail: str | None = None
