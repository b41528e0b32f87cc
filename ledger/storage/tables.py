"""Table definitions. Alembic migrations in ``migrations/`` create them; nothing else does in production.

The log tables (``log_entries``, ``merkle_nodes``, ``checkpoints``, ``meta``) are append-only: database
triggers reject UPDATE and DELETE. Everything else is a projection of the log, rebuilt by
``athar audit rebuild``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

APPEND_ONLY_TABLES = ("log_entries", "merkle_nodes", "checkpoints", "meta")


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timestamps stored as naive UTC in both databases and returned timezone-aware."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: str | dt.datetime) -> dt.datetime:
    """A stored timestamp (naive UTC; SQLite gives it as text) as a timezone-aware datetime."""
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


Hash = sa.LargeBinary(32)

meta = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

log_head = sa.Table(
    "log_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("root_hash", Hash, nullable=False),
    # bumped by every projection rewrite: a group append waiting for this row's lock re-reads it after the wait
    sa.Column("rewrites", sa.BigInteger, nullable=False, server_default="0"),
)

log_entries = sa.Table(
    "log_entries", metadata,
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("entry_hash", Hash, nullable=False, unique=True),
    sa.Column("event_id", sa.String(128), nullable=False, unique=True),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("chain", sa.String(128), nullable=False),
    sa.Column("prev", Hash, nullable=True),
    sa.Column("gtin", sa.String(14), nullable=True),
    sa.Column("lot", sa.String(20), nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("leaf", sa.LargeBinary, nullable=False),
    sa.Column("serial", sa.String(20), nullable=True),  # single-pack events (dispense, undo, report)
    sa.Index("ix_log_entries_chain", "chain", "idx"),
    sa.Index("ix_log_entries_chain_serial", "chain", "serial"),
    sa.Index("ix_log_entries_chain_type", "chain", "event_type", "serial"),
    sa.Index("ix_log_entries_actor", "actor", "idx"),
)

merkle_nodes = sa.Table(
    "merkle_nodes", metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", Hash, nullable=False),
)

checkpoints = sa.Table(
    "checkpoints", metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root_hash", Hash, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

chain_heads = sa.Table(
    "chain_heads", metadata,
    sa.Column("chain", sa.String(128), primary_key=True),
    sa.Column("head_hash", Hash, nullable=False),
    sa.Column("head_index", sa.BigInteger, nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),
)

actors = sa.Table(
    "actors", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("region", sa.String(100), nullable=False),
    sa.Column("city", sa.String(500), nullable=True),
    sa.Column("gln", sa.String(13), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("registered_index", sa.BigInteger, nullable=False),
)

actor_keys = sa.Table(
    "actor_keys", metadata,
    sa.Column("key_id", sa.String(100), primary_key=True),
    sa.Column("actor", sa.String(64), nullable=False, index=True),
    sa.Column("public_key", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("added_index", sa.BigInteger, nullable=False),
    sa.Column("retired_index", sa.BigInteger, nullable=True),
)

batches = sa.Table(
    "batches", metadata,
    sa.Column("gtin", sa.String(14), primary_key=True),
    sa.Column("lot", sa.String(20), primary_key=True),
    sa.Column("expiry", sa.Date, nullable=False),
    sa.Column("product", sa.String(200), nullable=False),
    sa.Column("manufacturer", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_reason", sa.String(500), nullable=True),
    sa.Column("status_index", sa.BigInteger, nullable=True),
    sa.Column("commissioned_index", sa.BigInteger, nullable=False),
    sa.Column("commissioned_at", UTCDateTime, nullable=False),
)

packs = sa.Table(
    "packs", metadata,
    sa.Column("gtin", sa.String(14), primary_key=True),
    sa.Column("serial", sa.String(20), primary_key=True),
    sa.Column("lot", sa.String(20), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("holder", sa.String(64), nullable=True),
    sa.Column("dispensed_by", sa.String(64), nullable=True),
    sa.Column("dispensed_at", UTCDateTime, nullable=True),
    sa.Column("dispensed_index", sa.BigInteger, nullable=True),
    sa.Index("ix_packs_batch_holder", "gtin", "lot", "holder"),
    postgresql_with={"fillfactor": 80},  # room for updates on the page (migration 0007)
)

holdings = sa.Table(
    "holdings", metadata,
    sa.Column("actor", sa.String(64), primary_key=True),
    sa.Column("gtin", sa.String(14), primary_key=True),
    sa.Column("lot", sa.String(20), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Index("ix_holdings_batch", "gtin", "lot"),
)

shipments = sa.Table(
    "shipments", metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("gtin", sa.String(14), nullable=False),
    sa.Column("lot", sa.String(20), nullable=False),
    sa.Column("sender", sa.String(64), nullable=False),
    sa.Column("recipient", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("serials", sa.Text, nullable=True),
    sa.Column("channel", sa.String(16), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("shipped_index", sa.BigInteger, nullable=False),
    sa.Column("shipped_at", UTCDateTime, nullable=False),
    sa.Column("closed_index", sa.BigInteger, nullable=True),
    sa.Index("ix_shipments_batch", "gtin", "lot"),
    sa.Index("ix_shipments_recipient", "recipient", "status"),
    sa.Index("ix_shipments_by_quantity", "gtin", "lot", postgresql_where=sa.text("serials IS NULL"),
             sqlite_where=sa.text("serials IS NULL")),
)

# Which shipments listed which pack (shipments.serials, as rows): a scan finds a pack's shipments by index.
shipment_packs = sa.Table(
    "shipment_packs", metadata,
    sa.Column("gtin", sa.String(14), primary_key=True),
    sa.Column("serial", sa.String(20), primary_key=True),
    sa.Column("shipment", sa.String(128), primary_key=True),
)

alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", sa.String(160), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("gtin", sa.String(14), nullable=True),
    sa.Column("lot", sa.String(20), nullable=True),
    sa.Column("serial", sa.String(20), nullable=True),
    sa.Column("suspect", sa.String(64), nullable=False),
    sa.Column("idx", sa.BigInteger, nullable=False),
    sa.Column("raised_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cause", sa.String(500), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("finding", sa.Text, nullable=True),
    sa.Column("updated_index", sa.BigInteger, nullable=True),
    sa.Index("ix_alerts_status", "status", "idx"),
    sa.Index("ix_alerts_idx", "idx"),  # newest first, page by page (migration 0008)
)

PROJECTION_TABLES = (chain_heads, actors, actor_keys, batches, packs, holdings, shipments, shipment_packs, alerts)

# Personal data given with a public report (contact details, free text). Never in the log: the log holds
# only SHA-256(salt || data). Deleting the row erases the data and leaves every chain intact.
personal_data = sa.Table(
    "personal_data", metadata,
    sa.Column("data_hash", sa.String(64), primary_key=True),
    sa.Column("salt", sa.LargeBinary(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Witness cosignatures (C2SP tlog-cosignature) on checkpoints; each line was verified before it was stored.
cosignatures = sa.Table(
    "cosignatures", metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("witness", sa.String(200), primary_key=True),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
)
