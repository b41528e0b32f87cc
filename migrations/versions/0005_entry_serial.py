"""log entries: the pack serial of single-pack events, so a pack's provenance is read without parsing the log

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Entries written before this revision keep NULL here; readers fall back to the signed entry for them.
    with op.batch_alter_table("log_entries") as batch:
        batch.add_column(sa.Column("serial", sa.String(length=20), nullable=True))
    op.create_index("ix_log_entries_chain_serial", "log_entries", ["chain", "serial"])


def downgrade() -> None:
    op.drop_index("ix_log_entries_chain_serial", table_name="log_entries")
    with op.batch_alter_table("log_entries") as batch:
        batch.drop_column("serial")
