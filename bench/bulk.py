"""A fast loader for big ledgers (10^5 to 10^6 entries), built with the ledger's own domain code.

Appending 10^6 entries through ``Ledger.append`` takes hours on this machine (see ``appends``), so the big
logs are built here: the same events (registrations, commissions, shipments, receipts, then mostly
dispenses), signed with the actors' keys, decided by the same custody rules (``ledger.custody.decide``) over
an in-memory state, wrapped in ``Entry`` with chain links, hashed into a ``CompactRange`` that yields the
Merkle nodes, with a signed checkpoint every ``CHECKPOINT_EVERY`` entries, exactly as ``Ledger._write`` and
``Ledger.append`` lay them out. Rows are bulk-inserted (log entries, Merkle nodes, checkpoints, log head,
chain heads) and the projections are written from the final in-memory state, so the result passes
``athar audit verify`` and accepts further appends through the normal API.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import database, vacuum_analyze
from bench.world import Signable, World, build_world, mixed, pool_sizes
from ledger import events as ev
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.custody import Context, decide
from ledger.entry import EVENT_PURPOSE, Entry, SignedEvent, indexed_columns
from ledger.home import Home, init_home, open_ledger
from ledger.merkle import CompactRange, leaf_hash
from ledger.replay import MemoryState
from ledger.service import Ledger
from ledger.storage import rows
from ledger.storage import tables as t
from ledger.storage.database import Database
from signing import KeyPair

CHECKPOINT_EVERY = 1000  # one checkpoint per 1,000 entries, like a busy group-committing sequencer
#: one checkpoint per entry: a log written at low traffic, where each event is a group of its own
EVERY_ENTRY = 1
FLUSH_EVERY = 20_000


@dataclass
class BigLedger:
    home: Path
    url: str
    ledger: Ledger
    db: Database
    world: World
    size: int
    build_seconds: float


_KEYS: dict[str, KeyPair] = {}


def _init(seeds: dict[str, bytes]) -> None:
    _KEYS.clear()
    _KEYS.update({a: KeyPair.from_seed(s) for a, s in seeds.items()})


def _sign(items: Sequence[Signable]) -> list[tuple[str, bytes]]:
    return [(_KEYS[a].key_id, _KEYS[a].sign(EVENT_PURPOSE, body)) for a, body in items]


def sign_raw(world: World, items: Sequence[Signable]) -> list[SignedEvent]:
    seeds = {a: k.seed for a, k in world.keys.items()}
    seeds[ev.ROOT_ACTOR] = world.root.seed
    n = mp.cpu_count()
    size = max(1000, math.ceil(len(items) / (n * 8)))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    with mp.get_context("fork").Pool(n, initializer=_init, initargs=(seeds,)) as pool:
        sigs = [s for part in pool.map(_sign, chunks) for s in part]
    return [SignedEvent(body, kid, sig) for (_, body), (kid, sig) in zip(items, sigs, strict=True)]


def load(ledger: Ledger, db: Database, signed: Sequence[SignedEvent], *, start_time: dt.datetime | None = None,
         say: Callable[[str], None] = print, checkpoint_every: int = CHECKPOINT_EVERY) -> int:
    """Lay ``signed`` out as log entries of an empty ledger, with a signed checkpoint every ``checkpoint_every``
    entries; return the tree size."""
    with ledger.store.read() as u:
        if u.head()[0] != 0:
            raise RuntimeError("the bulk loader needs an empty ledger")
    now = start_time or dt.datetime.now(dt.UTC)
    state = MemoryState()
    tree = CompactRange()
    heads: dict[str, tuple[bytes, int, int]] = {}
    entries: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    cfg = ledger.config

    def flush(final: bool = False) -> None:
        with db.writer.begin() as conn:
            for table, data in ((t.log_entries, entries), (t.merkle_nodes, nodes), (t.checkpoints, checkpoints)):
                for i in range(0, len(data), 5000):
                    conn.execute(sa.insert(table), data[i:i + 5000])
                data.clear()
            if final:
                conn.execute(sa.update(t.log_head).where(t.log_head.c.id == 1)
                             .values(tree_size=tree.size, root_hash=tree.root()))
                _write_projections(conn, state, heads)

    for index, s in enumerate(signed):
        event = ev.parse_event(s.body)
        decision = decide(event, Context(index, now), state)
        state.apply(decision.changes)
        chain = decision.chain
        head = heads.get(chain)
        entry = Entry(index, now, chain, head[0] if head else None, s)
        leaf = entry.leaf()
        h = leaf_hash(leaf)
        # the columns the appender stores (the serial column too: a scan finds a pack's events through it)
        gtin, lot, serial = indexed_columns(event.type, event, entry)
        entries.append({"idx": index, "entry_hash": h, "event_id": s.event_id, "event_type": event.type,
                        "actor": str(s.body.get("actor")), "chain": chain, "prev": entry.prev, "gtin": gtin,
                        "lot": lot, "serial": serial, "received_at": now, "leaf": leaf})
        heads[chain] = (h, index, (head[2] if head else 0) + 1)
        nodes.extend({"level": n.level, "idx": n.index, "hash": nh} for n, nh in tree.append(h))
        if tree.size % checkpoint_every == 0 or index == len(signed) - 1:
            note = sign_checkpoint(Checkpoint(cfg.origin, tree.size, tree.root()), cfg.origin, cfg.ledger_key)
            checkpoints.append({"tree_size": tree.size, "root_hash": tree.root(), "note": note, "created_at": now})
        if len(entries) >= FLUSH_EVERY:
            flush()
            say(f"      loaded {tree.size}/{len(signed)}")
    flush(final=True)
    return tree.size


def _write_projections(conn: sa.Connection, state: MemoryState, heads: dict[str, tuple[bytes, int, int]]) -> None:
    def put(table: sa.Table, data: list[dict[str, Any]]) -> None:
        for i in range(0, len(data), 5000):
            conn.execute(sa.insert(table), data[i:i + 5000])

    put(t.actors, [rows.actor_row(a) for a in state.actors.values()])
    put(t.actor_keys, [rows.key_row(k) for k in state.keys.values()])
    put(t.batches, [rows.batch_row(b) for b in state.batches.values()])
    put(t.packs, [rows.pack_row(p) for p in state.packs_.values()])
    put(t.holdings, [{"actor": a, "gtin": g, "lot": lot, "quantity": q} for (a, g, lot), q in state.holdings.items()])
    put(t.shipments, [rows.shipment_row(s) for s in state.shipments.values()])
    put(t.shipment_packs, [{"gtin": s.gtin, "serial": serial, "shipment": s.id} for s in state.shipments.values()
                           for serial in s.serials or ()])
    put(t.alerts, [rows.alert_row(a) for a in state.alerts.values()])
    put(t.chain_heads, [{"chain": c, "head_hash": h, "head_index": i, "length": n} for c, (h, i, n) in heads.items()])


@contextlib.contextmanager
def big_ledger(kind: str, entries: int, *, say: Callable[[str], None] = print,
               checkpoint_every: int = CHECKPOINT_EVERY) -> Iterator[BigLedger]:
    """A fresh ledger of ``entries`` entries (set-up events, then 85% dispenses, 10% shipments, 5% receipts), with a
    checkpoint every ``checkpoint_every`` entries."""
    with database(kind) as (home, url):
        init_home(home, database_url=url)
        ledger, db = open_ledger(home, url)
        try:
            world = build_world(Home(home).root_key(), **{f"n_{k}": v for k, v in pool_sizes(entries).items()})
            items: list[Signable] = [x for _, phase in world.phases for x in phase] + mixed(world)
            items = items[:entries]
            t0 = time.perf_counter()
            signed = sign_raw(world, items)
            t1 = time.perf_counter()
            size = load(ledger, db, signed, say=say, checkpoint_every=checkpoint_every)
            t2 = time.perf_counter()
            vacuum_analyze(url)  # as autovacuum would have by the time a log is this big
            say(f"    built a {kind} ledger of {size} entries (signing {t1 - t0:.1f} s, loading {t2 - t1:.1f} s)")
            if os.environ.get("ATHAR_BENCH_KEEP"):
                say(f"    kept for inspection: --data-dir {home} --db '{url}'")
            yield BigLedger(home, url, ledger, db, world, size, t2 - t0)
        finally:
            db.dispose()
