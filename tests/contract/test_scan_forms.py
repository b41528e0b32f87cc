"""PostgreSQL reads a pack scan with its own statement (``ledger.storage.sql._pg_scan``: the pack's row and the
log head joined once, the branches ``LATERAL``), SQLite with ``_pack_scan`` (each branch reading the lot and the
log size again). On real PostgreSQL, over random histories (shipments by serial and by quantity, receipts,
refusals, returns, dispenses, undos, destructions, quarantines, recalls), both forms and the batched form must
return the same rows for every pack, for a pack never seen, and for a serial of another product."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.builder import EventBuilder
from ledger.errors import LedgerError
from ledger.provenance import BATCH_WIDE, SINGLE_PACK
from ledger.storage.sql import _pack_scan, pack_scan_sql, pack_scans_sql
from signing import KeyPair
from tests.contract.test_group_append import LOTS, SERIALS, Side, random_events
from tests.support import ACTORS, GTIN, GTIN_B, Clock

KINDS = (tuple(sorted(SINGLE_PACK)), tuple(sorted(BATCH_WIDE)))


def _rows(found: Any) -> Counter[tuple[Any, ...]]:
    """The rows as a multiset, timestamps naive UTC as the driver reads them (SQLAlchemy's column type makes
    them aware; ``pack_scan_rows`` takes both)."""
    def plain(v: Any) -> Any:
        return v.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(v, dt.datetime) and v.tzinfo else v
    return Counter(tuple(plain(v) for v in r) for r in found)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_postgresql_scan_forms_return_the_rows_of_the_portable_form(tmp_path: Path, postgres_url: str,
                                                                     seed: int) -> None:
    keys = {actor: KeyPair.generate() for actor in ACTORS}
    side = Side(tmp_path / "p", postgres_url, keys)
    try:
        clock = Clock()
        side.commission_lots(keys, clock)

        def as_(actor: str) -> EventBuilder:
            return EventBuilder(actor, keys[actor], clock)
        a, b = SERIALS[LOTS[0]][:2]
        by_serial = as_("maphar").ship(GTIN, LOTS[0], "ph-rabat", serials=[a, b])
        by_quantity = as_("maphar").ship(GTIN, LOTS[1], "dist-north", quantity=2)
        # every branch reached, whatever the random events after it: a pack dispensed, undone and dispensed
        # again, stock moved by quantity, a batch-wide event
        pharmacy = as_("ph-rabat")
        prelude = side.ledger.append([by_serial, pharmacy.receive(by_serial.event_id), pharmacy.dispense(GTIN, a),
                                      pharmacy.undo_dispense(GTIN, a, "wrong patient"), pharmacy.dispense(GTIN, a),
                                      by_quantity, as_("regulator").quarantine(GTIN, LOTS[1], "under investigation")])
        assert not [r for r in prelude if isinstance(r, LedgerError)], prelude
        side.ledger.append(random_events(random.Random(seed), keys, clock, 150))
        packs = [(GTIN, s) for lot in LOTS for s in SERIALS[lot]]
        packs += [(GTIN, "NEVER-SEEN"), (GTIN_B, a)]  # a serial of another product
        portable: dict[tuple[str, str], Counter[tuple[Any, ...]]] = {}
        with side.db.reader.connect() as conn:
            for gtin, serial in packs:
                portable[(gtin, serial)] = _rows(conn.execute(_pack_scan(*KINDS), {"gtin": gtin, "serial": serial}))
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, psycopg.Connection)
            with psycopg.RawCursor(raw) as cur:
                one = pack_scan_sql(conn.dialect, *KINDS)
                single = {(g, s): _rows(cur.execute(one, (g, s)).fetchall()) for g, s in packs}
                batched: dict[tuple[str, str], Counter[tuple[Any, ...]]] = {p: Counter() for p in packs}
                arrays = ([g for g, _ in packs], [s for _, s in packs])
                for n, *row in cur.execute(pack_scans_sql(conn.dialect, *KINDS), arrays).fetchall():
                    batched[packs[n - 1]][tuple(row)] += 1
        assert single == portable
        assert batched == portable
        # the histories reach every branch: trails of several steps, dispenses, quantity moves, batch-wide events
        kinds = Counter(row[-5] for rows in portable.values() for row in rows)
        assert {"commission", "ship", "dispense", "undo_dispense", "quarantine"} <= set(kinds), kinds
        assert sum(portable[(GTIN, a)].values()) >= 6  # its view, commission, shipment, dispense, undo, dispense
        assert any(row[-2] == by_quantity.event_id for row in portable[(GTIN, SERIALS[LOTS[1]][0])])  # by quantity
        assert not portable[(GTIN, "NEVER-SEEN")] and not portable[(GTIN_B, a)]
    finally:
        side.db.dispose()
