"""Schema upgrades keep what a ledger already holds (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from ledger.storage.database import _alembic_config, migrate, open_database
from tests.support import GTIN, make_world


def test_0006_lists_the_packs_of_existing_shipments(db_url: str) -> None:
    db = open_database(db_url)
    try:
        with db.writer.begin() as conn:
            command.upgrade(_alembic_config(conn), "0005")
            shipped = "2026-11-20 08:00:00"
            for ident, serials in (("s-by-serial", json.dumps(["A1", "A2", "A\"3"])), ("s-by-quantity", None)):
                conn.execute(sa.text(
                    "INSERT INTO shipments (id, kind, gtin, lot, sender, recipient, quantity, serials, channel, "
                    "status, shipped_index, shipped_at) VALUES (:id, 'ship', '06111234567895', 'L1', 'maphar', "
                    "'dist-north', 3, :serials, 'private', 'in_transit', 7, :at)"),
                    {"id": ident, "serials": serials, "at": shipped})
        migrate(db)
        with db.reader.connect() as conn:
            listed = conn.execute(sa.text("SELECT gtin, serial, shipment FROM shipment_packs")).all()
        assert sorted(tuple(r) for r in listed) == [("06111234567895", s, "s-by-serial")
                                                    for s in sorted(["A1", "A2", "A\"3"])]
    finally:
        db.dispose()


def test_0007_pack_updates_stay_on_their_page(postgres_url: str, tmp_path: Path) -> None:
    """A commission fills the packs table's pages; a later handoff must still find room beside the pack (a
    heap-only update: no index entries, less WAL). Every tenth pack of a fresh batch is changed as a dispense
    changes it, in one transaction, and PostgreSQL counts the heap-only updates of that transaction."""
    world = make_world(tmp_path / "home", postgres_url)
    try:
        serials = world.commission("FF1", 2000)
        with world.db.writer.begin() as conn:
            options = conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE oid = 'packs'::regclass")).scalar()
            assert options == ["fillfactor=80"]
            changed = conn.execute(sa.text(
                "UPDATE packs SET status = 'dispensed', dispensed_by = holder, dispensed_at = now(), "
                "dispensed_index = 1 WHERE gtin = :g AND serial = ANY(:s)"),
                {"g": GTIN, "s": serials[::10]}).rowcount
            hot = conn.execute(sa.text("SELECT pg_stat_get_xact_tuples_hot_updated('packs'::regclass)")).scalar()
        assert changed == 200
        assert hot == changed  # without the migration's room on the page: 0 to 2 of 200
    finally:
        world.db.dispose()


def test_0008_indexes_alerts_by_log_index_and_back(db_url: str) -> None:
    db = open_database(db_url)
    try:
        def indexes() -> set[str]:
            with db.reader.connect() as conn:
                return {str(i["name"]) for i in sa.inspect(conn).get_indexes("alerts")}

        migrate(db)
        assert "ix_alerts_idx" in indexes()
        with db.writer.begin() as conn:
            command.downgrade(_alembic_config(conn), "0007")
        assert "ix_alerts_idx" not in indexes()
        migrate(db)
        assert "ix_alerts_idx" in indexes()
    finally:
        db.dispose()
