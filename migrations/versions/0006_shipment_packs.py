"""shipment_packs: which shipments listed which pack, so a scan finds a pack's shipments by index

Before this revision a pack's provenance matched its serial inside every shipment's JSON list of the batch
(a LIKE over text): fine for a few shipments, but a national batch is shipped to thousands of pharmacies.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""
import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shipment_packs",
        sa.Column("gtin", sa.String(length=14), nullable=False),
        sa.Column("serial", sa.String(length=20), nullable=False),
        sa.Column("shipment", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("gtin", "serial", "shipment"),
    )
    conn = op.get_bind()
    table = sa.table("shipment_packs", sa.column("gtin"), sa.column("serial"), sa.column("shipment"))
    found = conn.execute(sa.text("SELECT id, gtin, serials FROM shipments WHERE serials IS NOT NULL"))
    batch: list[dict[str, str]] = []
    for shipment, gtin, serials in found:
        batch.extend({"gtin": gtin, "serial": s, "shipment": shipment} for s in json.loads(serials))
        if len(batch) >= 5000:
            conn.execute(table.insert(), batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)
    # the scan's other lookups: batch-wide events of a chain by type, and stock moved by quantity
    op.create_index("ix_log_entries_chain_type", "log_entries", ["chain", "event_type", "serial"])
    op.create_index("ix_shipments_by_quantity", "shipments", ["gtin", "lot"],
                    postgresql_where=sa.text("serials IS NULL"), sqlite_where=sa.text("serials IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_shipments_by_quantity", table_name="shipments")
    op.drop_index("ix_log_entries_chain_type", table_name="log_entries")
    op.drop_table("shipment_packs")
