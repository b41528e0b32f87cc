"""One group append must decide exactly as the same events appended one by one.

A group reads the projections once, keeps its changes in memory and writes them at the end
(``ledger.group_state``). Random interleavings of shipments (by serial and by quantity), receipts, refusals,
returns, dispenses, undos, destructions and recalls, many of them refused, are appended as a single group to
one ledger and one at a time to another with the same actors and keys: every outcome, every projection row
and the replay of the log (``rebuild``) must agree.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledger import errors as E
from ledger.audit import verify_store
from ledger.builder import EventBuilder, root_builder
from ledger.entry import SignedEvent
from ledger.home import init_home, open_ledger
from ledger.rebuild import rebuild
from ledger.storage.sql import ProjectionSnapshot
from signing import KeyPair
from tests.support import ACTORS, GTIN, Clock

LOTS = ("LA1", "LB2")
SERIALS = {lot: [f"{lot}S{i:03d}" for i in range(12)] for lot in LOTS}
SHIPPERS = ("maphar", "maphar", "dist-north", "dist-south")
RECEIVERS = ("dist-north", "dist-south", "ph-rabat", "ph-fes", "chu-oujda")
PHARMACIES = ("ph-rabat", "ph-fes", "chu-oujda")


class Side:
    """A ledger with the given actor keys registered, commissioned with the two test batches."""

    def __init__(self, path: Path, url: str, keys: dict[str, KeyPair]) -> None:
        self.clock = Clock()
        home, _ = init_home(path, database_url=url)
        self.ledger, self.db = open_ledger(path, url)
        self.ledger.clock = self.clock
        root = root_builder(home.root_key(), self.clock)
        for actor_id, (name, role, region) in ACTORS.items():
            self.ledger.submit(root.register_actor(actor_id, name, role, region, keys[actor_id].public.b64))

    def snapshot(self) -> ProjectionSnapshot:
        with self.ledger.store.read() as u:
            return u.snapshot()

    def commission_lots(self, keys: dict[str, KeyPair], clock: Clock) -> None:
        """The two test batches, commissioned by their manufacturer."""
        maker = EventBuilder("maphar", keys["maphar"], clock)
        for lot in LOTS:
            self.ledger.submit(maker.commission(GTIN, lot, dt.date(2028, 6, 30), "Amoxicilline 500 mg", SERIALS[lot]))

    def positioned(self) -> dict[str, dict[Any, dict[str, Any]]]:
        """The projections with each log index written as the place of its entry among the events, or as the id
        of its alert: a group files its alerts after its events, appends one by one each right after its
        refusal, and the events keep their order either way."""
        with self.ledger.store.read() as u:
            entries = u.entries(0, self.ledger.size())
        events = [e for e in entries if e.event_type != "alert"]
        place: dict[int, tuple[str, Any]] = {e.index: ("event", n) for n, e in enumerate(events)}
        place.update((e.index, ("alert", e.event_id)) for e in entries if e.event_type == "alert")
        snap = self.snapshot()

        def row(values: dict[str, Any]) -> dict[str, Any]:
            return {k: place.get(v, v) if (k == "idx" or k.endswith("_index")) and isinstance(v, int) else v
                    for k, v in values.items()}
        return {table: {key: row(values) for key, values in getattr(snap, table).items()}
                for table in ProjectionSnapshot.TABLES}


def random_events(rng: random.Random, keys: dict[str, KeyPair], clock: Clock, n: int) -> list[SignedEvent]:
    def as_(actor: str) -> EventBuilder:
        return EventBuilder(actor, keys[actor], clock)

    out: list[SignedEvent] = []
    shipments: list[tuple[str, str, str, list[str]]] = []  # (shipment id, recipient, lot, serials)
    for _ in range(n):
        lot = rng.choice(LOTS)
        serials = rng.sample(SERIALS[lot], rng.randint(1, 3))
        roll = rng.random()
        if roll < 0.22:
            sender, to = rng.choice(SHIPPERS), rng.choice(RECEIVERS)
            if shipments and rng.random() < 0.5:  # pass on what was shipped to someone: often still held
                _, sender, lot, serials = rng.choice(shipments)
            event = (as_(sender).ship(GTIN, lot, to, serials=serials) if rng.random() < 0.6 or not serials
                     else as_(sender).ship(GTIN, lot, to, quantity=rng.randint(1, 4)))
            shipments.append((event.event_id, to, lot, serials if "serials" in event.body else []))
        elif roll < 0.42 and shipments:
            shipment, to, *_ = rng.choice(shipments)
            actor = to if rng.random() < 0.9 else rng.choice(RECEIVERS)
            event = (as_(actor).receive(shipment) if rng.random() < 0.85
                     else as_(actor).refuse(shipment, "damaged cartons"))
        elif roll < 0.68:
            pharmacy, serial = rng.choice(PHARMACIES), serials[0]
            to_pharmacies = [(to, s) for _, to, _, ss in shipments if to in PHARMACIES for s in ss]
            if to_pharmacies and rng.random() < 0.7:
                pharmacy, serial = rng.choice(to_pharmacies)
            event = as_(pharmacy).dispense(GTIN, serial)
        elif roll < 0.74:
            event = as_(rng.choice(PHARMACIES)).undo_dispense(GTIN, serials[0], "wrong patient")
        elif roll < 0.84:
            sender = rng.choice(RECEIVERS)
            to = rng.choice(SHIPPERS)
            event = (as_(sender).return_(GTIN, lot, to, "overstock", serials=serials) if rng.random() < 0.5
                     else as_(sender).return_(GTIN, lot, to, "overstock", quantity=rng.randint(1, 3)))
            shipments.append((event.event_id, to, lot, serials if "serials" in event.body else []))
        elif roll < 0.92:
            event = as_(rng.choice(SHIPPERS)).destroy(GTIN, lot, "breakage", quantity=1)
        elif roll < 0.935:
            event = as_("maphar").quarantine(GTIN, lot, "stability check")
        else:
            event = as_("maphar").release(GTIN, lot, "stability confirmed")
        out.append(event)
    return out


def outcome(result: object) -> str:
    return result.code if isinstance(result, E.LedgerError) else "recorded"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_group_decides_like_one_by_one(tmp_path: Path, db_url: str, seed: int) -> None:
    keys = {actor: KeyPair.generate() for actor in ACTORS}
    other_url = f"sqlite:///{tmp_path / 'other.db'}"  # the one-by-one reference
    grouped, single = Side(tmp_path / "g", db_url, keys), Side(tmp_path / "s", other_url, keys)
    try:
        clock = Clock()
        maker = EventBuilder("maphar", keys["maphar"], clock)
        setup = [maker.commission(GTIN, lot, dt.date(2028, 6, 30), "Amoxicilline 500 mg", SERIALS[lot])
                 for lot in LOTS]
        dist = EventBuilder("dist-north", keys["dist-north"], clock)
        first = maker.ship(GTIN, LOTS[0], "dist-north", serials=SERIALS[LOTS[0]][:8])
        setup += [first, dist.receive(first.event_id)]
        for side in (grouped, single):
            for event in setup:
                side.ledger.submit(event)

        events = random_events(random.Random(seed), keys, clock, 200)
        together = [outcome(r) for r in grouped.ledger.append(events)]
        apart = [outcome(single.ledger.append([e])[0]) for e in events]

        assert together == apart
        assert together.count("recorded") >= 10, together  # the mix must exercise accepted events too
        assert len(set(together)) >= 6, together  # ... and several kinds of refusal
        assert grouped.ledger.size() == single.ledger.size()
        a, b = grouped.positioned(), single.positioned()
        for table in ProjectionSnapshot.TABLES:
            if table != "chain_heads":  # registration entries are signed by each side's own root key
                assert a[table] == b[table], table
        for side in (grouped, single):
            audit, diff = rebuild(side.ledger.store, side.ledger.config.trust, side.ledger.config.origin)
            assert audit.ok and diff.clean, diff.differences
            assert verify_store(side.ledger.store, side.ledger.config.trust, side.ledger.config.origin).ok
    finally:
        grouped.db.dispose()
        single.db.dispose()


def test_what_a_group_carries_is_dropped_when_another_writer_or_a_rebuild_intervenes(tmp_path: Path,
                                                                                     db_url: str) -> None:
    from ledger.home import open_ledger as reopen
    from tests.support import make_world

    w = make_world(tmp_path / "home", db_url)
    other, other_db = reopen(tmp_path / "home", db_url)  # a second server process on the same database
    other.clock = w.clock
    try:
        serials = w.commission("CARRY", 6)
        w.deliver("maphar", "ph-rabat", "CARRY", serials)
        # the other process moves the chain on: this one's carried chain head and tree are stale now
        assert not isinstance(other.append([w.as_("ph-rabat").dispense(GTIN, serials[0])])[0], E.LedgerError)
        assert not isinstance(w.ledger.append([w.as_("ph-rabat").dispense(GTIN, serials[1])])[0], E.LedgerError)

        # a projection damaged behind the ledger's back, once the other process has appended (so this one
        # reads afresh), is read and carried by the next group...
        with w.db.writer.begin() as conn:
            conn.execute(sa.text("UPDATE batches SET status = 'quarantined' WHERE lot = 'CARRY'"))
        other.append([w.as_("maphar").commission(GTIN, "ELSE", dt.date(2028, 6, 30), "Amoxicilline", ["E1"])])
        refused = w.ledger.append([w.as_("ph-rabat").dispense(GTIN, serials[2])])[0]
        assert isinstance(refused, E.LedgerError)
        # ... and once `athar audit rebuild --write` has repaired it, the carried copy must not be used
        _, diff = rebuild(w.ledger.store, w.ledger.config.trust, w.ledger.config.origin, write=True)
        assert diff.rewritten
        assert not isinstance(w.ledger.append([w.as_("ph-rabat").dispense(GTIN, serials[2])])[0], E.LedgerError)
        assert verify_store(w.ledger.store, w.ledger.config.trust, w.ledger.config.origin).ok
    finally:
        other_db.dispose()
        w.db.dispose()


def test_an_append_waiting_behind_a_rewrite_sees_it(tmp_path: Path, db_url: str) -> None:
    """A group append that waits for the log head's lock while `audit rebuild --write` rewrites the projections
    must see the rewrite once it gets the lock (or it keeps deciding on what it carried from before). Counting
    meta rows in a subquery of the locking statement answered from the snapshot before the wait on PostgreSQL."""
    import threading

    from tests.support import make_world

    w = make_world(tmp_path / "home", db_url)
    try:
        store = w.ledger.store
        with store.write() as u:
            before = u.lock_head_versioned()
        seen: list[tuple[int, bytes, int]] = []

        def append_waits() -> None:
            with store.write() as waiting:
                seen.append(waiting.lock_head_versioned())

        with store.write() as rewriting:
            rewriting.lock_head()
            waiter = threading.Thread(target=append_waits)
            waiter.start()
            waiter.join(0.5)  # the appender is now waiting for the lock (SQLite: for the write transaction)
            rewriting.count_rewrite()
        waiter.join(30)
        assert seen and seen[0][:2] == before[:2] and seen[0][2] == before[2] + 1, (before, seen)
    finally:
        w.db.dispose()


def test_a_group_writes_only_the_chain_heads_it_moved(tmp_path: Path, db_url: str) -> None:
    """The heads a process carries from group to group must not all be written again by every group (the cost
    of a commit would grow with everything the process ever touched)."""
    import sqlalchemy as sa
    from sqlalchemy import event

    from tests.support import make_world

    w = make_world(tmp_path / "home", db_url)
    written: list[int] = []

    def count(conn: object, cursor: object, statement: str, parameters: object, context: object,
              executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CHAIN_HEADS"):
            written.append(len(parameters) if executemany and isinstance(parameters, list | tuple) else 1)

    # PostgreSQL's group writes go through the driver, unseen by SQLAlchemy's events: there the rows a group
    # wrote are those of its transaction (every upsert makes a new row version, even with the same values)
    last_group = sa.text("SELECT count(*) FROM chain_heads WHERE xmin = (SELECT xmin FROM log_head)")
    event.listen(w.db.writer, "before_cursor_execute", count)
    try:
        for i in range(12):
            w.commission(f"HEADS{i}", 2)
            if w.db.writer.dialect.name == "postgresql":
                with w.db.writer.connect() as conn:
                    written.append(int(conn.execute(last_group).scalar_one()))
        assert written[-6:] == [1] * 6, written  # one new batch chain per group, however many came before
    finally:
        event.remove(w.db.writer, "before_cursor_execute", count)
        w.db.dispose()


def test_receipts_of_groups_of_every_size_need_no_stored_node_and_no_lookup_one_by_one(tmp_path: Path,
                                                                                        db_url: str) -> None:
    """A group's receipts prove inclusion from the tree it carries (the perfect subtrees left of the group and
    the group's own nodes), whatever the sizes; and the holdings a receipt of goods moves are read with the
    group's other reads, not one query each."""
    from sqlalchemy import event

    from ledger.merkle import verify_consistency, verify_inclusion
    from tests.support import make_world

    w = make_world(tmp_path / "home", db_url)
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(" ".join(statement.split()))

    try:
        serials = w.commission("FRONT", 60)
        w.deliver("maphar", "dist-north", "FRONT", serials)
        left = iter(serials)
        previous = None
        for size in (1, 2, 3, 5, 7, 8, 1, 4):
            ships = [w.as_("dist-north").ship(GTIN, "FRONT", "ph-rabat", serials=[next(left)]) for _ in range(size)]
            for group in (ships, [w.as_("ph-rabat").receive(s.event_id) for s in ships]):
                event.listen(w.db.writer, "before_cursor_execute", record)
                receipts = w.ledger.append(group)
                event.remove(w.db.writer, "before_cursor_execute", record)
                for r in receipts:
                    assert not isinstance(r, E.LedgerError), r
                    verify_inclusion(r.entry_hash, r.index, r.tree_size, list(r.inclusion_proof), r.root)
                last = receipts[-1]
                assert not isinstance(last, E.LedgerError)
                if previous is not None:
                    verify_consistency(previous.tree_size, last.tree_size, previous.root, last.root,
                                       w.ledger.consistency_proof(previous.tree_size, last.tree_size))
                previous = last
        assert not [s for s in statements if "FROM merkle_nodes" in s], "a receipt read stored Merkle nodes"
        one_by_one = [s for s in statements if s.startswith("SELECT holdings.quantity FROM holdings")]
        assert not one_by_one, one_by_one[:3]
        assert verify_store(w.ledger.store, w.ledger.config.trust, w.ledger.config.origin).ok
    finally:
        w.db.dispose()


