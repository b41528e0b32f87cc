"""A pack's provenance read from indexed columns equals the rule applied to the full signed chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.bundle import verify_bundle
from ledger.bundle_build import build_bundle
from ledger.entry import Entry
from ledger.provenance import BATCH_WIDE, SINGLE_PACK, pack_steps
from ledger.queries import Reader
from tests.support import GTIN, make_world


def test_fast_provenance_matches_the_signed_chain(tmp_path: Path, db_url: str) -> None:
    w = make_world(tmp_path / "home", db_url)
    serials = w.supply_history("PRV")
    w.ledger.submit(w.as_("maphar").destroy(GTIN, "PRV", "damaged", serials=[serials[7]]))
    w.ledger.submit(w.as_("regulator").recall(GTIN, "PRV", "contamination"))
    reader = Reader(w.ledger)
    with w.ledger.store.read() as u:
        chain = [Entry.from_leaf(e.leaf) for e in u.chain_entries(f"batch/{GTIN}/PRV")]
        actors = {a.id: a for a in u.actors()}
    with w.ledger.store.read() as u:
        doc = build_bundle(u, w.ledger.config.ledger_key, [f"batch/{GTIN}/PRV"], created=w.clock())
    bundle = verify_bundle(json.loads(json.dumps(doc)), w.ledger.config.trust)
    for serial in serials:
        fast = reader.pack(GTIN, serial).steps
        assert fast == pack_steps(chain, serial, actors.get), serial
        # the offline bundle's per-pack index gives the same steps as the whole chain
        assert pack_steps(bundle.pack_history(GTIN, "PRV", serial), serial, actors.get) == pack_steps(
            bundle.history(GTIN, "PRV"), serial, actors.get), serial
    kinds = [s.type for s in reader.pack(GTIN, serials[0]).steps]
    assert kinds == ["commission", "ship", "ship", "ship", "dispense", "undo_dispense", "dispense", "recall"]
    assert [s.type for s in reader.pack(GTIN, serials[7]).steps] == ["commission", "ship", "destroy", "recall"]


def test_serials_with_like_wildcards_and_quotes(tmp_path: Path, db_url: str) -> None:
    w = make_world(tmp_path / "home", db_url)
    serials = ['A%_1', 'A%_2', 'AB1', 'Q"1']
    w.ledger.submit(w.as_("maphar").commission(GTIN, "WILD", __import__("datetime").date(2029, 1, 1), "X", serials))
    w.deliver("maphar", "dist-north", "WILD", ['A%_1', 'Q"1'])
    reader = Reader(w.ledger)
    assert [s.type for s in reader.pack(GTIN, 'A%_1').steps] == ["commission", "ship"]
    assert [s.type for s in reader.pack(GTIN, 'Q"1').steps] == ["commission", "ship"]
    assert [s.type for s in reader.pack(GTIN, 'A%_2').steps] == ["commission"]
    assert [s.type for s in reader.pack(GTIN, 'AB1').steps] == ["commission"]


def test_a_scan_reads_what_the_projections_hold(tmp_path: Path, db_url: str) -> None:
    """The scan statement's pack, batch and log size are those the ordinary reads give (on PostgreSQL the scan's
    rows come straight from the driver, by column position), for packs active, shipped, dispensed, destroyed,
    in a recalled batch, and for a pack that does not exist."""
    w = make_world(tmp_path / "home", db_url)
    serials = w.commission("SCAN", 6)
    w.deliver("maphar", "dist-north", "SCAN", serials[:4])
    w.ledger.submit(w.as_("maphar").destroy(GTIN, "SCAN", "damaged", serials=[serials[5]]))
    w.deliver("dist-north", "ph-rabat", "SCAN", serials[:2])
    w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, serials[0]))
    other = w.commission("SCAN2", 2)
    w.ledger.submit(w.as_("regulator").recall(GTIN, "SCAN2", "contamination"))
    with w.ledger.store.read_statements() as u:
        for serial in [*serials, *other]:
            scan = u.pack_scan(GTIN, serial, single=SINGLE_PACK, wide=BATCH_WIDE)
            assert scan is not None
            pack, batch, size, trail = scan
            assert pack == u.pack(GTIN, serial) and batch == u.batch(GTIN, pack.lot), serial
            assert size == u.head()[0] and all(row[0] < size for row in trail)
            assert all(when.tzinfo is not None for when in (batch.commissioned_at, *(row[3] for row in trail)))
        dispensed = u.pack_scan(GTIN, serials[0], single=SINGLE_PACK, wide=BATCH_WIDE)
        assert dispensed is not None and dispensed[0].status == "dispensed"
        assert dispensed[0].dispensed_at is not None and dispensed[0].dispensed_at.tzinfo is not None
        assert u.pack_scan(GTIN, "NOSUCHPACK", single=SINGLE_PACK, wide=BATCH_WIDE) is None
    w.db.dispose()


def test_a_scan_is_one_statement(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verdict and the provenance of a pack come from one statement (one snapshot, one round trip), for a
    known pack with a history and for an unknown one; the lot that names the batch chain is read inside it.
    Counted at the driver on PostgreSQL, where the scan bypasses SQLAlchemy."""
    from sqlalchemy import event

    w = make_world(tmp_path / "home", db_url)
    serials = w.commission("ONE'1", 4)
    w.deliver("maphar", "dist-north", "ONE'1", serials[:2])
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):  # not SQLite's BEGIN
            statements.append(statement)

    reader = Reader(w.ledger)
    reader.pack(GTIN, serials[1])  # the actor names shown in the steps are cached after the first scan
    if w.db.reader.dialect.name == "postgresql":
        import psycopg

        execute = psycopg.Cursor.execute

        def counted(cur: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
            record(None, cur, str(query))
            return execute(cur, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    else:
        event.listen(w.db.reader, "before_cursor_execute", record)
    try:
        report = reader.pack(GTIN, serials[1])
        assert [s.type for s in report.steps] == ["commission", "ship"] and report.finding.verdict.value == "AUTHENTIC"
        assert len(statements) == 1, statements
        assert reader.pack(GTIN, "NOSUCHPACK").finding.verdict.value == "UNKNOWN"
        assert len(statements) == 2
    finally:
        if event.contains(w.db.reader, "before_cursor_execute", record):
            event.remove(w.db.reader, "before_cursor_execute", record)
        w.db.dispose()
