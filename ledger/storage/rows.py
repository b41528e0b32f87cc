"""Mapping between projection records and table rows, shared by the SQL adapter and the rebuild check."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger import errors as E
from ledger.identifiers import Channel, Role
from ledger.state import Actor, AlertRecord, Batch, KeyRecord, Pack, Shipment
from ledger.storage.tables import as_utc


@dataclass(frozen=True)
class StoredEntry:
    index: int
    entry_hash: bytes
    leaf: bytes
    chain: str
    prev: bytes | None
    event_id: str
    event_type: str
    actor: str
    gtin: str | None
    lot: str | None
    received_at: dt.datetime
    serial: str | None = None


#: the columns ``entry_from_columns`` takes, in its order
ENTRY_COLUMNS = "idx, entry_hash, leaf, chain, prev, event_id, event_type, actor, gtin, lot, received_at, serial"


def entry_from_columns(r: Sequence[Any]) -> StoredEntry:
    """A log entry from an untyped row of ``ENTRY_COLUMNS`` (taken by position, half the cost of typed rows)."""
    return StoredEntry(r[0], blob(r[1], "entry", r[0], "entry_hash"), blob(r[2], "entry", r[0], "leaf"), r[3],
                       None if r[4] is None else blob(r[4], "entry", r[0], "prev"), r[5], r[6], r[7], r[8], r[9],
                       as_utc(r[10]), r[11])


# SQLite stores any value in any column: a cell rewritten as text (or a note as a blob) reaches the readers as the
# wrong Python type, which would fail far from the row as an AttributeError. Rows are checked as they are read.

def blob(value: Any, kind: str, key: int, column: str) -> bytes:
    """A hash or leaf column's value as bytes, or an integrity error naming the row (``kind`` ``key``)."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):  # what some drivers give for binary columns
        return bytes(value)
    raise wrong_type(kind, key, column, value, "bytes")


def text(value: Any, kind: str, key: int, column: str) -> str:
    """A text column's value, or an integrity error naming the row (``kind`` ``key``)."""
    if type(value) is str:
        return value
    raise wrong_type(kind, key, column, value, "text")


def wrong_type(kind: str, key: int, column: str, value: Any, want: str) -> E.IntegrityError:
    # a checkpoint is named by the entry that completes it, as the audit names its failures
    index = key - 1 if kind == "checkpoint of tree size" else key
    return E.IntegrityError(f"{kind} {key}: its stored {column} is {type(value).__name__}, not {want}: the row was "
                            "altered in the database", index=index if index >= 0 else None)


def audit_row(r: Sequence[Any]) -> tuple[int, bytes, bytes, tuple[Any, ...]]:
    """An ``audit_rows`` row (index, entry hash, leaf, then the indexed columns from chain and prev on), checked."""
    h, leaf, prev = r[1], r[2], r[4]
    # the audit's hot path: three type checks, a call only for a row that fails them
    if type(h) is not bytes or type(leaf) is not bytes or (prev is not None and type(prev) is not bytes):
        h, leaf = blob(h, "entry", r[0], "entry_hash"), blob(leaf, "entry", r[0], "leaf")
        prev = None if prev is None else blob(prev, "entry", r[0], "prev")
        return r[0], h, leaf, (r[3], prev, *r[5:])
    return r[0], h, leaf, tuple(r[3:])


def actor_from(row: Any) -> Actor:
    return Actor(row.id, row.name, Role(row.role), row.region, row.city, row.gln, row.status, row.registered_index)


def key_from(row: Any) -> KeyRecord:
    return KeyRecord(row.key_id, row.actor, row.public_key, row.status, row.added_index, row.retired_index)


def batch_from(row: Any) -> Batch:
    return Batch(row.gtin, row.lot, row.expiry, row.product, row.manufacturer, row.quantity, Channel(row.channel),
                 row.status, row.status_reason, row.status_index, row.commissioned_index, row.commissioned_at)


def pack_from(row: Any) -> Pack:
    return Pack(row.gtin, row.serial, row.lot, row.status, row.holder, row.dispensed_by, row.dispensed_at,
                row.dispensed_index)


def pack_from_columns(r: Sequence[Any]) -> Pack:
    """A pack from the ``packs`` table's columns in order, as the driver gives them (timestamps naive UTC): rows
    taken by position, on the busiest reads."""
    return Pack(r[0], r[1], r[2], r[3], r[4], r[5], as_utc(r[6]) if r[6] is not None else None, r[7])


def shipment_from(row: Any) -> Shipment:
    serials = tuple(json.loads(row.serials)) if row.serials is not None else None
    return Shipment(row.id, row.kind, row.gtin, row.lot, row.sender, row.recipient, row.quantity, serials,
                    Channel(row.channel) if row.channel else None, row.status, row.shipped_index, row.shipped_at,
                    row.closed_index)


def alert_from(row: Any) -> AlertRecord:
    return AlertRecord(row.id, row.kind, row.message, row.gtin, row.lot, row.serial, row.suspect, row.idx,
                       row.raised_at, row.status, row.cause, row.outcome, row.finding, row.updated_index)


def actor_row(a: Actor) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "role": a.role.value, "region": a.region, "city": a.city, "gln": a.gln,
            "status": a.status, "registered_index": a.registered_index}


def key_row(k: KeyRecord) -> dict[str, Any]:
    return {"key_id": k.key_id, "actor": k.actor, "public_key": k.public_key, "status": k.status,
            "added_index": k.added_index, "retired_index": k.retired_index}


def batch_row(b: Batch) -> dict[str, Any]:
    return {"gtin": b.gtin, "lot": b.lot, "expiry": b.expiry, "product": b.product, "manufacturer": b.manufacturer,
            "quantity": b.quantity, "channel": b.channel.value, "status": b.status, "status_reason": b.status_reason,
            "status_index": b.status_index, "commissioned_index": b.commissioned_index,
            "commissioned_at": b.commissioned_at}


def pack_row(p: Pack) -> dict[str, Any]:
    return {"gtin": p.gtin, "serial": p.serial, "lot": p.lot, "status": p.status, "holder": p.holder,
            "dispensed_by": p.dispensed_by, "dispensed_at": p.dispensed_at, "dispensed_index": p.dispensed_index}


def shipment_row(s: Shipment) -> dict[str, Any]:
    return {"id": s.id, "kind": s.kind, "gtin": s.gtin, "lot": s.lot, "sender": s.sender, "recipient": s.recipient,
            "quantity": s.quantity, "serials": json.dumps(list(s.serials)) if s.serials is not None else None,
            "channel": s.channel.value if s.channel else None, "status": s.status,
            "shipped_index": s.shipped_index, "shipped_at": s.shipped_at, "closed_index": s.closed_index}


def alert_row(a: AlertRecord) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "message": a.message, "gtin": a.gtin, "lot": a.lot, "serial": a.serial,
            "suspect": a.suspect, "idx": a.index, "raised_at": a.raised_at, "status": a.status, "cause": a.cause,
            "outcome": a.outcome, "finding": a.finding, "updated_index": a.updated_index}
