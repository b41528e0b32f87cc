"""``Reader.public_pack_now``, the public scan an SQLite server reads on its event loop, answers exactly as the
thread path does, or steps aside (None) when the provenance needs more than indexed columns: on both databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.queries import Reader
from tests.support import GTIN, GTIN_B, World, make_world


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", db_url)
    yield w
    w.db.dispose()


def test_public_scans_read_now_match_the_thread_path(world: World) -> None:
    w = world
    serials = w.supply_history("NOW")
    w.ledger.submit(w.as_("dist-north").ship(GTIN, "NOW", "ph-rabat", serials=[serials[5]]))
    recalled = w.commission("RCN", 3, gtin=GTIN_B, expiry=dt.date(2026, 12, 1))
    w.ledger.submit(w.as_("regulator").recall(GTIN_B, "RCN", "contamination"))
    w.clock.advance(days=30)
    scanned = [(GTIN, s, None, None) for s in serials] + [
        (GTIN, serials[1], "NOW", dt.date(2028, 6, 30)),
        (GTIN, serials[1], "OTHER", None),
        (GTIN, "NEVER-SEEN", None, None),
        (GTIN_B, recalled[0], None, None),
    ]
    reader = Reader(w.ledger)
    for gtin, serial, lot, expiry in scanned:
        expected = reader.pack(gtin, serial, lot=lot, expiry=expiry)  # also fills the actor cache
        assert reader.public_pack_now(gtin, serial, lot=lot, expiry=expiry) == expected, serial
    verdicts = {reader.pack(g, s, lot=lot, expiry=e).finding.verdict.value for g, s, lot, e in scanned}
    assert len(verdicts) >= 4, verdicts


def test_a_scan_that_needs_more_reads_is_left_to_the_thread_path(world: World) -> None:
    w = world
    serials = w.commission("DSN", 4)
    reader = Reader(w.ledger)
    assert reader.public_pack_now(GTIN, serials[0]) is None  # the manufacturer's name is not cached yet
    assert reader.public_pack_now(GTIN, serials[0]) is None
    expected = reader.pack(GTIN, serials[0])
    assert reader.public_pack_now(GTIN, serials[0]) == expected
    w.ledger.submit(w.as_("maphar").destroy(GTIN, "DSN", "damaged", serials=[serials[1]]))
    assert [s.type for s in reader.pack(GTIN, serials[1]).steps] == ["commission", "destroy"]
    assert reader.public_pack_now(GTIN, serials[1]) is None  # a destruction names its packs in its body alone
    assert reader.public_pack_now(GTIN, serials[2]) is None
