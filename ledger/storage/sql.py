"""The SQLAlchemy adapter: one ``SqlUnit`` per transaction, reading state for the custody rules,
applying their changes, and appending entries, tree nodes and checkpoints.

Only this package imports SQLAlchemy. Database errors are translated here, at one boundary, into
``StorageUnavailable`` (the database cannot be reached) so callers never see driver exceptions.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast, overload

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from ledger.entry import Entry, indexed_columns
from ledger.errors import StorageUnavailable
from ledger.identifiers import Channel
from ledger.merkle import NodeID, inclusion_plan, leaf_hash
from ledger.state import (
    Actor,
    AddPacks,
    AdjustHolding,
    AlertRecord,
    Batch,
    Change,
    KeyRecord,
    Pack,
    PoolPacks,
    PutActor,
    PutAlert,
    PutBatch,
    PutKey,
    PutPacks,
    PutShipment,
    Shipment,
)
from ledger.storage import group_reads, merged_writes, rows
from ledger.storage import tables as t
from ledger.storage.database import Database, redact
from ledger.storage.group_reads import GroupReads, GroupWants
from ledger.storage.rows import StoredEntry

CHUNK = 2000  # bound IN-lists and multi-row inserts (SQLite allows at most 32766 parameters)


@dataclass
class ProjectionSnapshot:
    """Every projection table as rows keyed by primary key (for the rebuild comparison)."""

    TABLES = ("actors", "actor_keys", "batches", "packs", "holdings", "shipments", "shipment_packs", "alerts",
              "chain_heads")
    actors: dict[Any, dict[str, Any]]
    actor_keys: dict[Any, dict[str, Any]]
    batches: dict[Any, dict[str, Any]]
    packs: dict[Any, dict[str, Any]]
    holdings: dict[Any, dict[str, Any]]
    shipments: dict[Any, dict[str, Any]]
    shipment_packs: dict[Any, dict[str, Any]]
    alerts: dict[Any, dict[str, Any]]
    chain_heads: dict[Any, dict[str, Any]]


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str
    created_at: dt.datetime


@dataclass
class ProofMaterial:
    """What a proof is made from and checked against (``SqlUnit.proof_material``)."""

    nodes: dict[NodeID, bytes]
    log_size: int = 0
    root: bytes | None = None  # of the checkpoint asked for
    first_root: bytes | None = None  # of the earlier checkpoint asked for
    leaf_hash: bytes | None = None  # RFC 9162 hash of the stored leaf asked for


def _param(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name)


# Statements on the append path, built once: building SQLAlchemy expressions costs more than running them.
_ACTOR = sa.select(t.actors).where(t.actors.c.id == _param("id"))
_KEY = sa.select(t.actor_keys).where(t.actor_keys.c.key_id == _param("key_id"))
_BATCH = sa.select(t.batches).where(t.batches.c.gtin == _param("gtin"), t.batches.c.lot == _param("lot"))
_PACK = sa.select(t.packs).where(t.packs.c.gtin == _param("gtin"), t.packs.c.serial == _param("serial"))
_HOLDING = sa.select(t.holdings.c.quantity).where(
    t.holdings.c.actor == _param("actor"), t.holdings.c.gtin == _param("gtin"), t.holdings.c.lot == _param("lot"))
_ADD_HOLDING = (sa.update(t.holdings)
                .where(t.holdings.c.actor == _param("b_actor"), t.holdings.c.gtin == _param("b_gtin"),
                       t.holdings.c.lot == _param("b_lot"))
                .values(quantity=t.holdings.c.quantity + _param("b_delta")))
_NEW_HOLDING = sa.insert(t.holdings).values(actor=_param("b_actor"), gtin=_param("b_gtin"), lot=_param("b_lot"),
                                            quantity=_param("b_delta"))
_SHIPMENT = sa.select(t.shipments).where(t.shipments.c.id == _param("id"))
_SET_HEAD = sa.update(t.log_head).where(t.log_head.c.id == 1).values(tree_size=_param("size"),
                                                                    root_hash=_param("root"))
_INSERT_CHECKPOINT = sa.insert(t.checkpoints).values(tree_size=_param("size"), root_hash=_param("root"),
                                                     note=_param("note"), created_at=_param("created"))
_ENTRY_BY_EVENT = sa.select(t.log_entries).where(t.log_entries.c.event_id == _param("event_id"))
_CHAIN_HEAD = sa.select(t.chain_heads).where(t.chain_heads.c.chain == _param("chain"))
_PUT_PACK = (sa.update(t.packs)
             .where(t.packs.c.gtin == _param("k_gtin"), t.packs.c.serial == _param("k_serial"))
             .values(status=_param("b_status"), holder=_param("b_holder"), dispensed_by=_param("b_dispensed_by"),
                     dispensed_at=_param("b_dispensed_at"), dispensed_index=_param("b_dispensed_index")))

_PACKS_PG = sa.select(t.packs).where(t.packs.c.gtin == _param("gtin"),
                                     t.packs.c.serial == sa.any_(sa.cast(_param("s"), ARRAY(sa.String))))
_NODES_PG_SQL = ("SELECT m.level, m.idx, m.hash FROM merkle_nodes m JOIN unnest(CAST(:levels AS smallint[]), "
                 "CAST(:idxs AS bigint[])) AS w(level, idx) ON m.level = w.level AND m.idx = w.idx")
_NODES_PG = sa.text(_NODES_PG_SQL)
# a proof's material in one statement, so one snapshot and one round trip: the log size (level -1), a
# checkpoint's root (level -2), an earlier checkpoint's root (level -4) and the RFC 9162 hash of a stored leaf
# (level -3; hashed where it lies rather than shipped: a commission's leaf can be megabytes), then the nodes
# (run on the driver, with native placeholders: $1 the checkpoint's size, $2 the earlier one's, $3 the entry, $4
# and $5 the nodes' levels and indexes; SQLAlchemy's statement and result handling cost a served proof more CPU
# than the driver's)
PROOF_PG = (
    "SELECT -1, tree_size, NULL FROM log_head WHERE id = 1 UNION ALL "
    "SELECT -2, tree_size, root_hash FROM checkpoints WHERE tree_size = $1 UNION ALL "
    "SELECT -4, tree_size, root_hash FROM checkpoints WHERE tree_size = $2 UNION ALL "
    "SELECT -3, idx, sha256(decode('00', 'hex') || leaf) FROM log_entries WHERE idx = $3 AND $3 >= 0 UNION ALL "
    "SELECT m.level, m.idx, m.hash FROM merkle_nodes m JOIN unnest(CAST($4 AS smallint[]), CAST($5 AS bigint[])) "
    "AS w(level, idx) ON m.level = w.level AND m.idx = w.idx")
_EVENT_IDS_PG = sa.select(t.log_entries.c.event_id).where(
    t.log_entries.c.event_id == sa.any_(sa.cast(_param("ids"), ARRAY(sa.String))))
_BY_KEY_PG: dict[tuple[str, tuple[str, ...]], Any] = {}


def _by_key_pg(table: sa.Table, key: tuple[str, ...]) -> Any:
    """SELECT the rows of ``table`` whose ``key`` columns match a row of arrays k0, k1... (PostgreSQL)."""
    stmt = _BY_KEY_PG.get((table.name, key))
    if stmt is None:
        arrays = ", ".join(f"CAST(:k{i} AS varchar[])" for i in range(len(key)))
        wanted = (sa.text(f"SELECT * FROM unnest({arrays}) AS w({', '.join(key)})")
                  .columns(*(sa.column(k, sa.String) for k in key)).subquery("k"))
        stmt = sa.select(table).join(wanted, sa.and_(*(table.c[k] == wanted.c[k] for k in key)))
        _BY_KEY_PG[(table.name, key)] = stmt
    return stmt


# Bulk rows travel as one JSON parameter: psycopg dumps Python lists into arrays element by element in Python,
# json.dumps in C (a group may move hundreds of packs; half the CPU of writing them)
_ADD_SHIPMENT_PACKS_PG = sa.text(
    "INSERT INTO shipment_packs (gtin, serial, shipment) SELECT gtin, serial, shipment "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(gtin varchar, serial varchar, shipment varchar) "
    "ON CONFLICT DO NOTHING")
# the log rows of a group the same way (bytes as hex): unlike COPY, a statement can go in a pipeline; a group of
# large commissions is split, as PostgreSQL takes at most 1 GB in one value
ENTRY_BYTES_PER_STATEMENT = 64 * 1024 * 1024
_INSERT_ENTRIES_PG = sa.text(
    "INSERT INTO log_entries (idx, entry_hash, event_id, event_type, actor, chain, prev, gtin, lot, received_at, "
    "leaf, serial) SELECT idx, decode(entry_hash, 'hex'), event_id, event_type, actor, chain, decode(prev, 'hex'), "
    "gtin, lot, received_at, decode(leaf, 'hex'), serial FROM json_to_recordset(CAST(:rows AS json)) AS v(idx bigint, "
    "entry_hash text, event_id varchar, event_type varchar, actor varchar, chain varchar, prev text, gtin varchar, "
    "lot varchar, received_at timestamp, leaf text, serial varchar)")
_INSERT_NODES_PG = sa.text(
    "INSERT INTO merkle_nodes (level, idx, hash) SELECT level, idx, decode(hash, 'hex') "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(level smallint, idx bigint, hash text)")
_PUT_PACKS_PG = sa.text(
    "UPDATE packs SET status = v.status, holder = v.holder, dispensed_by = v.by, dispensed_at = v.at, "
    "dispensed_index = v.ix FROM json_to_recordset(CAST(:rows AS json)) AS v(gtin varchar, serial varchar, "
    "status varchar, holder varchar, by varchar, at timestamp, ix bigint) "
    "WHERE packs.gtin = v.gtin AND packs.serial = v.serial")

_le, _sp, _sh = t.log_entries.c, t.shipment_packs.c, t.shipments.c
_TRAIL = (_le.idx, _le.event_type, _le.actor, _le.received_at, _le.event_id, _le.serial)
_SCANS: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}
_EVENT_TYPE = re.compile(r"[a-z_]{1,32}")
_VIEW = (*t.packs.c, *[c.label(f"b_{c.name}") for c in t.batches.c], t.log_head.c.tree_size.label("log_size"))
TrailRow = tuple[int, str, str, dt.datetime, str, str | None]


def _types(kinds: tuple[str, ...]) -> list[Any]:
    # event type names written into the statement itself: bound lists ("expanding" IN) cost a scan more CPU in
    # SQLAlchemy than the rest of the statement, and these lists are the same few constants on every scan
    if not all(_EVENT_TYPE.fullmatch(k) for k in kinds):
        raise ValueError(f"not event type names: {kinds}")
    return [sa.literal_column(f"'{k}'") for k in kinds]


def _nulls(columns: Sequence[Any], prefix: str = "") -> list[Any]:
    return [sa.cast(sa.null(), c.type).label(prefix + c.name) for c in columns]


def _pack_scan(single: tuple[str, ...], wide: tuple[str, ...]) -> Any:
    """One statement for a scan: the pack, its batch and the log size (one row), then the batch chain's entries
    that may concern the pack up to that size (one row each; see ``SqlUnit.pack_scan``). One statement is one
    snapshot and one round trip; the pack's lot, which names its batch chain, is read inside it. This is the form
    SQLite runs; PostgreSQL runs ``_pg_scan``, the same rows read with the pack's row and the log head joined
    once (tests compare the two)."""
    stmt = _SCANS.get((single, wide))
    if stmt is not None:
        return stmt
    gtin, serial = sa.bindparam("gtin", type_=sa.String), sa.bindparam("serial", type_=sa.String)
    lot = sa.select(t.packs.c.lot).where(t.packs.c.gtin == gtin, t.packs.c.serial == serial).scalar_subquery()
    # written into the statement: the driver gets only the scan's own parameters
    head: sa.ColumnElement[int] = sa.literal_column("1", sa.Integer)
    size = sa.select(t.log_head.c.tree_size).where(t.log_head.c.id == head).scalar_subquery()
    view = (sa.select(*_VIEW, *_nulls(_TRAIL, "t_"))
            .join_from(t.packs, t.batches, sa.and_(t.batches.c.gtin == t.packs.c.gtin,
                                                   t.batches.c.lot == t.packs.c.lot))
            .join(t.log_head, t.log_head.c.id == head)
            .where(t.packs.c.gtin == gtin, t.packs.c.serial == serial))
    stmt = sa.union_all(view, *_trails(single, wide, _nulls(_VIEW), gtin, serial, lot, size))
    _SCANS[(single, wide)] = stmt
    return stmt


def _trails(single: tuple[str, ...], wide: tuple[str, ...], no_view: Sequence[Any], gtin: Any, serial: Any, lot: Any,
            size: Any, outer: sa.FromClause | None = None) -> list[Any]:
    """A scan's four branches of entries, given the pack's GTIN, serial and lot and the log size as expressions;
    ``outer``: the table those come from, when the branches are correlated with it (``LATERAL``)."""
    chain = sa.literal_column("'batch/'", sa.String) + gtin + sa.literal_column("'/'", sa.String) + lot

    # "idx + 0": a filter, never an index range. The log size comes from a subquery the planner cannot see
    # through, so it guessed a third of the log below it and ANDed a bitmap of that much of the primary key
    # into the batch-wide branch: about 5 ms of PostgreSQL CPU per scan at 10^5 entries, growing with the log.
    below_size = (_le.idx + sa.literal_column("0", sa.Integer)) < size

    # "chain || ''": in the shipment branches the chain is a filter on the few entries found by event id, never
    # the index searched. SQLite without statistics (nothing runs ANALYZE on an embedded ledger) searched the
    # chain's index instead, reading every entry of the batch: 20 ms per scan on a batch of 24,000 entries, 0.44
    # ms once analyzed (thirteenth session).
    chain_filter = _le.chain + sa.literal_column("''", sa.String)

    def trail(*where: Any) -> Any:
        return sa.select(*no_view, *[c.label(f"t_{c.name}") for c in _TRAIL]).where(*where, below_size)

    def found(ids: sa.Select[Any]) -> sa.Select[Any]:
        return ids if outer is None else ids.correlate(outer)  # else it would read every row of ``outer``

    return [
        # the pack's own single-pack events (dispense, undo)
        trail(_le.chain == chain, _le.serial == serial, _le.event_type.in_(_types(single))),
        # the shipments and returns that listed it
        trail(_le.event_id.in_(found(sa.select(_sp.shipment).where(_sp.gtin == gtin, _sp.serial == serial))),
              chain_filter == chain),
        # stock of its batch moved by quantity, which may have held it
        trail(_le.event_id.in_(found(sa.select(_sh.id).where(_sh.gtin == gtin, _sh.lot == lot,
                                                             _sh.serials.is_(None)))),
              chain_filter == chain),
        # batch-wide events, and single-pack events logged before the serial column existed
        trail(_le.chain == chain, _le.event_type.in_(_types(wide)), _le.serial.is_(None)),
    ]


_SCAN_SQL: dict[tuple[tuple[str, ...], tuple[str, ...], bool], str] = {}
_N_PACK, _N_BATCH = len(t.packs.c), len(t.batches.c)


def _pg_scan(dialect: sa.Dialect, single: tuple[str, ...], wide: tuple[str, ...], many: bool) -> str:
    """``_pack_scan``'s rows, written for PostgreSQL: the pack's row and the log head are read once and the
    branches take the lot and the log size from them (``LATERAL``), where ``_pack_scan`` reads them again in each
    branch (SQLite has no ``LATERAL``). PostgreSQL's CPU per scan at 2,000 scans/s (3 runs, alternating): 148-176
    against 179-215 us. ``many``: for each (GTIN, serial) of the arrays $1 and $2, its rows preceded by the pair's
    position in them (from 1); else for the pack $1, $2."""
    p, h = t.packs.alias("p"), t.log_head.alias("h")
    view = (*p.c, *[c.label(f"b_{c.name}") for c in t.batches.c], h.c.tree_size.label("log_size"))
    branches = sa.union_all(
        sa.select(*view, *_nulls(_TRAIL, "t_")).where(t.batches.c.gtin == p.c.gtin, t.batches.c.lot == p.c.lot),
        *_trails(single, wide, _nulls(view), p.c.gtin, p.c.serial, p.c.lot, h.c.tree_size, outer=p),
    ).subquery().lateral("s")
    head = h.c.id == sa.literal_column("1", sa.Integer)
    if many:
        q = (sa.func.unnest(sa.literal_column("$1::VARCHAR[]"), sa.literal_column("$2::VARCHAR[]"))
             .table_valued("gtin", "serial", with_ordinality="n").render_derived(name="q"))
        stmt = (sa.select(q.c.n, branches).select_from(q)
                .join(p, sa.and_(p.c.gtin == q.c.gtin, p.c.serial == q.c.serial)).join(h, head)
                .join(branches, sa.true()))
    else:
        stmt = (sa.select(branches).select_from(p).join(h, head).join(branches, sa.true())
                .where(p.c.gtin == sa.literal_column("$1::VARCHAR"), p.c.serial == sa.literal_column("$2::VARCHAR")))
    sql = str(stmt.compile(dialect=dialect))
    assert "%" not in sql, sql  # nothing for the driver to rewrite
    assert sql.count("packs AS p") == 1, sql  # every branch reads the one pack row (an uncorrelated one reads all)
    return sql


def pack_scan_sql(dialect: sa.Dialect, single: tuple[str, ...], wide: tuple[str, ...]) -> str:
    """``SqlUnit.pack_scan``'s statement as PostgreSQL text for the driver, with native placeholders ($1 the
    GTIN, $2 the serial). Through SQLAlchemy, a scan's statement and result handling cost more CPU than the
    driver's; and the driver rewrites ``%(name)s`` placeholders with a regular expression on every execution of a
    statement this long (it caches the rewriting of statements under 4 kB only)."""
    return _cached_scan(dialect, single, wide, many=False)


def pack_scans_sql(dialect: sa.Dialect, single: tuple[str, ...], wide: tuple[str, ...]) -> str:
    """Many scans in one statement: the scan run for each (GTIN, serial) of the arrays $1 and $2, its rows
    preceded by the pair's position in them (from 1). One snapshot, one round trip and one wake-up of the
    server for the lot; each pack's rows are exactly its own scan's."""
    return _cached_scan(dialect, single, wide, many=True)


def _cached_scan(dialect: sa.Dialect, single: tuple[str, ...], wide: tuple[str, ...], *, many: bool) -> str:
    sql = _SCAN_SQL.get((single, wide, many))
    if sql is None:
        sql = _SCAN_SQL[(single, wide, many)] = _pg_scan(dialect, single, wide, many)
    return sql


def pack_scan_rows(found: Sequence[Sequence[Any]]) -> tuple[Pack, Batch, int, list[TrailRow]] | None:
    """``SqlUnit.pack_scan``'s answer from its rows, taken by position: the pack's columns, its batch's, the log
    size, then the trail's (see ``_VIEW`` and ``_TRAIL``; the unit tests keep ``Pack`` and ``Batch`` in column
    order). Timestamps come naive from the driver on PostgreSQL, already converted through SQLAlchemy on SQLite."""
    view = next((r for r in found if r[-len(_TRAIL)] is None), None)
    if view is None:
        return None
    p = view[:_N_PACK]
    pack = rows.pack_from_columns(p)
    b = view[_N_PACK:_N_PACK + _N_BATCH]
    batch = Batch(b[0], b[1], b[2], b[3], b[4], b[5], Channel(b[6]), b[7], b[8], b[9], b[10], t.as_utc(b[11]))
    trail = sorted((int(i), kind, actor, t.as_utc(at), event_id, serial)
                   for i, kind, actor, at, event_id, serial in (r[-len(_TRAIL):] for r in found) if i is not None)
    return pack, batch, int(view[_N_PACK + _N_BATCH]), trail


_UPSERTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _upsert_statement(dialect: str, table: sa.Table, keys: tuple[str, ...]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET every other column, built once per table and dialect."""
    cache_key = (dialect, table.name, keys)
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:
        ins = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        stmt = ins.on_conflict_do_update(index_elements=list(keys),
                                         set_={c.name: ins.excluded[c.name] for c in table.columns
                                               if c.name not in keys})
        _UPSERTS[cache_key] = stmt
    return stmt


