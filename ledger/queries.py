"""The read side: views of actors, batches, histories and packs, and who may see them.

Visibility rules (DESIGN.md, "Trust and access"): the public sees a pack's verdict and minimal provenance
(no volumes); an actor sees the histories it takes part in; regulators and inspectors see everything.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ledger import errors as E
from ledger.bundle_build import build_bundle, build_pack_bundle
from ledger.entry import Entry
from ledger.identifiers import Role, batch_chain
from ledger.provenance import BATCH_WIDE, SHIPMENT_KINDS, SINGLE_PACK, Step, concerns, concerns_pack
from ledger.recall import RecallReport, recall_report
from ledger.risk import RiskReport, RiskThresholds, assess
from ledger.service import MAX_ENTRIES_BYTES, MAX_ENTRIES_PAGE, Ledger
from ledger.state import Actor, AlertRecord, Batch, KeyRecord, Pack, Shipment
from ledger.storage.async_scans import AsyncScans
from ledger.storage.rows import StoredEntry
from ledger.storage.sql import SqlUnit, StoredCheckpoint, TrailRow, prove_entries
from ledger.verdict import Finding, Verdict, judge

OVERSIGHT = frozenset({Role.REGULATOR, Role.INSPECTOR})


@dataclass(frozen=True)
class Principal:
    """Who is reading: an authenticated actor, or None for the public."""

    actor: Actor

    @property
    def oversees(self) -> bool:
        return self.actor.role in OVERSIGHT


@dataclass(frozen=True)
class ProvedEntry:
    entry: StoredEntry
    proof: list[bytes]


@dataclass(frozen=True)
class BatchView:
    batch: Batch
    holdings: dict[str, int]
    pack_counts: dict[str, int]
    shipments: list[Shipment]


@dataclass(frozen=True)
class History:
    checkpoint: StoredCheckpoint
    entries: list[ProvedEntry]


@dataclass(frozen=True)
class PackReport:
    gtin: str
    serial: str
    finding: Finding
    batch: Batch | None
    steps: list[Step]


RISK_CACHE_SECONDS = 60
ACTOR_DISPLAY_SECONDS = 60


class Reader:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.risk_cache: tuple[int, dt.datetime, RiskReport] | None = None
        self._actor_cache: dict[str, tuple[float, Actor | None]] = {}

    # ---- actors ----------------------------------------------------------------------------------------------

    def actors(self) -> list[tuple[Actor, list[KeyRecord]]]:
        with self.ledger.store.read() as u:
            keys: dict[str, list[KeyRecord]] = {}
            for k in u.all_keys():
                keys.setdefault(k.actor, []).append(k)
            return [(a, keys.get(a.id, [])) for a in u.actors()]

    def actor(self, actor_id: str) -> tuple[Actor, list[KeyRecord]]:
        with self.ledger.store.read() as u:
            actor = u.actor(actor_id)
            if actor is None:
                raise E.NotFound(f"actor {actor_id!r} is not registered", actor=actor_id)
            return actor, u.keys_of(actor_id)

    # ---- batches ---------------------------------------------------------------------------------------------

    def batch(self, gtin: str, lot: str, who: Principal) -> BatchView:
        with self.ledger.store.read() as u:
            batch = self._visible_batch(u, gtin, lot, who)
            return BatchView(batch, u.holdings_of_batch(gtin, lot), u.pack_counts(gtin, lot),
                             u.shipments_of_batch(gtin, lot))

    def history(self, gtin: str, lot: str, who: Principal) -> History:
        """Every entry of the batch's chain, each with an inclusion proof against one checkpoint."""
        with self.ledger.store.read() as u:
            self._visible_batch(u, gtin, lot, who)
            cp = u.checkpoint()
            assert cp is not None
            entries = [e for e in u.chain_entries(batch_chain(gtin, lot)) if e.index < cp.tree_size]
            return History(cp, prove(u, entries, cp.tree_size))

    def batch_entries(self, gtin: str, lot: str, who: Principal) -> list[Entry]:
        with self.ledger.store.read() as u:
            self._visible_batch(u, gtin, lot, who)
            return [Entry.from_leaf(e.leaf) for e in u.chain_entries(batch_chain(gtin, lot))]

    def takes_part(self, u: SqlUnit, batch: Batch, actor_id: str) -> bool:
        if batch.manufacturer == actor_id or u.holding(actor_id, batch.gtin, batch.lot) != 0:
            return True
        return any(actor_id in (s.sender, s.recipient) for s in u.shipments_of_batch(batch.gtin, batch.lot))

    def _visible_batch(self, u: SqlUnit, gtin: str, lot: str, who: Principal | None) -> Batch:
        batch = u.batch(gtin, lot)
        if batch is None:
            raise E.UnknownBatch(f"batch GTIN {gtin} lot {lot} is not registered", gtin=gtin, lot=lot)
        if who is None or not (who.oversees or self.takes_part(u, batch, who.actor.id)):
            raise E.RoleNotAllowed("only regulators, inspectors and the actors that handled this batch may "
                                   "read its history")
        return batch

    # ---- packs -----------------------------------------------------------------------------------------------

    def _shown_actor(self, u: SqlUnit, actor_id: str) -> Actor | None:
        """An actor's name, role and region as shown in a provenance step. Read at most once a minute per actor:
        every scan shows the same few hundred actors, and none of this decides a verdict."""
        now = time.monotonic()
        cached = self._actor_cache.get(actor_id)
        if cached is not None and now - cached[0] < ACTOR_DISPLAY_SECONDS:
            return cached[1]
        actor = u.actor(actor_id)
        self._actor_cache[actor_id] = (now, actor)
        return actor

    def pack(self, gtin: str, serial: str, *, lot: str | None = None, expiry: dt.date | None = None,
             who: Principal | None = None) -> PackReport:
        """The verdict at a scan. A dispensing actor's scan also checks custody (NOT_IN_CUSTODY)."""
        scanner = who.actor.id if who and who.actor.role in (Role.PHARMACY, Role.HOSPITAL) else None
        with self.ledger.store.read_statements() as u:
            scan = u.pack_scan(gtin, serial, single=SINGLE_PACK, wide=BATCH_WIDE)
            pack, batch, trail = (scan[0], scan[1], scan[3]) if scan is not None else (None, None, [])
            pooled = bool(scanner and pack and pack.holder is None and u.holding(scanner, gtin, pack.lot) > 0)
            finding = judge(pack, batch, gtin=gtin, serial=serial, lot=lot, expiry=expiry, now=self.ledger.clock(),
                            scanner=scanner, scanner_holds_pooled=pooled)
            steps = self._steps(u, trail, serial)
        return PackReport(gtin, serial, finding, batch, steps)

    def scan(self, gtin: str, serial: str, *, lot: str | None = None, expiry: dt.date | None = None,
             who: Principal | None = None) -> PackReport:
        """A scan by a pharmacist, inspector or patient: the verdict, and when a registered actor scans a pack
        the ledger never saw, an alert for the regulator (once per actor and pack)."""
        report = self.pack(gtin, serial, lot=lot, expiry=expiry, who=who)
        if who is not None and report.finding.verdict is Verdict.UNKNOWN:
            self.ledger.suspect_scan(who.actor.id, report.gtin, report.serial, report.finding.verdict.value,
                                     report.finding.reason)
        return report

    async def public_pack(self, scans: AsyncScans, gtin: str, serial: str, *, lot: str | None = None,
                          expiry: dt.date | None = None) -> PackReport | None:
        """``pack`` for the public (no custody check), read on the event loop; None when that cannot answer (the
        database could not be read there, or the provenance needs an entry body or an actor not cached, which
        ``pack`` reads): the caller then asks ``pack``."""
        read, scan = await scans.pack_scan(gtin, serial, single=SINGLE_PACK, wide=BATCH_WIDE)
        if not read:
            return None
        return self._public_report(scan, gtin, serial, lot=lot, expiry=expiry)

    def public_pack_now(self, gtin: str, serial: str, *, lot: str | None = None,
                        expiry: dt.date | None = None) -> PackReport | None:
        """``public_pack`` read by the calling thread (SQLite: a local file, which writers do not hold up), with
        the same bound on its work: None when the provenance needs an entry body or an actor not cached."""
        with self.ledger.store.read_statements() as u:
            scan = u.pack_scan(gtin, serial, single=SINGLE_PACK, wide=BATCH_WIDE)
        return self._public_report(scan, gtin, serial, lot=lot, expiry=expiry)

    def _public_report(self, scan: tuple[Pack, Batch, int, list[TrailRow]] | None, gtin: str, serial: str, *,
                       lot: str | None, expiry: dt.date | None) -> PackReport | None:
        pack, batch, trail = (scan[0], scan[1], scan[3]) if scan is not None else (None, None, [])
        steps = self._steps_from_trail(trail, serial)
        if steps is None:
            return None
        finding = judge(pack, batch, gtin=gtin, serial=serial, lot=lot, expiry=expiry, now=self.ledger.clock(),
                        scanner=None, scanner_holds_pooled=False)
        return PackReport(gtin, serial, finding, batch, steps)

    def _steps(self, u: SqlUnit, trail: list[TrailRow], serial: str) -> list[Step]:
        """The pack's provenance from its trail (indexed columns and the shipment_packs projection, read in the
        snapshot its verdict came from), reading a signed entry body only for the rare events that need it
        (destructions, entries older than the serial column): a scan must stay fast however long the batch's
        history grows."""
        steps = []
        for index, kind, actor_id, received, _event_id, event_serial in trail:
            if kind in SHIPMENT_KINDS:
                keep = True  # the database kept only the shipments that may hold the pack
            elif _needs_body(kind, event_serial):
                stored = u.entry(index)
                keep = stored is not None and concerns_pack(Entry.from_leaf(stored.leaf), serial)
            else:
                keep = concerns(kind, event_serial, None, serial)
            if keep:
                steps.append(_step(index, kind, actor_id, received, self._shown_actor(u, actor_id)))
        return steps

    def _steps_from_trail(self, trail: list[TrailRow], serial: str) -> list[Step] | None:
        """``_steps`` when it would read nothing more (no entry body, every actor cached), else None."""
        now = time.monotonic()
        steps = []
        for index, kind, actor_id, received, _event_id, event_serial in trail:
            if _needs_body(kind, event_serial):
                return None
            if kind in SHIPMENT_KINDS or concerns(kind, event_serial, None, serial):
                cached = self._actor_cache.get(actor_id)
                if cached is None or now - cached[0] >= ACTOR_DISPLAY_SECONDS:
                    return None
                steps.append(_step(index, kind, actor_id, received, cached[1]))
        return steps

    def recall(self, gtin: str, lot: str, who: Principal) -> RecallReport:
        """Who holds the recalled stock and how much came back (regulators, inspectors, the manufacturer)."""
        with self.ledger.store.read() as u:
            batch = self._visible_batch(u, gtin, lot, who)
            if not (who.oversees or who.actor.id == batch.manufacturer):
                raise E.RoleNotAllowed("recall progress is for regulators, inspectors and the manufacturer")
            stored = u.chain_entries(batch_chain(gtin, lot)) + u.registry_entries()
        return recall_report([Entry.from_leaf(e.leaf) for e in stored], gtin, lot)

    def recalled_batches(self, who: Principal) -> list[RecallReport]:
        if not who.oversees:
            raise E.RoleNotAllowed("only regulators and inspectors see every recall")
        with self.ledger.store.read() as u:
            recalled = [b for b in u.batches() if b.status == "recalled"]
        return [self.recall(b.gtin, b.lot, who) for b in recalled]

    # ---- offline bundles ---------------------------------------------------------------------------------------

    def bundle(self, who: Principal, *, batches: Sequence[tuple[str, str]] = (), region: str | None = None,
               actor: str | None = None) -> dict[str, Any]:
        """A signed offline bundle for chosen batches, every batch held in a region, or everything an actor
        handled. Regions and other actors' stock are for regulators and inspectors."""
        if (region is not None or (actor is not None and actor != who.actor.id)) and not who.oversees:
            raise E.RoleNotAllowed("only regulators and inspectors may bundle a region or another actor's stock")
        with self.ledger.store.read(snapshot=True) as u:  # build_bundle checks chains against their heads
            wanted: set[tuple[str, str]] = set()
            for gtin, lot in batches:
                self._visible_batch(u, gtin, lot, who)
                wanted.add((gtin, lot))
            if actor is not None:
                wanted |= u.batches_of_actor(actor)
            if region is not None:
                for a in u.actors():
                    if a.region == region:
                        wanted |= u.batches_of_actor(a.id)
            if not wanted:
                raise E.NotFound("no batch matches: name batches, a region or an actor")
            return build_bundle(u, self.ledger.config.ledger_key, [batch_chain(g, lot) for g, lot in wanted],
                                created=self.ledger.clock())

    def pack_bundle(self, gtin: str, serial: str) -> dict[str, Any]:
        """A one-pack bundle (``ledger.pack_bundle``): public, like the pack's verdict and provenance. One snapshot
        is enough: ``pack_scan`` reads the pack, its batch, its trail and the log size they reflect in one
        statement, and all the rest is read by that size from rows never changed (checkpoint, nodes, entry, key)."""
        with self.ledger.store.read_statements() as u:
            scan = u.pack_scan(gtin, serial, single=SINGLE_PACK, wide=BATCH_WIDE)
            if scan is None:
                raise E.UnknownPack(f"no pack with GTIN {gtin} and serial {serial} was ever registered: there is "
                                 "nothing to bundle (scan it for a verdict)")
            pack, batch, size, trail = scan
            return build_pack_bundle(u, self.ledger.config.ledger_key, pack, batch, size,
                                     self._steps(u, trail, serial), created=self.ledger.clock())

    # ---- oversight -------------------------------------------------------------------------------------------

    def alerts(self, who: Principal, status: str | None = None, limit: int = 500, *, kind: str | None = None,
               suspect: str | None = None, gtin: str | None = None, before: int | None = None) -> list[AlertRecord]:
        """Newest first; ``before``: only alerts logged before that log index (the next page)."""
        if not who.oversees:
            raise E.RoleNotAllowed("only regulators and inspectors may read alerts")
        with self.ledger.store.read() as u:
            return u.alerts(status, limit, kind=kind, suspect=suspect, gtin=gtin, before=before)

    def entries(self, start: int, end: int, who: Principal) -> list[StoredEntry]:
        if not who.oversees:
            raise E.RoleNotAllowed("only regulators and inspectors may read the raw log; actors read the "
                                   "histories of the batches they handled")
        return self.ledger.entries(start, end, MAX_ENTRIES_BYTES)