def test_a_group_whose_writes_fail_at_the_end_leaves_nothing_behind(tmp_path: Path, db_url: str) -> None:
    """A group's writes are sent together and their errors come back at the end (PostgreSQL pipeline mode): a
    failure there, here a trigger refusing the last write (the new log head), must undo the whole group
    (projections included), be raised as SQLAlchemy raises database errors, and leave the process able to
    append the same events again."""
    from tests.support import make_world

    w = make_world(tmp_path / "home", db_url)
    postgres = w.db.writer.dialect.name == "postgresql"
    fail = ("CREATE FUNCTION athar_test_refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected failure'; "
            "END $$ LANGUAGE plpgsql; CREATE TRIGGER athar_test_refuse BEFORE UPDATE ON log_head FOR EACH ROW "
            "EXECUTE FUNCTION athar_test_refuse()" if postgres else
            "CREATE TRIGGER athar_test_refuse BEFORE UPDATE ON log_head BEGIN SELECT RAISE(ABORT, 'injected "
            "failure'); END")
    try:
        serials = w.commission("FAILS", 4)
        w.deliver("maphar", "ph-rabat", "FAILS", serials)
        size = w.ledger.size()
        with w.ledger.store.read() as u:
            before = u.snapshot()
        group = [w.as_("ph-rabat").dispense(GTIN, s) for s in serials[:3]]
        with w.db.writer.begin() as conn:
            conn.exec_driver_sql(fail)
        with pytest.raises(sa.exc.DBAPIError, match="injected failure"):
            w.ledger.append(group)
        with w.db.writer.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER athar_test_refuse" + (" ON log_head" if postgres else ""))
        assert w.ledger.size() == size
        with w.ledger.store.read() as u:
            assert u.snapshot() == before  # no pack dispensed, no holding moved
            assert u.entries(size, size + 10) == []
        receipts = w.ledger.append(group)
        assert [r.index for r in receipts if not isinstance(r, E.LedgerError)] == [size, size + 1, size + 2]
        assert verify_store(w.ledger.store, w.ledger.config.trust, w.ledger.config.origin).ok
    finally:
        w.db.dispose()


