"""a projection rewrite counter in the log head's own row

A group append reads the log head with ``SELECT ... FOR UPDATE`` and, in the same statement, whether the
projections were rewritten since its last group (``athar audit rebuild --write``), so that it drops what it carried.
It counted the meta rows a rewrite adds; but on PostgreSQL an append that waits for the lock behind the rewrite
reads that count from its snapshot before the wait, and kept its carried state for one group. A waiting
``FOR UPDATE`` does re-read the locked row itself: the rewrite now bumps a counter there.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_head") as batch_op:
        batch_op.add_column(sa.Column("rewrites", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("log_head") as batch_op:
        batch_op.drop_column("rewrites")