_JSON_UPSERTS: dict[tuple[str, tuple[str, ...]], sa.TextClause] = {}


_ROWS_SQL: dict[int, tuple[sa.TextClause, str]] = {}


def _rows_sql(pg: sa.Dialect, stmt: sa.TextClause) -> str:
    """A statement whose one parameter is ``rows`` (a JSON array), as PostgreSQL text for the driver with a
    native placeholder. A group's writes are seven such statements, sent by the sequencer, whose one thread every
    append waits for: SQLAlchemy's execute added about 90 us of client CPU to each (0.25-0.35 ms of a group of
    20 dispenses' 7-9 ms, measured group by group, alternating)."""
    cached = _ROWS_SQL.get(id(stmt))
    if cached is None:
        compiled = stmt.compile(dialect=pg)
        assert set(compiled.params) == {"rows"}, compiled.params
        sql = str(compiled).replace("%(rows)s", "$1")
        assert "%" not in sql, sql  # nothing else for the driver to rewrite
        cached = _ROWS_SQL[id(stmt)] = (stmt, sql)  # the statement is kept, so its id is never reused
    return cached[1]


_SMALL_SQL: dict[int, tuple[sa.Insert | sa.Update, str, dict[str, Any]]] = {}


def _small_sql(pg: sa.Dialect, stmt: sa.Insert | sa.Update) -> tuple[str, dict[str, Any]]:
    """A fixed statement with named parameters, as PostgreSQL text for the driver (``%(name)s`` placeholders,
    which psycopg converts once per text), and the values SQLAlchemy bound into it itself (``id = 1``)."""
    cached = _SMALL_SQL.get(id(stmt))
    if cached is None:
        compiled = stmt.compile(dialect=pg)
        cached = _SMALL_SQL[id(stmt)] = (stmt, str(compiled), {k: v for k, v in compiled.params.items()
                                                               if not compiled.binds[k].required})
    return cached[1], cached[2]


