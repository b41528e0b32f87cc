"""Pages of log entries cut by the bytes of their leaves (SQLite and PostgreSQL): a commission lists every serial
of its batch, so a page counted in entries alone can hold gigabytes. Whoever reads on from ``start`` plus the
number returned gets every entry once, in order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ledger.queries
from ledger.queries import Oversight, Principal, Reader
from ledger.risk import RiskThresholds, to_json
from ledger.storage.rows import StoredEntry
from tests.support import GTIN, World, make_world


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", db_url)
    try:
        w.supply_history("L1")
        for lot in ("BIG-1", "BIG-2"):
            big = w.commission(lot, 300)  # about 7 kB each, among entries of under 1 kB
        w.deliver("maphar", "ph-rabat", "BIG-2", big[:1])
        w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, big[0]))
        yield w
    finally:
        w.db.dispose()


def read_on(world: World, max_bytes: int) -> list[list[StoredEntry]]:
    size, start, pages = world.ledger.size(), 0, []
    while start < size:
        page = world.ledger.entries(start, size, max_bytes)
        assert page and page[0].index == start
        pages.append(page)
        start += len(page)
    return pages


@pytest.mark.parametrize("max_bytes", [1, 2_000, 8_000, 10**9])
def test_pages_cut_by_bytes_hold_every_entry_once(world: World, max_bytes: int) -> None:
    size = world.ledger.size()
    whole = world.ledger.entries(0, size)
    assert len(whole) == size < 1000
    pages = read_on(world, max_bytes)
    assert [e.index for page in pages for e in page] == list(range(size))
    assert [e.leaf for page in pages for e in page] == [e.leaf for e in whole]
    for page in pages:
        assert len(page) == 1 or sum(len(e.leaf) for e in page) <= max_bytes
        end = page[-1].index + 1
        if end < size:  # as many as fit
            assert sum(len(e.leaf) for e in page) + len(whole[end].leaf) > max_bytes
    if max_bytes == 1:
        assert len(pages) == size
    elif max_bytes == 10**9:
        assert len(pages) == 1
    assert world.ledger.entries(size, size + 5, max_bytes) == []


def test_the_risk_report_reads_the_whole_log_through_cut_pages(world: World,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with world.ledger.store.read() as u:
        regulator = u.actor("regulator")
    assert regulator is not None
    oversight = Oversight(Reader(world.ledger))
    whole = to_json(oversight.risk(Principal(regulator), RiskThresholds()))
    monkeypatch.setattr(ledger.queries, "MAX_ENTRIES_BYTES", 1)  # a page of one entry each
    assert to_json(oversight.risk(Principal(regulator), RiskThresholds())) == whole
    assert whole["entries"] == world.ledger.size()
