"""packs leave a fifth of each page free (PostgreSQL), so a pack's updates stay on its page

A pack row is written once by its commission, in a batch of up to 100,000 that fills every page, then
changed at each handoff (shipped, received, dispensed). On a full page PostgreSQL writes the new row version
elsewhere and adds an entry for it to both of the table's indexes; with room on the page, and no indexed
column changed, the update is heap-only and adds no index entry. Measured on the benchmark's supply chain
(appends at 64 clients): 84 % of pack updates heap-only against 55 %, and 2.6 kB of WAL per appended entry
against 5.4-6.5 kB; the table takes a quarter more pages.

Setting it rewrites nothing and takes a moment whatever the table's size: it applies to pages written from now
on. ``VACUUM FULL packs`` (or pg_repack, without the exclusive lock) applies it to the rows a ledger already
holds. SQLite has no such setting: nothing to do there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FILLFACTOR = 80


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE packs SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE packs RESET (fillfactor)")