def test_a_connection_lost_when_the_group_is_written_is_reported_and_replaced(tmp_path: Path,
                                                                            postgres_url: str) -> None:
    """The backend dies while the group's pipelined writes run (a trigger on the last one terminates it): the
    append fails as the database being unavailable, nothing of the group remains, and the next append gets a
    fresh connection from the pool."""
    from ledger.errors import StorageUnavailable
    from tests.support import make_world

    w = make_world(tmp_path / "home", postgres_url)
    try:
        serials = w.commission("LOST", 3)
        w.deliver("maphar", "ph-rabat", "LOST", serials)
        size = w.ledger.size()
        with w.db.writer.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION athar_test_die() RETURNS trigger AS $$ BEGIN "
                "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$ LANGUAGE plpgsql; "
                "CREATE TRIGGER athar_test_die BEFORE UPDATE ON log_head FOR EACH ROW "
                "EXECUTE FUNCTION athar_test_die()")
        group = [w.as_("ph-rabat").dispense(GTIN, s) for s in serials]
        with pytest.raises(StorageUnavailable):
            w.ledger.append(group)
        with w.db.writer.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER athar_test_die ON log_head")
        assert w.ledger.size() == size
        receipts = w.ledger.append(group)
        assert [r.index for r in receipts if not isinstance(r, E.LedgerError)] == [size, size + 1, size + 2]
        assert verify_store(w.ledger.store, w.ledger.config.trust, w.ledger.config.origin).ok
    finally:
        w.db.dispose()