def _needs_body(kind: str, event_serial: str | None) -> bool:
    """Whether a trail entry's relevance to a pack is known only from its signed body."""
    return kind == "destroy" or (kind in SINGLE_PACK and event_serial is None)


def _step(index: int, kind: str, actor_id: str, received: dt.datetime, actor: Actor | None) -> Step:
    return Step(index, kind, actor_id, actor.name if actor else actor_id, actor.role.value if actor else "",
                actor.region if actor else "", received)


def prove(u: SqlUnit, entries: Sequence[StoredEntry], tree_size: int) -> list[ProvedEntry]:
    return [ProvedEntry(e, proof) for e, proof in prove_entries(u, entries, tree_size)]


@dataclass(frozen=True)
class AlertStats:
    by_status: dict[str, int]
    by_kind: dict[str, int]
    closed_false_alarm: int
    closed_confirmed: int

    @property
    def false_alert_rate(self) -> float | None:
        """Share of closed alerts that turned out false: the figure that buried real alerts in the EU."""
        closed = self.by_status.get("closed", 0)
        return None if closed == 0 else self.closed_false_alarm / closed


class Oversight:
    """Read models for the regulator: alert statistics, risk, volumes and dwell times."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.ledger = reader.ledger

    def _require(self, who: Principal) -> None:
        if not who.oversees:
            raise E.RoleNotAllowed("only regulators and inspectors may read oversight data")

    def alert_stats(self, who: Principal) -> AlertStats:
        self._require(who)
        with self.ledger.store.read() as u:
            rows = u.alert_counts()
        by_status: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        false_alarm = confirmed = 0
        for status, outcome, kind, n in rows:
            by_status[status] = by_status.get(status, 0) + n
            by_kind[kind] = by_kind.get(kind, 0) + n
            false_alarm += n if outcome == "false_alarm" else 0
            confirmed += n if outcome == "confirmed" else 0
        return AlertStats(by_status, by_kind, false_alarm, confirmed)

    def risk(self, who: Principal, thresholds: RiskThresholds | None = None) -> RiskReport:
        """The risk report, recomputed from the whole log at most once a minute for a given log size (it
        reads every entry; the dashboard and the API share it)."""
        self._require(who)
        size, now = self.ledger.size(), self.ledger.clock()
        cached = self.reader.risk_cache
        if thresholds is None and cached is not None and cached[0] == size and \
                (now - cached[1]).total_seconds() < RISK_CACHE_SECONDS:
            return cached[2]
        report = assess(self._all_entries(), now=now, thresholds=thresholds)
        if thresholds is None:
            self.reader.risk_cache = (size, now, report)
        return report

    def _all_entries(self) -> Iterator[Entry]:
        size, start = self.ledger.size(), 0
        while start < size:
            page = self.ledger.entries(start, size, MAX_ENTRIES_BYTES)
            for stored in page:
                yield Entry.from_leaf(stored.leaf)
            # a page holds every entry stored up to where it was cut; missing ones (which the audit reports) are
            # passed over, as the report covers what is there
            start = page[-1].index + 1 if page else start + MAX_ENTRIES_PAGE

    def volumes(self, who: Principal, days: int = 60) -> list[tuple[str, dt.date, int]]:
        self._require(who)
        with self.ledger.store.read() as u:
            return u.dispensed_by_region_day(self.ledger.clock() - dt.timedelta(days=days))

    def dwell_histogram(self, who: Principal, bins: Sequence[float] = (7, 30, 90, 180, 365)) -> list[tuple[str, int]]:
        self._require(who)
        with self.ledger.store.read() as u:
            days = u.dwell_days()
        edges = [0.0, *bins]
        labels = [f"{int(a)}–{int(b)} d" for a, b in itertools.pairwise(edges)] + [f"> {int(bins[-1])} d"]
        counts = [0] * len(labels)
        for d in days:
            counts[next((i for i, b in enumerate(bins) if d < b), len(bins))] += 1
        return list(zip(labels, counts, strict=True))
