"""A group append's first reads on PostgreSQL, sent with its lock in one round trip.

Before its custody rules run, a group locks the log head and reads what its events name: which of their ids
the log already holds, their signers' registry rows, the shipments they receive, the packs they name (and
those the shipments list) and the holdings concerned. Sent one after the other, these were six to eight
round trips of a group's ~15 ms, and as many wake-ups of the sequencer; here they go out in one pipeline
after the lock (``BEGIN`` included), so every read runs under the lock, and come back at one sync.

The holdings a dispense concerns depend on its pack's lot, and those of a receipt on its shipment: the
holdings statement joins packs and shipments itself, and answers every key it evaluated (0 for none held),
so the caller can tell a key nobody holds from a key it did not ask about.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.identifiers import Channel, Role
from ledger.state import Actor, KeyRecord, Pack, Shipment
from ledger.storage.rows import ENTRY_COLUMNS, StoredEntry, entry_from_columns, pack_from_columns
from ledger.storage.tables import as_utc

HoldingKey = tuple[str, str, str]


@dataclass
class GroupWants:
    """What a group will ask for first."""

    event_ids: list[str] = field(default_factory=list)
    actor_ids: list[str] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)
    shipment_ids: list[str] = field(default_factory=list)
    packs: list[tuple[str, str]] = field(default_factory=list)  # (gtin, serial)
    holdings: list[HoldingKey] = field(default_factory=list)  # (actor, gtin, lot)
    holdings_by_pack: list[tuple[str, str, str]] = field(default_factory=list)  # (actor, gtin, serial): its lot's


@dataclass
class GroupReads:
    head: tuple[int, bytes, int]  # tree size, root, meta rows: as ``SqlUnit.lock_head_versioned``
    existing: dict[str, StoredEntry]  # the entries of the event ids asked that the log holds (replays)
    actors: dict[str, Actor]  # those found of the ids asked
    keys: dict[str, KeyRecord]
    shipments: dict[str, Shipment]
    packs: dict[tuple[str, str], Pack]  # found, of those asked and those the shipments asked list
    holdings: dict[HoldingKey, int]  # every key evaluated, 0 when nobody holds it


# the rewrite counter is in the locked row: a statement that waits for the lock re-reads that row, not a subquery
_LOCK = "SELECT tree_size, root_hash, rewrites FROM log_head WHERE id = 1 FOR UPDATE"
# whole entries: a replay is answered with its stored entry, without a read of its own
_IDS = f"SELECT {ENTRY_COLUMNS} FROM log_entries WHERE event_id = ANY(%(ids)s::varchar[])"
_ACTORS = ("SELECT id, name, role, region, city, gln, status, registered_index FROM actors "
           "WHERE id = ANY(%(ids)s::varchar[])")
_KEYS = ("SELECT key_id, actor, public_key, status, added_index, retired_index FROM actor_keys "
         "WHERE key_id = ANY(%(ids)s::varchar[])")
_SHIPMENTS = ("SELECT id, kind, gtin, lot, sender, recipient, quantity, serials, channel, status, shipped_index, "
              "shipped_at, closed_index FROM shipments WHERE id = ANY(%(ids)s::varchar[])")
# Packs are read in the one shape the planner always answers with primary-key probes, one statement per GTIN
# and per shipment received (a join of a union of wanted keys to packs was planned as a scan of the whole table,
# and a LATERAL lookup per key as a scan per key when the statistics were stale); the shipment's serials are
# read inside the statement (an InitPlan, evaluated once).
_PACKS = ("SELECT gtin, serial, lot, status, holder, dispensed_by, dispensed_at, dispensed_index FROM packs "
          "WHERE gtin = %(g)s AND serial = ANY(%(s)s::varchar[])")
_SHIPPED_PACKS = (
    "SELECT gtin, serial, lot, status, holder, dispensed_by, dispensed_at, dispensed_index FROM packs "
    "WHERE gtin = (SELECT gtin FROM shipments WHERE id = %(id)s) AND serial = ANY(ARRAY("
    "  SELECT json_array_elements_text(CAST(serials AS json)) FROM shipments WHERE id = %(id)s))")
_HOLDINGS = (
    "SELECT k.actor, k.gtin, k.lot, coalesce(h.quantity, 0) FROM ("
    "  SELECT * FROM unnest(%(a)s::varchar[], %(g)s::varchar[], %(l)s::varchar[]) AS w(actor, gtin, lot)"
    "  UNION SELECT w.actor, p.gtin, p.lot"
    "  FROM unnest(%(pa)s::varchar[], %(pg)s::varchar[], %(ps)s::varchar[]) AS w(actor, gtin, serial)"
    "  JOIN packs p ON p.gtin = w.gtin AND p.serial = w.serial"
    "  UNION SELECT s.sender, s.gtin, s.lot FROM shipments s WHERE s.id = ANY(%(ships)s::varchar[])"
    "  UNION SELECT s.recipient, s.gtin, s.lot FROM shipments s WHERE s.id = ANY(%(ships)s::varchar[])"
    ") k LEFT JOIN holdings h ON h.actor = k.actor AND h.gtin = k.gtin AND h.lot = k.lot")


def lock_and_read(raw: Any, wants: GroupWants) -> GroupReads:
    """Run the lock and the reads on ``raw`` (a psycopg connection, inside the caller's transaction) in one
    pipeline. The caller translates psycopg errors, as for any pipeline."""
    def columns(rows: Sequence[tuple[str, ...]], n: int) -> list[list[str]]:
        return [[r[i] for r in rows] for i in range(n)]

    serials_of: dict[str, list[str]] = {}
    for gtin, serial in wants.packs:
        serials_of.setdefault(gtin, []).append(serial)
    a, hg, hl = columns(wants.holdings, 3)
    pa, pg, ps = columns(wants.holdings_by_pack, 3)
    # A statement with nothing to look up is not sent: each costs the sequencer about 0.1 ms of CPU, and a group
    # of dispenses asks for no shipment, and, once the registry is carried from group to group, for no actor or
    # key either.
    statements: list[tuple[str, str, dict[str, Any] | None]] = [("lock", _LOCK, None)]
    if wants.event_ids:
        statements.append(("ids", _IDS, {"ids": wants.event_ids}))
    if wants.actor_ids:
        statements.append(("actors", _ACTORS, {"ids": wants.actor_ids}))
    if wants.key_ids:
        statements.append(("keys", _KEYS, {"ids": wants.key_ids}))
    if wants.shipment_ids:
        statements.append(("shipments", _SHIPMENTS, {"ids": wants.shipment_ids}))
    if a or pa or wants.shipment_ids:
        statements.append(("holdings", _HOLDINGS, {"a": a, "g": hg, "l": hl, "pa": pa, "pg": pg, "ps": ps,
                                                   "ships": wants.shipment_ids}))
    statements += [("packs", _PACKS, {"g": gtin, "s": serials}) for gtin, serials in serials_of.items()]
    statements += [("packs", _SHIPPED_PACKS, {"id": shipment}) for shipment in wants.shipment_ids]
    cursors = []
    with raw.pipeline():
        for _, sql, params in statements:
            cur = raw.cursor()
            cur.execute(sql, params, prepare=True)
            cursors.append(cur)
    results: dict[str, list[Any]] = {}
    for (name, _, _), cur in zip(statements, cursors, strict=True):
        results.setdefault(name, []).extend(cur.fetchall())
        cur.close()
    lock = results["lock"]
    ids, actors, keys, shipments, holdings, packs = (results.get(name, []) for name in (
        "ids", "actors", "keys", "shipments", "holdings", "packs"))
    size, root, metas = lock[0]
    return GroupReads(
        head=(int(size), bytes(root), int(metas)),
        existing={r[5]: entry_from_columns(r) for r in ids},
        actors={r[0]: Actor(r[0], r[1], Role(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in actors},
        keys={r[0]: KeyRecord(*r) for r in keys},
        shipments={r[0]: _shipment(r) for r in shipments},
        packs={(r[0], r[1]): pack_from_columns(r) for r in packs},
        holdings={(r[0], r[1], r[2]): int(r[3]) for r in holdings},
    )


def _shipment(r: tuple[Any, ...]) -> Shipment:
    serials = tuple(json.loads(r[7])) if r[7] is not None else None
    return Shipment(r[0], r[1], r[2], r[3], r[4], r[5], r[6], serials, Channel(r[8]) if r[8] else None, r[9], r[10],
                    as_utc(r[11]), r[12])
