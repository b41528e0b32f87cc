"""Row mappings that rely on column order."""

from __future__ import annotations

import dataclasses
import datetime as dt

from ledger.identifiers import Channel
from ledger.state import Batch, Pack
from ledger.storage import rows
from ledger.storage import tables as t


def test_the_packs_table_lists_the_pack_fields_in_order() -> None:
    """``SqlUnit.packs`` builds ``Pack(*row)`` from the table's columns (the group append reads hundreds of packs
    per group): a column added or moved must be added to ``Pack`` in the same place."""
    assert tuple(t.packs.c.keys()) == tuple(f.name for f in dataclasses.fields(Pack))
    pack = Pack("06111234567895", "S1", "L1", "dispensed", None, "ph-rabat", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 7)
    assert Pack(*rows.pack_row(pack).values()) == pack


def test_the_batches_table_lists_the_batch_fields_in_order() -> None:
    """A scan on PostgreSQL builds ``Batch`` from the driver's row by position (``sql.pack_scan_rows``)."""
    assert tuple(t.batches.c.keys()) == tuple(f.name for f in dataclasses.fields(Batch))
    batch = Batch("06111234567895", "L1", dt.date(2029, 1, 1), "X", "maphar", 10, Channel.PUBLIC, "recalled", "why",
                  9, 3, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert Batch(*rows.batch_row(batch).values()) == batch