@pytest.mark.parametrize("seed", [4, 5])
def test_the_first_reads_sent_with_the_lock_are_those_read_one_by_one(tmp_path: Path, postgres_url: str,
                                                                        seed: int) -> None:
    """On PostgreSQL a group's first reads go out with its lock in one pipeline (``SqlUnit.lock_and_read``):
    for random groups over a ledger with shipments in transit, packs held and dispensed, they must leave the
    group's state holding exactly what the reads one by one (``GroupState.prefetch``, as on SQLite) hold:
    the same actors, keys, shipments, packs and holdings, misses included."""
    from ledger.appender import precheck
    from ledger.group_state import GroupState

    keys = {actor: KeyPair.generate() for actor in ACTORS}
    side = Side(tmp_path / "p", postgres_url, keys)
    try:
        clock = Clock()
        side.commission_lots(keys, clock)
        rng = random.Random(seed)
        side.ledger.append(random_events(rng, keys, clock, 120))  # shipments, receipts, dispenses...
        with side.ledger.store.read() as u:
            in_transit = u.shipments_in_transit(before=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
        assert any(s.serials for s in in_transit)
        # receipts of every shipment in transit alone (their packs and holdings are named only through them),
        # then with a random mix
        receipts = [EventBuilder(s.recipient, keys[s.recipient], clock).receive(s.id) for s in in_transit]
        for events in (receipts, receipts + random_events(rng, keys, clock, 60)):
            # the registry as precheck sees it: unknown, so events are parsed and their signatures left unchecked
            items = [precheck(e, {}, side.ledger.config.trust) for e in events]
            parsed = [i.event for i in items if i.event is not None]
            key_ids = {i.signed.key_id for i in items}
            with side.ledger.store.write() as u:
                pipelined = GroupState(u)
                wants = pipelined.wants(parsed, key_ids)
                # recorded ids too (the shipments'), as a group of replays asks: their whole entries come back
                wants.event_ids = sorted({e.event_id for e in events} | {"no-such-event"} | {s.id for s in in_transit})
                assert u.pipelines_reads
                reads = u.lock_and_read(wants)
                pipelined.absorb(reads, wants, parsed)
                one_by_one = GroupState(u)
                one_by_one.prefetch(parsed, key_ids)
                assert set(reads.existing) == u.existing_event_ids(wants.event_ids) >= {s.id for s in in_transit}
                assert all(reads.existing[i] == u.entry_by_event_id(i) for i in reads.existing)
                assert all(type(e.leaf) is bytes and type(e.entry_hash) is bytes  # memoryview would compare equal
                           and e.received_at.tzinfo is not None for e in reads.existing.values())
                assert reads.head == u.lock_head_versioned()
            # the statements themselves answered it all: no holding was left to read one by one
            assert set(pipelined._holdings) <= set(reads.holdings)
            assert {(s.gtin, x) for s in in_transit for x in s.serials or ()} <= set(reads.packs)
            # what each state holds in memory, compared map by map
            for name in ("_actors", "_keys", "_shipments", "_packs", "_holdings"):
                held, reference = dict(getattr(pipelined, name)), dict(getattr(one_by_one, name))
                assert held == reference, name
        sizes = [len(getattr(pipelined, n)) for n in ("_packs", "_holdings", "_shipments", "_actors")]
        assert all(n >= least for n, least in zip(sizes, (10, 8, 3, 4), strict=True)), sizes  # every kind of read
    finally:
        side.db.dispose()


def test_a_connection_lost_before_the_group_reads_is_reported_and_replaced(tmp_path: Path,
                                                                          postgres_url: str) -> None:
    """The pooled connection's backend is gone when the next group sends its lock and first reads (a server
    restart, an idle timeout): the append fails as the database being unavailable, and the next one gets a
    fresh connection."""
    import psycopg

    from ledger.errors import StorageUnavailable
    from tests.support import make_world

    w = make_world(tmp_path / "home", postgres_url)
    try:
        serials = w.commission("GONE", 2)
        w.deliver("maphar", "ph-rabat", "GONE", serials)
        size = w.ledger.size()
        with w.db.writer.connect() as conn:  # the connection the next group will take from the pool
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql").split("?")[0],
                             autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        group = [w.as_("ph-rabat").dispense(GTIN, s) for s in serials]
        with pytest.raises(StorageUnavailable):
            w.ledger.append(group)
        assert w.ledger.size() == size
        receipts = w.ledger.append(group)
        assert [r.index for r in receipts if not isinstance(r, E.LedgerError)] == [size, size + 1]
    finally:
        w.db.dispose()


def test_the_first_reads_probe_packs_by_key_even_on_stale_statistics(tmp_path: Path, postgres_url: str) -> None:
    """A whole batch shipped by serial and received, before any ANALYZE has seen the packs (a fresh ledger, a
    restore): the group's reads that look packs up (packs named, packs a shipment lists, holdings by a pack's
    lot) must visit the packs table once at most per statement, never once per wanted pack (a per-key plan
    turned a 50,000-pack receipt into minutes)."""
    from ledger.storage import group_reads as gr
    from tests.support import make_world

    w = make_world(tmp_path / "home", postgres_url)
    try:
        serials = w.commission("BULK", 6000)
        shipment = w.as_("maphar").ship(GTIN, "BULK", "dist-north", serials=serials)
        w.ledger.submit(shipment)
        with w.db.writer.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            plans = []
            by_pack = {"a": [], "g": [], "l": [], "pa": ["dist-north"] * 3000, "pg": [GTIN] * 3000,
                       "ps": serials[:3000], "ships": [shipment.event_id]}
            for sql, params in ((gr._PACKS, {"g": GTIN, "s": serials[:3000]}),
                                (gr._SHIPPED_PACKS, {"id": shipment.event_id}), (gr._HOLDINGS, by_pack)):
                for mode in ("force_custom_plan", "force_generic_plan"):
                    raw.execute(f"SET plan_cache_mode = {mode}")
                    rows = raw.execute("EXPLAIN (ANALYZE, TIMING OFF) " + sql, params).fetchall()
                    plans.append((sql, "\n".join(r[0] for r in rows)))
        for sql, plan in plans:
            scans = [line for line in plan.splitlines() if " on packs" in line]
            assert scans, plan
            if sql == gr._HOLDINGS:  # a join: probing the index once per key is right, scanning per key is not
                assert all("Index" in line or "loops=1)" in line for line in scans), plan
            else:  # the packs statements need one scan, whatever the number of serials
                assert all("loops=1)" in line for line in scans), plan
        receipt = w.ledger.submit(w.as_("dist-north").receive(shipment.event_id))
        assert receipt.index == w.ledger.size() - 1
        with w.ledger.store.read() as u:
            assert all(p.holder == "dist-north" for p in u.packs(GTIN, (serials[0], serials[-1])).values())
    finally:
        w.db.dispose()


def test_a_group_of_dispenses_sends_postgresql_only_the_statements_it_needs(tmp_path: Path, postgres_url: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement of a group costs the sequencer CPU, and every append waits for the sequencer: a group of
    dispenses, once the registry is carried from the group before, asks for no actor, key or shipment, reads the
    holdings its packs' lots concern with its other reads, and writes through the driver only (nothing through
    SQLAlchemy's execute). Counted at the driver."""
    import psycopg
    from sqlalchemy import event

    from tests.support import make_world

    w = make_world(tmp_path / "home", postgres_url)
    driver: list[str] = []
    through_sqlalchemy: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cur: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        driver.append(" ".join(str(query).split()))
        return execute(cur, query, *args, **kwargs)

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        through_sqlalchemy.append(statement)

    try:
        serials = w.commission("LEAN", 6)
        w.deliver("maphar", "dist-north", "LEAN", serials)
        w.deliver("dist-north", "ph-rabat", "LEAN", serials)
        pharmacy = w.as_("ph-rabat")
        first = w.ledger.append([pharmacy.dispense(GTIN, serials[0])])  # the registry is carried after this
        assert not isinstance(first[0], E.LedgerError), first
        group = [pharmacy.dispense(GTIN, s) for s in serials[1:4]]
        monkeypatch.setattr(psycopg.Cursor, "execute", counted)
        event.listen(w.db.writer, "before_cursor_execute", record)
        receipts = w.ledger.append(group)
        event.remove(w.db.writer, "before_cursor_execute", record)
        monkeypatch.undo()
        assert all(not isinstance(r, E.LedgerError) for r in receipts), receipts
        assert through_sqlalchemy == []
        reads = [s for s in driver if s.startswith("SELECT")]
        assert len(reads) == 4, reads  # the lock, the event ids, the holdings, the packs of the one GTIN
        for table in ("FROM actors WHERE", "FROM actor_keys WHERE", "FROM shipments WHERE"):
            assert not [s for s in reads if table in s], (table, reads)
        writes = [s for s in driver if not s.startswith("SELECT")]
        assert len(writes) == 2 and writes[1] == "COMMIT", writes  # one statement for the seven tables, in the
        # order they were written, then the commit, in the same pipeline
        targets = re.findall(r"(?:INSERT INTO|(?<!DO )UPDATE) (\w+)", writes[0])
        assert targets == ["packs", "holdings", "log_entries", "merkle_nodes", "chain_heads", "checkpoints",
                           "log_head"], targets
        with w.ledger.store.read() as u:
            assert {s: p.status for s, p in u.packs(GTIN, tuple(serials)).items()} == {
                s: "dispensed" if s in serials[:4] else "active" for s in serials}
    finally:
        if event.contains(w.db.writer, "before_cursor_execute", record):
            event.remove(w.db.writer, "before_cursor_execute", record)
        w.db.dispose()


def test_writes_made_together_to_the_same_row_keep_their_order(tmp_path: Path, db_url: str) -> None:
    """A group's writes are merged into few statements at the end of the block (PostgreSQL), and the parts of
    one statement do not see each other's rows: two writes of the same holding must stay two statements, in
    order, so that the second wins, as when they are made one by one (SQLite). Merged into one statement,
    PostgreSQL refuses the second (a command may not affect a row twice)."""
    from tests.support import make_world

    w = make_world(tmp_path / "home", db_url)
    try:
        with w.ledger.store.write() as u, u.pipelined(commit=True):
            u.put_holdings([("ph-rabat", GTIN, "TWICE", 5)])
            u.insert_checkpoint(999, b"\x01" * 32, "a note", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
            u.put_holdings([("ph-rabat", GTIN, "TWICE", 3), ("ph-fes", GTIN, "TWICE", 7)])
        with w.ledger.store.read() as u:
            assert u.holdings_of_batch(GTIN, "TWICE") == {"ph-rabat": 3, "ph-fes": 7}
            stored = u.checkpoint(999)
            assert stored is not None and stored.note == "a note" and stored.root_hash == b"\x01" * 32
    finally:
        w.db.dispose()


_LARGE_WRITES = """
import datetime as dt, sys
from pathlib import Path
from ledger.home import init_home, open_ledger

home, url, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if not home.exists():
    init_home(home, database_url=url)
ledger, db = open_ledger(home, url)
note = "n" * size
with ledger.store.write() as u, u.pipelined(commit=True):
    u.put_holdings([("ph-rabat", "03600000000005", "BIG", size)])
    u.insert_checkpoint(size, bytes(32), note, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
with ledger.store.read() as u:
    stored = u.checkpoint(size)
    assert stored is not None and stored.note == note
with db.writer.connect() as c:
    print("written", c.connection.driver_connection.info.host)
"""


def test_a_large_group_is_written_and_committed_without_hanging(tmp_path: Path, postgres_url: str) -> None:
    """Inside a pipeline, psycopg's commit() stops sending once its command is queued and waits for answers
    that cannot come while part of a large statement is unsent: 2 MB over a Unix socket and 40 MB over loopback
    TCP hung. A group's writes (here one large value standing for a group of large commissions) end with a
    COMMIT sent as one more statement of the pipeline. In subprocesses, so that a hang fails the test instead of
    stalling the run; over the Unix socket too where the server has one."""
    import subprocess
    import sys

    urls = [postgres_url]
    if Path("/var/run/postgresql/.s.PGSQL.5432").exists():
        tcp = sa.engine.make_url(postgres_url)
        urls.append(sa.engine.URL.create(tcp.drivername, tcp.username, tcp.password, None, None, tcp.database,
                                         {**tcp.query, "host": "/var/run/postgresql"})
                    .render_as_string(hide_password=False))
    for n, url in enumerate(urls):
        for size in (2_000_000 + n, 40_000_000 + n):  # the size is also the checkpoint's (unique) tree size
            done = subprocess.run([sys.executable, "-c", _LARGE_WRITES, str(tmp_path / "home"), url, str(size)],
                                  capture_output=True, text=True, timeout=60,
                                  cwd=Path(__file__).resolve().parents[2])
            assert done.returncode == 0, (url, size, done.stderr[-2000:])
            said, host = done.stdout.split()
            assert said == "written" and (n == 0 or host.startswith("/")), done.stdout  # the second, a socket


def test_a_group_of_replays_is_answered_from_the_reads_sent_with_its_lock(tmp_path: Path, postgres_url: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients resending after a lost answer (a pharmacy's network coming back) send recorded events again. On
    PostgreSQL their stored entries come back with the group's first reads, so a replay reads no entry one by
    one (each was a round trip of the sequencer's, in order); the receipts are those of the first appends."""
    from ledger.storage.sql import SqlUnit

    keys = {actor: KeyPair.generate() for actor in ACTORS}
    side = Side(tmp_path / "p", postgres_url, keys)
    try:
        clock = Clock()
        side.commission_lots(keys, clock)
        events = random_events(random.Random(7), keys, clock, 200)
        first = side.ledger.append(events)
        reads: list[str] = []
        one_by_one = SqlUnit.entry_by_event_id
        monkeypatch.setattr(SqlUnit, "entry_by_event_id",
                            lambda self, event_id: reads.append(event_id) or one_by_one(self, event_id))
        again = side.ledger.append(events)
        pairs = [(a, b) for a, b in zip(first, again, strict=True) if not isinstance(a, E.LedgerError)]
        assert len(pairs) >= 10
        assert all(not isinstance(b, E.LedgerError) and b.replayed
                   and (b.index, b.entry_hash) == (a.index, a.entry_hash) for a, b in pairs)
        assert reads == []  # nor a refused event's alert (test_a_wave_of_suspect_scans_files_its_alerts_with_the_group)
    finally:
        side.db.dispose()


def test_a_wave_of_suspect_scans_files_its_alerts_with_the_group(tmp_path: Path, db_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloned packs scanned at another pharmacy are refused, each with an alert in the log. A wave of them must
    not cost the sequencer reads and statements per alert (526 refusals/s before, the sequencer saturated):
    whether the alerts were filed before is one read for the group, they are written with it, and the
    product's batches are read only for the refusal whose cause needs them. Sent again, the same refused
    submissions get no second alert."""
    import hashlib

    from ledger.storage.sql import SqlUnit
    from signing import canonical
    from tests.support import make_world

    world = make_world(tmp_path / "home", db_url)
    try:
        serials = world.commission("CL1", 10)
        world.deliver("maphar", "ph-rabat", "CL1", serials)
        world.ledger.append([world.as_("ph-rabat").dispense(GTIN, s) for s in serials])
        clones = [world.as_("ph-fes").dispense(GTIN, s) for s in serials]
        calls: dict[str, list[int]] = {"batches": [], "put_alerts": [], "entry_by_event_id": [],
                                       "existing_event_ids": []}
        for name in calls:
            original = getattr(SqlUnit, name)

            def spy(self: SqlUnit, arg: Any, _name: str = name, _original: Any = original) -> Any:
                # how many items it was asked for; for ids, how many were alert ids
                calls[_name].append(sum(1 for a in arg if not isinstance(a, str) or a.startswith("alert:"))
                                    if isinstance(arg, list) else 1)
                return _original(self, arg)
            monkeypatch.setattr(SqlUnit, name, spy)
        results = world.ledger.append(clones)
        assert all(isinstance(r, E.DuplicateDispense) for r in results)
        alert_reads = [n for n in calls["existing_event_ids"] if n]  # SQLite asks for the clones' own ids too
        assert (calls["batches"], calls["put_alerts"], calls["entry_by_event_id"], alert_reads) == ([], [10], [], [10])
        with world.ledger.store.read() as u:
            size = u.checkpoint().tree_size  # type: ignore[union-attr]
            filed = u.alerts(kind="duplicate_dispense")
        assert len(filed) == 10 and all(a.suspect == "ph-fes" for a in filed)
        # the same refused submissions again: refused again, nothing more in the log
        assert all(isinstance(r, E.DuplicateDispense) for r in world.ledger.append(clones))
        first = "alert:" + hashlib.sha256(canonical(clones[0].to_json())).hexdigest()[:40]
        update = world.as_("regulator").sign("alert_update", alert=first, status="investigating")
        handled = world.ledger.append([update])
        assert not isinstance(handled[0], E.LedgerError)
        with world.ledger.store.read() as u:
            assert u.checkpoint().tree_size == size + 1  # type: ignore[union-attr]
            assert {a.id: a.status for a in u.alerts(kind="duplicate_dispense")}[first] == "investigating"
    finally:
        world.db.dispose()


def _alert_id(signed: SignedEvent) -> str:
    import hashlib

    from signing import canonical
    return "alert:" + hashlib.sha256(canonical(signed.to_json())).hexdigest()[:40]


def _clone_and_update(tmp: Path, db_url: str, grouped: bool) -> list[str]:
    from tests.support import make_world

    world = make_world(tmp, db_url)
    try:
        serials = world.commission("CL1", 3)
        world.deliver("maphar", "ph-rabat", "CL1", serials)
        world.ledger.append([world.as_("ph-rabat").dispense(GTIN, s) for s in serials])
        clone = world.as_("ph-fes").dispense(GTIN, serials[0])
        update = world.as_("regulator").sign("alert_update", alert=_alert_id(clone), status="investigating")
        results = (world.ledger.append([clone, update]) if grouped
                   else [world.ledger.append([clone])[0], world.ledger.append([update])[0]])
        return [type(r).__name__ for r in results]
    finally:
        world.db.dispose()


def test_an_alert_update_in_the_group_of_its_refusal_decides_like_one_by_one(tmp_path: Path, db_url: str) -> None:
    """A group files its alerts after its events, but before an alert update among them, which may name one."""
    apart = _clone_and_update(tmp_path / "a", f"sqlite:///{tmp_path / 'apart.db'}", grouped=False)
    assert apart == ["DuplicateDispense", "Receipt"]
    assert _clone_and_update(tmp_path / "t", db_url, grouped=True) == apart


def test_an_alert_says_what_was_known_at_its_refusal(tmp_path: Path, db_url: str) -> None:
    """A scan of a product nobody registered, then in the same group the commission that registers it: the alert,
    filed at the group's end, still gives the cause as at the refusal (as one by one). Its chain is decided where
    it stands in the log (the batch's, now registered), as the audit replays it; the log stays whole."""
    from ledger.audit import verify_store
    from tests.support import make_world

    causes = {}
    for grouped in (False, True):
        world = make_world(tmp_path / str(grouped), db_url if grouped else f"sqlite:///{tmp_path / 'apart.db'}")
        try:
            scan = world.as_("ph-rabat").dispense(GTIN, "LATE1", lot="L9")  # no batch of this GTIN yet
            commission = world.as_("maphar").commission(GTIN, "L9", dt.date(2029, 1, 1), "X", ["LATE1"])
            if grouped:
                world.ledger.append([scan, commission])
            else:
                world.ledger.append([scan])
                world.ledger.append([commission])
            with world.ledger.store.read() as u:
                record = u.alert(_alert_id(scan))
            assert record is not None
            causes[grouped] = record.cause
            audit, diff = rebuild(world.ledger.store, world.ledger.config.trust, world.ledger.config.origin)
            assert audit.ok and diff.clean, diff.differences
            assert verify_store(world.ledger.store, world.ledger.config.trust, world.ledger.config.origin).ok
        finally:
            world.db.dispose()
    assert causes[True] == causes[False]
    assert causes[True] == ("the GTIN was never registered here: falsified, or imported outside the national "
                            "supply chain")
