"""alerts indexed by their log index, so the newest (and each next page, ``before=<index>``) are read from it

``GET /v1/alerts`` lists alerts newest first; without a status filter nothing indexed their order, and each page
sorted the whole table. A national ledger files an alert for every refused clone or diversion attempt.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_alerts_idx", "alerts", ["idx"])


def downgrade() -> None:
    op.drop_index("ix_alerts_idx", table_name="alerts")
