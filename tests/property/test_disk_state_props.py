"""DiskState (the replay state an auditor keeps in its state file) answers every read as MemoryState does, after
any history of pack changes, pools, holding adjustments and shipments, whether its changes wait in memory or were
flushed to the database (every change, every few, or never before the end)."""

from __future__ import annotations

import datetime as dt
import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.replay import MemoryState
from ledger.replay_disk import DiskState
from ledger.state import AdjustHolding, Change, PutShipment, Shipment
from tests.property.test_memory_state_props import GTINS, HOLDERS, LOTS, histories

WHEN = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


@st.composite
def mixed_histories(draw: st.DrawFn) -> list[Change]:
    changes = draw(histories())
    for i in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(changes)))
        if draw(st.booleans()):
            change: Change = AdjustHolding(draw(st.sampled_from(HOLDERS[:3])), draw(st.sampled_from(GTINS)),
                                           draw(st.sampled_from(LOTS)), draw(st.integers(-3, 5)))
        else:
            change = PutShipment(Shipment(f"sh-{draw(st.integers(0, 3))}", "ship", GTINS[0], LOTS[0], "maphar",
                                          "dist-north", i + 1, draw(st.none() | st.just(("S1", "S2"))), None,
                                          draw(st.sampled_from(("in_transit", "received"))), i, WHEN, None))
        changes.insert(at, change)
    return changes


@settings(max_examples=200, deadline=None)
@given(mixed_histories(), st.sampled_from((1, 3, 10_000)))
def test_a_state_on_disk_reads_as_one_in_memory(changes: list[Change], flush_every: int) -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    disk, memory = DiskState(db, flush_every=flush_every), MemoryState()
    serials: set[tuple[str, str]] = set()
    for change in changes:
        disk.apply([change])
        memory.apply([change])
        serials |= set(memory.packs_)
        for gtin, serial in serials:
            assert disk.pack(gtin, serial) == memory.pack(gtin, serial)
        for gtin in GTINS:
            wanted = (*(s for g, s in sorted(serials) if g == gtin), "absent")
            assert disk.packs(gtin, wanted) == memory.packs(gtin, wanted)
        for holder in HOLDERS[:3]:
            for gtin in GTINS:
                for lot in LOTS:
                    assert disk.holding(holder, gtin, lot) == memory.holding(holder, gtin, lot)
        for n in range(4):
            assert disk.shipment(f"sh-{n}") == memory.shipment(f"sh-{n}")
    copy = disk.to_memory()
    assert copy.packs_ == memory.packs_
    assert {k: v for k, v in copy.active.items() if v} == {k: v for k, v in memory.active.items() if v}
    assert {k: v for k, v in copy.holdings.items() if v} == {k: v for k, v in memory.holdings.items() if v}
    assert copy.shipments == memory.shipments
    db.close()
