"""Schema upgrades keep what a ledger already holds (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import command

from ledger.storage.database import _alembic_config, migrate, open_database


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
