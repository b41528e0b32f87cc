"""A replay state whose big tables live in a SQLite database: packs, shipments, alerts and holdings.

``MemoryState`` holds every pack of the log in memory, about 300 bytes each: a year of Morocco's pharmacies (about
451 million packs) would take over 100 GB. Here those records live in the database; what changed since the last
flush waits in memory (at most ``flush_every`` records), and reads look there first. Actors, keys and batches
stay in memory: there are few of them, and every entry's signature check reads them.

The caller owns the connection and its transaction: an audit keeps the whole replay in one transaction and
commits it only when the log verified (``ledger.audit_state``).
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import sqlite3
from collections.abc import Iterable, Iterator
from typing import TypeVar

from ledger.record_codec import decode_all, encode_all
from ledger.replay import MemoryState
from ledger.state import (
    AddPacks,
    AdjustHolding,
    AlertRecord,
    Change,
    Pack,
    PoolPacks,
    PutAlert,
    PutPacks,
    PutShipment,
    Shipment,
)

SCHEMA = (
    # a pack's fields as columns (most of the state is packs: no JSON to encode and parse for them)
    "CREATE TABLE IF NOT EXISTS packs (gtin TEXT NOT NULL, serial TEXT NOT NULL, lot TEXT NOT NULL, "
    "status TEXT NOT NULL, holder TEXT, dispensed_by TEXT, dispensed_at TEXT, dispensed_index INTEGER, "
    "PRIMARY KEY (gtin, serial)) WITHOUT ROWID",
    # a movement by quantity of a batch pools its sender's active packs of it
    "CREATE INDEX IF NOT EXISTS packs_pool ON packs (gtin, lot, holder) WHERE status = 'active'",
    "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, id TEXT NOT NULL, record TEXT NOT NULL, "
    "PRIMARY KEY (kind, id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS holdings (actor TEXT NOT NULL, gtin TEXT NOT NULL, lot TEXT NOT NULL, "
    "n INTEGER NOT NULL, PRIMARY KEY (actor, gtin, lot)) WITHOUT ROWID",
)
R = TypeVar("R", Shipment, AlertRecord)
#: how many serials one statement asks for (SQLite's default limit on parameters is 32,766 from 3.32)
CHUNK = 500


class DiskState(MemoryState):
    """The custody rules' state on a SQLite connection (see the module's docstring). Its ``packs_``,
    ``shipments``, ``alerts`` and ``holdings`` dictionaries stay empty: read them through the reader methods."""

    def __init__(self, db: sqlite3.Connection, flush_every: int = 200_000) -> None:
        super().__init__()
        self.db, self.flush_every = db, flush_every
        for statement in SCHEMA:
            db.execute(statement)
        self._packs: dict[tuple[str, str], Pack] = {}
        self._shipments: dict[str, Shipment] = {}
        self._alerts: dict[str, AlertRecord] = {}
        self._holdings: dict[tuple[str, str, str], int] = {}

    # ---- reads: what changed since the last flush first

    def pack(self, gtin: str, serial: str) -> Pack | None:
        found = self._packs.get((gtin, serial))
        if found is not None:
            return found
        row = self.db.execute(f"SELECT {PACK_COLUMNS} FROM packs WHERE gtin = ? AND serial = ?",
                              (gtin, serial)).fetchone()
        return _pack(row) if row else None

    def packs(self, gtin: str, serials: tuple[str, ...]) -> dict[str, Pack]:
        found = {s: p for s in serials if (p := self._packs.get((gtin, s))) is not None}
        rest = [s for s in dict.fromkeys(serials) if s not in found]
        for i in range(0, len(rest), CHUNK):
            chunk = rest[i:i + CHUNK]
            rows = self.db.execute(f"SELECT {PACK_COLUMNS} FROM packs WHERE gtin = ? AND serial IN "
                                   f"({','.join('?' * len(chunk))})", (gtin, *chunk))
            found.update((row[1], _pack(row)) for row in rows)
        return {s: found[s] for s in serials if s in found}

    def holding(self, actor: str, gtin: str, lot: str) -> int:
        found = self._holdings.get((actor, gtin, lot))
        if found is not None:
            return found
        row = self.db.execute("SELECT n FROM holdings WHERE actor = ? AND gtin = ? AND lot = ?",
                              (actor, gtin, lot)).fetchone()
        return int(row[0]) if row else 0

    def shipment(self, shipment_id: str) -> Shipment | None:
        return self._shipments.get(shipment_id) or self._record(Shipment, shipment_id)

    def alert(self, alert_id: str) -> AlertRecord | None:
        return self._alerts.get(alert_id) or self._record(AlertRecord, alert_id)

    def count(self, kind: str) -> int:
        """How many packs, shipments or alerts the state holds (flushes first)."""
        self.flush()
        if kind == "packs":
            return int(self.db.execute("SELECT count(*) FROM packs").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM records WHERE kind = ?", (kind,)).fetchone()[0])

    # ---- changes

    def apply(self, changes: Iterable[Change]) -> None:
        small: list[Change] = []
        for change in changes:
            match change:
                case AddPacks(gtin, lot, serials, holder):
                    for s in serials:
                        self._packs[(gtin, s)] = Pack(gtin, s, lot, "active", holder, None, None, None)
                case PutPacks(packs):
                    for p in packs:
                        self._packs[(p.gtin, p.serial)] = p
                case PoolPacks(gtin, lot, holder):
                    self._pool(gtin, lot, holder)
                case AdjustHolding(actor, gtin, lot, delta):
                    self._holdings[(actor, gtin, lot)] = self.holding(actor, gtin, lot) + delta
                case PutShipment(shipment):
                    self._shipments[shipment.id] = shipment
                case PutAlert(alert):
                    self._alerts[alert.id] = alert
                case _:  # actors, keys, batches: in memory
                    small.append(change)
        if small:
            super().apply(small)
        if len(self._packs) + len(self._shipments) + len(self._alerts) + len(self._holdings) > self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write what changed to the database (in the caller's transaction)."""
        if self._packs:
            self.db.executemany("INSERT OR REPLACE INTO packs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                map(_pack_row, self._packs.values()))
            self._packs.clear()
        for kind, cls, records in (("shipment", Shipment, self._shipments), ("alert", AlertRecord, self._alerts)):
            if records:
                self.db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (
                    (kind, key, _json(r)) for key, r in zip(records, encode_all(cls, records.values()),
                                                          strict=True)))
                records.clear()
        if self._holdings:
            self.db.executemany("INSERT OR REPLACE INTO holdings VALUES (?, ?, ?, ?)",
                                ((*slot, n) for slot, n in self._holdings.items()))
            self._holdings.clear()

    def to_memory(self) -> MemoryState:
        """Everything this state holds, as a ``MemoryState`` (which holds every pack in memory: for comparisons)."""
        self.flush()
        copy = MemoryState(actors=dict(self.actors), keys=dict(self.keys), batches=dict(self.batches))
        copy.apply([PutPacks(tuple(self._all_packs()))])
        for kind, cls, into in (("shipment", Shipment, copy.shipments), ("alert", AlertRecord, copy.alerts)):
            rows = self.db.execute("SELECT record FROM records WHERE kind = ? ORDER BY id", (kind,))
            into.update((r.id, r) for r in decode_all(cls, (json.loads(record) for (record,) in rows)))
        copy.holdings = {(a, g, lot): int(n) for a, g, lot, n in self.db.execute("SELECT * FROM holdings")}
        return copy

    def _all_packs(self) -> Iterator[Pack]:
        for row in self.db.execute(f"SELECT {PACK_COLUMNS} FROM packs ORDER BY gtin, serial"):
            yield _pack(row)

    def _pool(self, gtin: str, lot: str, holder: str | None) -> None:
        self.flush()  # the pool is read from the table: the packs changed since must be in it
        rows = self.db.execute(f"SELECT {PACK_COLUMNS} FROM packs WHERE gtin = ? AND lot = ? AND holder IS ? "
                               "AND status = 'active'", (gtin, lot, holder)).fetchall()
        for row in rows:
            p = _pack(row).moved("active", None)
            self._packs[(p.gtin, p.serial)] = p

    def _record(self, cls: type[R], key: str) -> R | None:
        kind = "shipment" if cls is Shipment else "alert"
        row = self.db.execute("SELECT record FROM records WHERE kind = ? AND id = ?", (kind, key)).fetchone()
        return decode_all(cls, [json.loads(row[0])])[0] if row else None  # type: ignore[no-any-return]


def _json(row: list[object]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


PACK_COLUMNS = "gtin, serial, lot, status, holder, dispensed_by, dispensed_at, dispensed_index"
_PACK_FIELDS = tuple(PACK_COLUMNS.split(", "))
_pack_values = operator.attrgetter(*_PACK_FIELDS)


def _pack_row(pack: Pack) -> tuple[object, ...]:
    values = _pack_values(pack)
    at = values[6]
    return values if at is None else (*values[:6], at.isoformat(), values[7])


def _pack(row: tuple[object, ...]) -> Pack:
    fields = dict(zip(_PACK_FIELDS, row, strict=True))
    if fields["dispensed_at"] is not None:
        fields["dispensed_at"] = dt.datetime.fromisoformat(str(fields["dispensed_at"]))
    pack = object.__new__(Pack)  # as Pack.moved builds one: the fields at once
    object.__setattr__(pack, "__dict__", fields)
    return pack