_NAMED = re.compile(r"%\((\w+)\)s")
_POSITIONAL_SQL: dict[str, tuple[str, tuple[str, ...]]] = {}


def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``%(name)s`` placeholders as ``$1``, ``$2``... (what the driver's raw cursor and a merged statement take),
    and the names in order."""
    cached = _POSITIONAL_SQL.get(sql)
    if cached is None:
        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m.group(1) not in names:
                names.append(m.group(1))
            return f"${names.index(m.group(1)) + 1}"

        positional = _NAMED.sub(number, sql)
        assert "%" not in positional, positional  # the driver's raw cursor would send a %% escape as it is
        cached = _POSITIONAL_SQL[sql] = (positional, tuple(names))
    return cached


def _json_upsert_pg(pg: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> sa.TextClause:
    """The upsert of many rows given as one JSON array (bytes as hex, timestamps as naive UTC), for PostgreSQL.
    Inside a pipeline, ``executemany`` sends each row as a command of its own: a group's holdings, shipments and
    chain heads were most of its commands."""
    stmt = _JSON_UPSERTS.get((table.name, keys))
    if stmt is None:
        name = pg.identifier_preparer.quote

        def is_bytes(c: sa.Column[Any]) -> bool:
            return isinstance(c.type, sa.LargeBinary)

        declared = ", ".join(f"{name(c.name)} {'text' if is_bytes(c) else c.type.compile(dialect=pg)}"
                             for c in table.columns)
        taken = ", ".join(f"decode({name(c.name)}, 'hex')" if is_bytes(c) else name(c.name) for c in table.columns)
        updates = ", ".join(f"{name(c.name)} = excluded.{name(c.name)}" for c in table.columns if c.name not in keys)
        stmt = _JSON_UPSERTS[(table.name, keys)] = sa.text(
            f"INSERT INTO {name(table.name)} ({', '.join(name(c.name) for c in table.columns)}) SELECT {taken} "
            f"FROM json_to_recordset(CAST(:rows AS json)) AS v({declared}) "
            f"ON CONFLICT ({', '.join(name(k) for k in keys)}) DO UPDATE SET {updates}")
    return stmt


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.datetime):
        return _naive_utc(value).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class SqlUnit:
    """State reader, change applier and log writer over one open transaction."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._postgres = conn.dialect.name == "postgresql"
        self._deferred: list[merged_writes.Write] | None = None  # the writes of a ``pipelined`` block

    # ---- StateReader -----------------------------------------------------------------------------------

    def actor(self, actor_id: str) -> Actor | None:
        row = self.conn.execute(_ACTOR, {"id": actor_id}).first()
        return rows.actor_from(row) if row else None

    def actors(self) -> list[Actor]:
        return [rows.actor_from(r) for r in self.conn.execute(sa.select(t.actors).order_by(t.actors.c.id))]

    def key(self, key_id: str) -> KeyRecord | None:
        row = self.conn.execute(_KEY, {"key_id": key_id}).first()
        return rows.key_from(row) if row else None

    def keys_of(self, actor_id: str) -> list[KeyRecord]:
        q = sa.select(t.actor_keys).where(t.actor_keys.c.actor == actor_id).order_by(t.actor_keys.c.added_index)
        return [rows.key_from(r) for r in self.conn.execute(q)]

    def all_keys(self) -> list[KeyRecord]:
        q = sa.select(t.actor_keys).order_by(t.actor_keys.c.added_index)
        return [rows.key_from(r) for r in self.conn.execute(q)]

    def active_keys(self, actor_id: str) -> list[KeyRecord]:
        return [k for k in self.keys_of(actor_id) if k.status == "active"]

    def batch(self, gtin: str, lot: str) -> Batch | None:
        row = self.conn.execute(_BATCH, {"gtin": gtin, "lot": lot}).first()
        return rows.batch_from(row) if row else None

    def batches(self, gtin: str | None = None) -> list[Batch]:
        q = sa.select(t.batches).order_by(t.batches.c.commissioned_index)
        if gtin is not None:
            q = q.where(t.batches.c.gtin == gtin)
        return [rows.batch_from(r) for r in self.conn.execute(q)]

    def pack(self, gtin: str, serial: str) -> Pack | None:
        row = self.conn.execute(_PACK, {"gtin": gtin, "serial": serial}).first()
        return rows.pack_from(row) if row else None

    def packs(self, gtin: str, serials: tuple[str, ...]) -> dict[str, Pack]:
        found: dict[str, Pack] = {}
        if self._postgres:
            # one prepared query with an array parameter, whatever the number of serials (IN-lists are parsed
            # anew for every length, and a 100,000-pack commission would need dozens of them)
            # Pack(*row): the table's columns are the dataclass's fields in order (a unit test keeps them so);
            # a shipment may name hundreds of packs, and attribute access per column doubled the cost
            found.update((r[1], Pack(*r)) for r in self.conn.execute(_PACKS_PG, {"gtin": gtin, "s": list(serials)}))
            return found
        for chunk in _chunks(serials):
            q = sa.select(t.packs).where(t.packs.c.gtin == gtin, t.packs.c.serial.in_(chunk))
            found.update((r.serial, rows.pack_from(r)) for r in self.conn.execute(q))
        return found

    def pack_scan(self, gtin: str, serial: str, *, single: Iterable[str], wide: Iterable[str]
                  ) -> tuple[Pack, Batch, int, list[TrailRow]] | None:
        """A pack, its batch, the size of the log they reflect, and the (index, type, actor, received, event id,
        serial) of the batch chain's entries before that size that may concern the pack, in log order; one
        statement, so one snapshot. The entries are found by indexes: the pack's ``single``-pack events, the
        shipments that listed it, stock moved by quantity, and entries of the batch-``wide`` types. No entry body
        is read, so a scan stays fast however long the batch's history grows."""
        kinds = (tuple(sorted(single)), tuple(sorted(wide)))
        if self._postgres:
            import psycopg

            with self._driver() as raw, psycopg.RawCursor(raw) as cur:
                return pack_scan_rows(cur.execute(pack_scan_sql(self.conn.dialect, *kinds), (gtin, serial)).fetchall())
        return pack_scan_rows(self.conn.execute(_pack_scan(*kinds), {"gtin": gtin, "serial": serial}).all())

    def pack_counts(self, gtin: str, lot: str) -> dict[str, int]:
        q = (sa.select(t.packs.c.status, sa.func.count()).where(t.packs.c.gtin == gtin, t.packs.c.lot == lot)
             .group_by(t.packs.c.status))
        return {status: int(n) for status, n in self.conn.execute(q)}

    def holding(self, actor: str, gtin: str, lot: str) -> int:
        return int(self.conn.execute(_HOLDING, {"actor": actor, "gtin": gtin, "lot": lot}).scalar() or 0)

    def holdings_of_batch(self, gtin: str, lot: str) -> dict[str, int]:
        q = (sa.select(t.holdings.c.actor, t.holdings.c.quantity)
             .where(t.holdings.c.gtin == gtin, t.holdings.c.lot == lot, t.holdings.c.quantity != 0)
             .order_by(t.holdings.c.actor))
        return {a: int(q_) for a, q_ in self.conn.execute(q)}

    def batches_of_actor(self, actor: str) -> set[tuple[str, str]]:
        """Every batch the actor made, held, shipped or received."""
        found: set[tuple[str, str]] = set()
        for q in (sa.select(t.batches.c.gtin, t.batches.c.lot).where(t.batches.c.manufacturer == actor),
                  sa.select(t.holdings.c.gtin, t.holdings.c.lot).where(t.holdings.c.actor == actor),
                  sa.select(t.shipments.c.gtin, t.shipments.c.lot).where(
                      sa.or_(t.shipments.c.sender == actor, t.shipments.c.recipient == actor))):
            found.update((g, lot) for g, lot in self.conn.execute(q))
        return found

    def shipment(self, shipment_id: str) -> Shipment | None:
        row = self.conn.execute(_SHIPMENT, {"id": shipment_id}).first()
        return rows.shipment_from(row) if row else None

    def shipments_of_batch(self, gtin: str, lot: str) -> list[Shipment]:
        q = (sa.select(t.shipments).where(t.shipments.c.gtin == gtin, t.shipments.c.lot == lot)
             .order_by(t.shipments.c.shipped_index))
        return [rows.shipment_from(r) for r in self.conn.execute(q)]

    def shipments_in_transit(self, before: dt.datetime) -> list[Shipment]:
        q = (sa.select(t.shipments).where(t.shipments.c.status == "in_transit", t.shipments.c.shipped_at < before)
             .order_by(t.shipments.c.shipped_index))
        return [rows.shipment_from(r) for r in self.conn.execute(q)]

    def alert_counts(self) -> list[tuple[str, str | None, str, int]]:
        """(status, outcome, kind, count) over all alerts."""
        c = t.alerts.c
        q = sa.select(c.status, c.outcome, c.kind, sa.func.count()).group_by(c.status, c.outcome, c.kind)
        return [(s, o, k, int(n)) for s, o, k, n in self.conn.execute(q)]

    def dispensed_by_region_day(self, since: dt.datetime) -> list[tuple[str, dt.date, int]]:
        """Packs dispensed per region and day since ``since``."""
        p, a = t.packs.c, t.actors.c
        q = (sa.select(a.region, p.dispensed_at).join_from(t.packs, t.actors, p.dispensed_by == a.id)
             .where(p.status == "dispensed", p.dispensed_at >= since))
        counts: dict[tuple[str, dt.date], int] = {}
        for region, when in self.conn.execute(q):
            day = t.UTCDateTime().process_result_value(when, self.conn.dialect)
            assert day is not None
            key = (str(region), day.date())
            counts[key] = counts.get(key, 0) + 1
        return sorted((r, d, n) for (r, d), n in counts.items())

    def dwell_days(self, limit: int = 100_000) -> list[float]:
        """Days from commissioning to dispensing, for the most recently dispensed packs."""
        p, b = t.packs.c, t.batches.c
        q = (sa.select(p.dispensed_at, b.commissioned_at)
             .join_from(t.packs, t.batches, sa.and_(p.gtin == b.gtin, p.lot == b.lot))
             .where(p.status == "dispensed").order_by(p.dispensed_index.desc()).limit(limit))
        conv = t.UTCDateTime()
        out = []
        for dispensed, commissioned in self.conn.execute(q):
            d1 = conv.process_result_value(dispensed, self.conn.dialect)
            d0 = conv.process_result_value(commissioned, self.conn.dialect)
            if d1 and d0:
                out.append((d1 - d0).total_seconds() / 86400)
        return out

    def alert(self, alert_id: str) -> AlertRecord | None:
        row = self.conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id)).first()
        return rows.alert_from(row) if row else None

    def alerts(self, status: str | None = None, limit: int = 1000, *, kind: str | None = None,
               suspect: str | None = None, gtin: str | None = None, before: int | None = None) -> list[AlertRecord]:
        q = sa.select(t.alerts).order_by(t.alerts.c.idx.desc()).limit(limit)
        if before is not None:
            q = q.where(t.alerts.c.idx < before)
        for column, value in (("status", status), ("kind", kind), ("suspect", suspect), ("gtin", gtin)):
            if value is not None:
                q = q.where(t.alerts.c[column] == value)
        return [rows.alert_from(r) for r in self.conn.execute(q)]

    # ---- applying changes ----------------------------------------------------------------------------------

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            match change:
                case PutActor(actor):
                    self._upsert(t.actors, rows.actor_row(actor), ["id"])
                case PutKey(key):
                    self._upsert(t.actor_keys, rows.key_row(key), ["key_id"])
                case PutBatch(batch):
                    self._upsert(t.batches, rows.batch_row(batch), ["gtin", "lot"])
                case AddPacks(gtin, lot, serials, holder):
                    self._add_packs(gtin, lot, serials, holder)
                case PutPacks(packs):
                    self._put_packs(packs)
                case PoolPacks(gtin, lot, holder):
                    self._not_deferring()
                    self.conn.execute(
                        sa.update(t.packs).where(t.packs.c.gtin == gtin, t.packs.c.lot == lot,
                                                 t.packs.c.holder == holder, t.packs.c.status == "active")
                        .values(holder=None))
                case AdjustHolding(actor, gtin, lot, delta):
                    self._adjust_holding(actor, gtin, lot, delta)
                case PutShipment(shipment):
                    self.put_shipments([shipment])
                    if shipment.status == "in_transit":  # just shipped: record the packs it lists
                        self.add_shipment_packs(listed_packs([shipment]))
                case PutAlert(alert):
                    self.put_alerts([alert])
                case _:  # pragma: no cover
                    raise AssertionError(change)

    def _upsert(self, table: sa.Table, row: dict[str, Any], keys: list[str]) -> None:
        self._upsert_many(table, [row], keys)

    def _upsert_many(self, table: sa.Table, rows_: Sequence[dict[str, Any]], keys: list[str]) -> None:
        if self._postgres:
            # one statement per chunk; a statement may not update a row twice, so the last row of a key wins, as
            # it would row by row
            last = {tuple(r[k] for k in keys): r for r in rows_}
            stmt_pg = _json_upsert_pg(self.conn.dialect, table, tuple(keys))
            for chunk in _chunks(list(last.values())):
                self._write_rows(stmt_pg, json.dumps([{k: _json_value(v) for k, v in r.items()} for r in chunk]))
            return
        stmt = _upsert_statement(self.conn.dialect.name, table, tuple(keys))
        for chunk in _chunks(rows_, 500):
            self.conn.execute(stmt, list(chunk) if len(chunk) > 1 else chunk[0])

    def put_holdings(self, holdings: Sequence[tuple[str, str, str, int]]) -> None:
        """Set holdings to the given quantities: (actor, gtin, lot, quantity)."""
        self._upsert_many(t.holdings, [{"actor": a, "gtin": g, "lot": lot, "quantity": q}
                                       for a, g, lot, q in holdings], ["actor", "gtin", "lot"])

    def put_alerts(self, alerts: Sequence[AlertRecord]) -> None:
        self._upsert_many(t.alerts, [rows.alert_row(a) for a in alerts], ["id"])

    def put_shipments(self, shipments: Sequence[Shipment]) -> None:
        """Write shipments (their ``shipment_packs`` rows are the caller's: see ``add_shipment_packs``)."""
        self._upsert_many(t.shipments, [rows.shipment_row(s) for s in shipments], ["id"])

    def add_shipment_packs(self, listed: Sequence[tuple[str, str, str]]) -> None:
        """Record that shipments listed packs: (gtin, serial, shipment id); rows already there are kept."""
        if not listed:
            return
        if self._postgres:  # one statement whatever the number of packs (a whole batch may ship by serial)
            self._write_rows(_ADD_SHIPMENT_PACKS_PG, json.dumps(
                [{"gtin": g, "serial": s, "shipment": i} for g, s, i in listed]))
            return
        stmt = sqlite.insert(t.shipment_packs).on_conflict_do_nothing()
        for chunk in _chunks([{"gtin": g, "serial": s, "shipment": i} for g, s, i in listed]):
            self.conn.execute(stmt, list(chunk))

    def _add_packs(self, gtin: str, lot: str, serials: tuple[str, ...], holder: str) -> None:
        self._not_deferring()
        if self._postgres and len(serials) > CHUNK:
            # COPY: a 100,000-pack batch in a fraction of a second instead of 100,000 row inserts
            raw = self.conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur, cur.copy("COPY packs (gtin, serial, lot, status, holder) FROM STDIN") as copy:
                for s in serials:
                    copy.write_row((gtin, s, lot, "active", holder))
            return
        base = {"gtin": gtin, "lot": lot, "status": "active", "holder": holder, "dispensed_by": None,
                "dispensed_at": None, "dispensed_index": None}
        for chunk in _chunks(serials):
            self.conn.execute(sa.insert(t.packs), [{**base, "serial": s} for s in chunk])

    def _put_packs(self, packs: tuple[Pack, ...]) -> None:
        if self._postgres and packs:
            # one UPDATE joined to the new values (one JSON parameter), instead of one UPDATE per pack; through
            # the driver even for one pack (a group of one dispense), as the group's other writes
            self._write_rows(_PUT_PACKS_PG, json.dumps([
                {"gtin": p.gtin, "serial": p.serial, "status": p.status, "holder": p.holder, "by": p.dispensed_by,
                 "at": at.isoformat() if (at := _naive_utc(p.dispensed_at)) is not None else None,
                 "ix": p.dispensed_index} for p in packs]))
            return
        params = [{"k_gtin": p.gtin, "k_serial": p.serial, "b_status": p.status, "b_holder": p.holder,
                   "b_dispensed_by": p.dispensed_by, "b_dispensed_at": p.dispensed_at,
                   "b_dispensed_index": p.dispensed_index} for p in packs]
        if len(params) == 1:
            self.conn.execute(_PUT_PACK, params[0])
            return
        for chunk in _chunks(params):
            self.conn.execute(_PUT_PACK, list(chunk))

    def _adjust_holding(self, actor: str, gtin: str, lot: str, delta: int) -> None:
        self._not_deferring()
        params = {"b_actor": actor, "b_gtin": gtin, "b_lot": lot, "b_delta": delta}
        if self.conn.execute(_ADD_HOLDING, params).rowcount == 0:
            self.conn.execute(_NEW_HOLDING, params)

    # ---- the log --------------------------------------------------------------------------------------------

    def lock_head(self) -> tuple[int, bytes]:
        """Read the log head; on PostgreSQL also lock it until commit (SQLite: BEGIN IMMEDIATE already did)."""
        q = sa.select(t.log_head.c.tree_size, t.log_head.c.root_hash).where(t.log_head.c.id == 1)
        if self._postgres:
            q = q.with_for_update()
        row = self.conn.execute(q).one()
        return int(row.tree_size), bytes(row.root_hash)

    def lock_head_versioned(self) -> tuple[int, bytes, int]:
        """``lock_head`` plus the number of projection rewrites, read from the locked row itself: a statement that
        waited for the lock behind a rewrite sees it (a subquery would answer from the snapshot before the wait)."""
        c = t.log_head.c
        q = sa.select(c.tree_size, c.root_hash, c.rewrites).where(c.id == 1)
        if self._postgres:
            q = q.with_for_update()
        size, root, rewrites = self.conn.execute(q).one()
        return int(size), bytes(root), int(rewrites)

    def count_rewrite(self) -> None:
        """A projection rewrite: running servers drop what they carried of the projections (``lock_head_versioned``)."""
        self.conn.execute(sa.update(t.log_head).where(t.log_head.c.id == 1)
                          .values(rewrites=t.log_head.c.rewrites + 1))

    def head(self) -> tuple[int, bytes]:
        row = self.conn.execute(sa.select(t.log_head.c.tree_size, t.log_head.c.root_hash)).one()
        return int(row.tree_size), bytes(row.root_hash)

    def set_head(self, size: int, root: bytes) -> None:
        self._small_write(_SET_HEAD, {"size": size, "root": root})

    def entry_by_event_id(self, event_id: str) -> StoredEntry | None:
        row = self.conn.execute(_ENTRY_BY_EVENT, {"event_id": event_id}).first()
        return _stored(row) if row else None

    def entry(self, index: int) -> StoredEntry | None:
        row = self.conn.execute(sa.select(t.log_entries).where(t.log_entries.c.idx == index)).first()
        return _stored(row) if row else None

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        # a page of an audit: untyped columns, taken by position, cost half as much as typed rows by name
        return [rows.entry_from_columns(r) for r in self.conn.execute(_ENTRIES_PAGE, {"start": start, "end": end})]

    def audit_rows(self, start: int, end: int) -> list[tuple[int, bytes, bytes, tuple[Any, ...]]]:
        """Entries ``start`` to ``end - 1`` as an audit compares them: index, entry hash, leaf, and the indexed
        columns (chain, prev, event id, actor, event type, GTIN, lot, serial); plain tuples, no row objects."""
        return [rows.audit_row(r) for r in self.conn.execute(_AUDIT_ROWS, {"start": start, "end": end})]

    def leaf_sizes(self, start: int, end: int) -> list[tuple[int, int]]:
        """(index, byte length) of the entries stored from ``start`` to ``end - 1``, in order, without reading the
        leaves themselves (PostgreSQL reads a TOASTed value's length from its pointer, SQLite a blob's from the
        record header)."""
        return [(int(i), int(n)) for i, n in self.conn.execute(_LEAF_SIZES, {"start": start, "end": end})]

    def page_end(self, start: int, end: int, max_bytes: int) -> int:
        """Where a page of entries from ``start`` ends so that its leaves hold at most ``max_bytes`` bytes (at
        least one entry), at most at ``end``. A commission lists every serial of its batch (about 2 MB for 100,000
        packs), so a page counted in entries alone can hold gigabytes. Indexes missing from the store (a damaged
        log) stay inside the page, where its reader finds them missing."""
        total, first = 0, True
        for index, n in self.leaf_sizes(start, end):
            if not first and total + n > max_bytes:
                return index
            total, first = total + n, False
        return end

    def registry_entries(self) -> list[StoredEntry]:
        """Every entry of the actor registry's chains (registrations, key rotations and revocations)."""
        q = sa.select(t.log_entries).where(t.log_entries.c.chain.like("actor/%")).order_by(t.log_entries.c.idx)
        return [_stored(r) for r in self.conn.execute(q)]

    def chain_entries(self, chain: str) -> list[StoredEntry]:
        q = sa.select(t.log_entries).where(t.log_entries.c.chain == chain).order_by(t.log_entries.c.idx)
        return [_stored(r) for r in self.conn.execute(q)]

    def insert_entries(self, entries: Sequence[tuple[Entry, str, str | None, str | None]]) -> None:
        """Insert log entries, each with its event type, GTIN and lot (indexed columns), in few statements."""
        if self._postgres:
            batch: list[dict[str, Any]] = []
            size = 0
            for e, kind, gtin, lot in entries:
                leaf = e.leaf().hex()
                if batch and size + len(leaf) > ENTRY_BYTES_PER_STATEMENT:
                    self._write_rows(_INSERT_ENTRIES_PG, json.dumps(batch))
                    batch, size = [], 0
                batch.append({"idx": e.index, "entry_hash": e.hash.hex(), "event_id": e.signed.event_id,
                              "event_type": kind, "actor": str(e.signed.body.get("actor")), "chain": e.chain,
                              "prev": e.prev.hex() if e.prev is not None else None, "gtin": gtin, "lot": lot,
                              "received_at": _naive_utc(e.received).isoformat(),
                              "leaf": leaf, "serial": indexed_columns(kind, None, e)[2]})
                size += len(leaf)
            if batch:
                self._write_rows(_INSERT_ENTRIES_PG, json.dumps(batch))
            return
        rows_ = [{"idx": e.index, "entry_hash": e.hash, "event_id": e.signed.event_id, "event_type": kind,
                  "actor": str(e.signed.body.get("actor")), "chain": e.chain, "prev": e.prev, "gtin": gtin,
                  "lot": lot, "received_at": e.received, "leaf": e.leaf(),
                  "serial": indexed_columns(kind, None, e)[2]} for e, kind, gtin, lot in entries]
        for chunk in _chunks(rows_, 500):
            self.conn.execute(sa.insert(t.log_entries), list(chunk))

    def _not_deferring(self) -> None:
        """A statement made through SQLAlchemy (or COPY) runs at once: inside ``pipelined`` it would overtake the
        writes deferred before it."""
        if self._deferred is not None:
            raise AssertionError("a statement that cannot be deferred was made inside pipelined()")

    def _small_write(self, stmt: sa.Insert | sa.Update, params: dict[str, Any]) -> None:
        """A one-row write every group makes (its checkpoint, the log head). On PostgreSQL it goes through the
        driver like the group's other writes: SQLAlchemy's execute cost the sequencer about 0.2 ms of CPU per
        statement, and a group of one dispense sent three of them. Parameters are given as to SQLAlchemy; on the
        driver's path timestamps are stored as ``UTCDateTime`` stores them (naive UTC), which SQLAlchemy's type
        would otherwise have done."""
        if not self._postgres:
            self.conn.execute(stmt, params)
            return
        import psycopg

        sql, bound = _small_sql(self.conn.dialect, stmt)
        values = {**bound, **{k: _naive_utc(v) if isinstance(v, dt.datetime) else v for k, v in params.items()}}
        positional, names = _positional(sql)
        ordered = [values[n] for n in names]
        if self._deferred is not None:
            self._deferred.append(merged_writes.write(positional, ordered))
            return
        with self._driver() as raw, psycopg.RawCursor(raw) as cur:
            cur.execute(positional, ordered, prepare=True)

    def _write_rows(self, stmt: sa.TextClause, rows_json: str) -> None:
        """Run a PostgreSQL write whose one parameter is a JSON array of rows, through the driver (in the unit's
        transaction; inside ``pipelined``, at its end, merged with the others)."""
        import psycopg

        sql = _rows_sql(self.conn.dialect, stmt)
        if self._deferred is not None:
            self._deferred.append(merged_writes.write(sql, (rows_json,)))
            return
        with self._driver() as raw, psycopg.RawCursor(raw) as cur:
            cur.execute(sql, (rows_json,), prepare=True)

    @contextmanager
    def pipelined(self, *, commit: bool = False) -> Iterator[None]:
        """Make the writes inside together, at the end of the block (PostgreSQL): merged into as few statements
        as ``ledger.storage.merged_writes`` allows and sent without waiting for each one's answer (pipeline
        mode), so a group's writes cost one round trip and, for a group of dispenses, one statement. Only the
        adapter's own group writes (projections, entries, nodes, chain heads, checkpoint, log head) may be made
        inside, and nothing may be read. An error surfaces when the block ends. ``commit``: end the transaction
        with them, in the same round trip (the unit then commits nothing more, unless it reads again); on
        SQLite the unit commits when it ends, as always."""
        if not self._postgres:
            yield
            return
        import psycopg

        self._deferred = []
        try:
            yield
            statements = merged_writes.merged(self._deferred)
        finally:
            self._deferred = None
        with self._driver() as raw, raw.pipeline():
            for sql, params in statements:
                with psycopg.RawCursor(raw) as cur:
                    cur.execute(sql, params, prepare=True)
            if commit:
                # COMMIT as one more statement of the pipeline, not the driver's commit(): inside a pipeline that
                # stops sending once its last command is queued and waits for answers that cannot come while part
                # of a large statement is unsent (psycopg 3.3.9; 2 MB over a Unix socket and 40 MB over loopback
                # TCP hung here). Leaving the pipeline sends everything before it waits.
                with psycopg.RawCursor(raw) as cur:
                    cur.execute("COMMIT")

    @property
    def pipelines_reads(self) -> bool:
        """Whether ``lock_and_read`` is available (PostgreSQL; SQLite is read one by one, in process anyway)."""
        return self._postgres

    def lock_and_read(self, wants: GroupWants) -> GroupReads:
        """Lock the log head and read what a group wants, in one round trip (``ledger.storage.group_reads``)."""
        assert self._postgres, "only PostgreSQL pipelines reads (see pipelines_reads)"
        with self._driver() as raw:
            return group_reads.lock_and_read(raw, wants)

    @contextmanager
    def _driver(self) -> Iterator[Any]:
        """The psycopg connection under this unit, for statements sent in pipeline mode or the hottest reads;
        their errors are raised as SQLAlchemy raises errors of its own statements."""
        import psycopg

        raw = self.conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        try:
            yield raw
        except psycopg.Error as exc:
            # raised by the driver, not through SQLAlchemy's execute: raise what it would have raised, and drop a
            # broken connection from the pool as it would have
            lost = self.conn.dialect.is_disconnect(cast(Any, exc), self.conn.connection, None)
            if lost:
                self.conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=lost) from exc

    def existing_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(event_ids))
        if self._postgres:
            return set(self.conn.execute(_EVENT_IDS_PG, {"ids": wanted}).scalars())
        found: set[str] = set()
        for chunk in _chunks(wanted, 500):
            q = sa.select(t.log_entries.c.event_id).where(t.log_entries.c.event_id.in_(chunk))
            found.update(self.conn.execute(q).scalars())
        return found

    def _rows_by_key(self, table: sa.Table, key: Sequence[str], wanted: Iterable[Any]) -> Iterator[Any]:
        """The rows of ``table`` whose ``key`` columns (one, or several with tuples wanted) are among ``wanted``.
        On PostgreSQL one statement joined to arrays: its text never changes, so it is prepared once (an IN-list
        is a new statement for every length, and SQLAlchemy renders each element of it). Elsewhere bounded
        IN-lists."""
        keys = list(dict.fromkeys(wanted))
        if not keys:
            return
        if self._postgres:
            columns = [keys] if len(key) == 1 else [list(k) for k in zip(*keys, strict=True)]
            yield from self.conn.execute(_by_key_pg(table, tuple(key)),
                                         {f"k{i}": list(c) for i, c in enumerate(columns)})
            return
        column = table.c[key[0]] if len(key) == 1 else sa.tuple_(*(table.c[k] for k in key))
        for chunk in _chunks(keys, 500):
            yield from self.conn.execute(sa.select(table).where(column.in_(chunk)))

    def actors_by_id(self, actor_ids: Iterable[str]) -> dict[str, Actor]:
        return {r.id: rows.actor_from(r) for r in self._rows_by_key(t.actors, ["id"], actor_ids)}

    def shipments_by_id(self, shipment_ids: Iterable[str]) -> dict[str, Shipment]:
        return {r.id: rows.shipment_from(r) for r in self._rows_by_key(t.shipments, ["id"], shipment_ids)}

    def holdings_of(self, keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
        """Quantities held, by (actor, gtin, lot); absent keys hold nothing."""
        return {(r.actor, r.gtin, r.lot): int(r.quantity)
                for r in self._rows_by_key(t.holdings, ["actor", "gtin", "lot"], keys)}

    def keys_by_id(self, key_ids: Iterable[str]) -> dict[str, KeyRecord]:
        return {r.key_id: rows.key_from(r) for r in self._rows_by_key(t.actor_keys, ["key_id"], key_ids)}

    def chain_head(self, chain: str) -> tuple[bytes, int, int] | None:
        row = self.conn.execute(_CHAIN_HEAD, {"chain": chain}).first()
        return (bytes(row.head_hash), int(row.head_index), int(row.length)) if row else None

    def chain_heads(self, chains: Iterable[str]) -> dict[str, tuple[bytes, int, int]]:
        """``chain_head`` for many chains at once; absent chains have no head."""
        return {r.chain: (bytes(r.head_hash), int(r.head_index), int(r.length))
                for r in self._rows_by_key(t.chain_heads, ["chain"], chains)}

    def set_chain_heads(self, heads: Sequence[tuple[str, bytes, int, int]]) -> None:
        """Set chain heads: (chain, head hash, head index, length)."""
        self._upsert_many(t.chain_heads, [{"chain": c, "head_hash": h, "head_index": i, "length": n}
                                          for c, h, i, n in heads], ["chain"])

    def nodes(self, ids: Iterable[NodeID]) -> dict[NodeID, bytes]:
        wanted = list(dict.fromkeys(ids))
        if self._postgres:
            # one prepared statement whatever the number of nodes: a proof is read in one index probe per node,
            # with no tuple IN-list to render and parse for each proof
            rows = self.conn.execute(_NODES_PG, _node_arrays(wanted))
            return {NodeID(lv, i): bytes(h) for lv, i, h in rows}
        found: dict[NodeID, bytes] = {}
        for chunk in _chunks(wanted, 500):
            q = sa.select(t.merkle_nodes).where(
                sa.tuple_(t.merkle_nodes.c.level, t.merkle_nodes.c.idx).in_([(n.level, n.index) for n in chunk]))
            found.update((NodeID(r.level, r.idx), bytes(r.hash)) for r in self.conn.execute(q))
        return found

    def proof_material(self, ids: Iterable[NodeID], *, checkpoint: int = -1, first: int = -1,
                       index: int = -1) -> ProofMaterial:
        """The stored nodes among ``ids`` and the log's size, with the roots of the checkpoints of sizes
        ``checkpoint`` and ``first`` and the hash of entry ``index``'s stored leaf (each None if there is none, or
        if not asked for); one statement on PostgreSQL."""
        wanted = list(dict.fromkeys(ids))
        if not self._postgres:
            cp, old = (self.checkpoint(n) if n >= 0 else None for n in (checkpoint, first))
            entry = self.entry(index) if index >= 0 else None
            return ProofMaterial(self.nodes(wanted), self.head()[0], cp.root_hash if cp else None,
                                 old.root_hash if old else None, leaf_hash(entry.leaf) if entry else None)
        import psycopg

        with self._driver() as raw, psycopg.RawCursor(raw) as cur:
            return proof_material_rows(cur.execute(PROOF_PG, proof_params(wanted, checkpoint, first, index)).fetchall())

    def nodes_completed(self, start: int, end: int) -> dict[NodeID, bytes]:
        """The stored Merkle nodes that appending leaves ``start`` to ``end - 1`` completes, in one statement of
        index ranges: node (level l, index j) is completed by leaf (j + 1)·2^l - 1, so at level l they are
        indices ``start >> l`` to ``(end >> l) - 1``."""
        c = t.merkle_nodes.c
        ranges = []
        level = 0
        while end >> level > start >> level:
            ranges.append(sa.and_(c.level == level, c.idx >= start >> level, c.idx < end >> level))
            level += 1
        if not ranges:
            return {}
        q = sa.select(c.level, c.idx, c.hash).where(sa.or_(*ranges))
        return {NodeID(lv, i): _node_hash(lv, i, h) for lv, i, h in self.conn.execute(q)}

    def insert_nodes(self, nodes: Sequence[tuple[NodeID, bytes]]) -> None:
        if self._postgres:
            self._write_rows(_INSERT_NODES_PG, json.dumps(
                [{"level": n.level, "idx": n.index, "hash": h.hex()} for n, h in nodes]))
            return
        for chunk in _chunks(nodes):
            self.conn.execute(sa.insert(t.merkle_nodes),
                              [{"level": n.level, "idx": n.index, "hash": h} for n, h in chunk])

    def insert_checkpoint(self, size: int, root: bytes, note: str, created: dt.datetime) -> None:
        self._small_write(_INSERT_CHECKPOINT, {"size": size, "root": root, "note": note, "created": created})

    def checkpoint(self, size: int | None = None) -> StoredCheckpoint | None:
        q = sa.select(t.checkpoints)
        q = q.where(t.checkpoints.c.tree_size == size) if size is not None else q.order_by(
            t.checkpoints.c.tree_size.desc()).limit(1)
        row = self.conn.execute(q).first()
        return _checkpoint(row) if row else None

    def checkpoints(self, since: int = 0) -> list[StoredCheckpoint]:
        """The stored checkpoints for tree sizes from ``since`` on."""
        q = sa.select(t.checkpoints).where(t.checkpoints.c.tree_size >= since).order_by(t.checkpoints.c.tree_size)
        return [_checkpoint(r) for r in self.conn.execute(q)]

    def cosignature_lines(self, tree_size: int) -> list[str]:
        q = (sa.select(t.cosignatures.c.line).where(t.cosignatures.c.tree_size == tree_size)
             .order_by(t.cosignatures.c.witness))
        return [str(line) for line in self.conn.execute(q).scalars()]

    def cosignatures(self, since: int = 0) -> list[tuple[int, str, str, int]]:
        """The stored witness cosignatures for tree sizes from ``since`` on: (tree size, witness, signature line,
        the time stored beside it), in tree-size order."""
        c = t.cosignatures.c
        q = (sa.select(c.tree_size, c.witness, c.line, c.timestamp).where(c.tree_size >= since)
             .order_by(c.tree_size, c.witness))
        return [(int(n), str(w), str(line), int(ts)) for n, w, line, ts in self.conn.execute(q)]

    def put_cosignature(self, tree_size: int, witness: str, line: str, timestamp: int) -> None:
        c = t.cosignatures.c
        self.conn.execute(sa.delete(t.cosignatures).where(c.tree_size == tree_size, c.witness == witness))
        self.conn.execute(sa.insert(t.cosignatures).values(tree_size=tree_size, witness=witness, line=line,
                                                           timestamp=timestamp))

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self.conn.execute(sa.select(t.meta.c.key, t.meta.c.value))}

    def put_meta(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self.conn.execute(sa.insert(t.meta).values(key=k, value=v))

    def snapshot(self) -> ProjectionSnapshot:
        """Read every projection, normalised through the record mappers so values compare like for like."""
        def load(table: sa.Table, key: Any, to_row: Any, from_row: Any) -> dict[Any, dict[str, Any]]:
            out = {}
            for r in self.conn.execute(sa.select(table)):
                values = to_row(from_row(r)) if from_row else dict(r._mapping)
                out[key(values)] = values
            return out

        return ProjectionSnapshot(
            actors=load(t.actors, lambda r: r["id"], rows.actor_row, rows.actor_from),
            actor_keys=load(t.actor_keys, lambda r: r["key_id"], rows.key_row, rows.key_from),
            batches=load(t.batches, lambda r: (r["gtin"], r["lot"]), rows.batch_row, rows.batch_from),
            packs=load(t.packs, lambda r: (r["gtin"], r["serial"]), rows.pack_row, rows.pack_from),
            holdings={k: v for k, v in load(t.holdings, lambda r: (r["actor"], r["gtin"], r["lot"]),
                                               lambda r: r, None).items() if v["quantity"] != 0},
            shipments=load(t.shipments, lambda r: r["id"], rows.shipment_row, rows.shipment_from),
            shipment_packs=load(t.shipment_packs, lambda r: (r["gtin"], r["serial"], r["shipment"]), lambda r: r,
                                None),
            alerts=load(t.alerts, lambda r: r["id"], rows.alert_row, rows.alert_from),
            chain_heads={k: {**v, "head_hash": bytes(v["head_hash"])}
                         for k, v in load(t.chain_heads, lambda r: r["chain"], lambda r: r, None).items()},
        )

    def insert_packs(self, packs: Sequence[Pack]) -> None:
        for chunk in _chunks([rows.pack_row(p) for p in packs]):
            self.conn.execute(sa.insert(t.packs), list(chunk))

    def clear_projections(self) -> None:
        for table in t.PROJECTION_TABLES:
            self.conn.execute(sa.delete(table))


def listed_packs(shipments: Iterable[Shipment]) -> list[tuple[str, str, str]]:
    """(gtin, serial, shipment id) for every pack the shipments list by serial."""
    return [(s.gtin, serial, s.id) for s in shipments for serial in s.serials or ()]


def _node_arrays(ids: Sequence[NodeID]) -> dict[str, list[int]]:
    """Node ids as the two array parameters the node statements join to."""
    return {"levels": [n.level for n in ids], "idxs": [n.index for n in ids]}


def proof_params(ids: Sequence[NodeID], checkpoint: int, first: int, index: int) -> tuple[Any, ...]:
    """``PROOF_PG``'s parameters (-1: not asked for)."""
    # with no node to read, a node that cannot exist (a leaf before the first; a row it matched would be read as
    # a node, which no plan asks for): empty arrays carry no element type, which would make the driver prepare a
    # statement of its own, one PostgreSQL kept planning afresh (0.32 against 0.21 ms)
    arrays = _node_arrays(ids or [NodeID(0, -1)])
    return checkpoint, first, index, arrays["levels"], arrays["idxs"]


def proof_material_rows(rows: Iterable[Sequence[Any]]) -> ProofMaterial:
    """``PROOF_PG``'s rows as what they say: nodes, and the rows of negative level it adds (see there)."""
    out = ProofMaterial({})
    for lv, i, h in rows:
        if lv >= 0:
            out.nodes[NodeID(lv, i)] = bytes(h)
        elif lv == -1:
            out.log_size = int(i)
        elif lv == -2:
            out.root = bytes(h)
        elif lv == -4:
            out.first_root = bytes(h)
        else:
            out.leaf_hash = bytes(h)
    return out


@overload
def _naive_utc(when: dt.datetime) -> dt.datetime: ...
@overload
def _naive_utc(when: None) -> None: ...
@overload
def _naive_utc(when: dt.datetime | None) -> dt.datetime | None: ...
def _naive_utc(when: dt.datetime | None) -> dt.datetime | None:
    """How ``UTCDateTime`` stores a timestamp, for statements that bypass SQLAlchemy's type processing."""
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when is not None else None


_AUDIT_ROWS = sa.text(
    "SELECT idx, entry_hash, leaf, chain, prev, event_id, actor, event_type, gtin, lot, serial "
    "FROM log_entries WHERE idx >= :start AND idx < :end ORDER BY idx")
_LEAF_SIZES = sa.text("SELECT idx, length(leaf) FROM log_entries WHERE idx >= :start AND idx < :end ORDER BY idx")
_ENTRIES_PAGE = sa.text(
    f"SELECT {rows.ENTRY_COLUMNS} FROM log_entries WHERE idx >= :start AND idx < :end ORDER BY idx")


def _stored(row: Any) -> StoredEntry:
    i = int(row.idx)
    return StoredEntry(i, rows.blob(row.entry_hash, "entry", i, "entry_hash"), rows.blob(row.leaf, "entry", i, "leaf"),
                       row.chain, rows.blob(row.prev, "entry", i, "prev") if row.prev is not None else None,
                       row.event_id, row.event_type, row.actor, row.gtin, row.lot, row.received_at, row.serial)


def _node_hash(level: int, index: int, h: Any) -> bytes:
    return h if type(h) is bytes else rows.blob(h, f"Merkle node at level {level}, index", index, "hash")


def _checkpoint(row: Any) -> StoredCheckpoint:
    size = int(row.tree_size)
    return StoredCheckpoint(size, rows.blob(row.root_hash, "checkpoint of tree size", size, "root_hash"),
                            rows.text(row.note, "checkpoint of tree size", size, "note"), row.created_at)


class SqlStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def write(self) -> Iterator[SqlUnit]:
        with _translated(self.db), self.db.writer.begin() as conn:
            yield SqlUnit(conn)

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[SqlUnit]:
        """``snapshot``: every statement sees the same snapshot on PostgreSQL too (REPEATABLE READ; its default,
        READ COMMITTED, gives each statement its own), for readers that compare rows read by several statements.
        SQLite's read transactions always hold one snapshot."""
        with _translated(self.db), self.db.reader.connect() as conn:
            if snapshot and conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield SqlUnit(conn)

    @contextmanager
    def read_statements(self) -> Iterator[SqlUnit]:
        """Reads where each statement may see its own snapshot: on PostgreSQL no BEGIN and no COMMIT, two
        round trips fewer. For callers that make one statement's snapshot enough (``pack_scan``)."""
        with _translated(self.db), self.db.reader.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield SqlUnit(conn)


@contextmanager
def _translated(db: Database) -> Iterator[None]:
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        if isinstance(exc.orig, Exception) and "locked" in str(exc.orig):
            raise StorageUnavailable(f"the ledger database is busy: {exc.orig}",
                                     public="the ledger database is busy; nothing was written") from exc
        raise StorageUnavailable(f"the ledger database {redact(db.url)} is unavailable: {exc.orig}",
                                 public="the ledger database is unavailable; nothing was written") from exc
    except sa.exc.ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege: a user that may only read
            raise
        raise StorageUnavailable(f"the ledger database {redact(db.url)} refused it: {exc.orig}; nothing was written",
                                 public="the ledger database refused the write; nothing was written") from exc


def put_personal_data(unit: SqlUnit, data_hash: str, salt: bytes, content: str, created: dt.datetime) -> None:
    unit.conn.execute(sa.insert(t.personal_data).values(data_hash=data_hash, salt=salt, content=content,
                                                        created_at=created))


def erase_personal_data(unit: SqlUnit, data_hash: str) -> bool:
    return bool(unit.conn.execute(sa.delete(t.personal_data).where(t.personal_data.c.data_hash == data_hash))
                .rowcount)


def prove_entries(unit: SqlUnit, entries: Sequence[StoredEntry],
                  tree_size: int) -> list[tuple[StoredEntry, list[bytes]]]:
    """Inclusion proofs for many entries with one fetch of all the nodes they need."""
    plans = [inclusion_plan(e.index, tree_size) for e in entries]
    nodes = unit.nodes(n for p in plans for n in p.ids)
    return [(e, p.proof(nodes)) for e, p in zip(entries, plans, strict=True)]
