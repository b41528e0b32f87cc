"""Risk indicators for the regulator: scores per actor, per region and per batch, each explained by its signals.

``assess`` replays the log (the custody rules over an in-memory state, as ``ledger.audit`` does, without the
signature checks, which are the audit's job), runs every detector of ``ledger.risk_signals`` and combines
the signals of each subject into a score:

    score = 1 - (1 - s1)(1 - s2)...     (noisy-OR: one strong signal flags; weak ones corroborate)

A subject is flagged when its score reaches ``RiskThresholds.flag_score``. Nothing is a black box: every
score lists the signals behind it, each with a sentence giving the numbers and the log entries that show it.
The indicators support risk-based control (where to inspect first), not sanctions: a signal is a reason to
look, and the evidence entries are where to look.

Regions get the region-level signals (a clone surfacing there) and an ``actor_risk`` signal: the mean score
of the custodians registered there, so one flagged pharmacy among many does not flag its region, while a
region where most actors are flagged does.

This module holds the types, the robust statistics and the replay; ``ledger.risk_signals`` the detectors.
Pure: no database, no HTTP, no clock (``now`` is a parameter).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ledger import errors as E
from ledger import events as ev
from ledger.custody import Context, decide
from ledger.entry import Entry
from ledger.identifiers import CUSTODIANS, Channel, Role
from ledger.replay import MemoryState
from ledger.state import Actor, is_expired

ACTOR, REGION, BATCH = "actor", "region", "batch"
#: alert kinds that are suspect scans at the place that made them (ledger.errors codes)
SUSPECT_SCAN_KINDS = frozenset({E.DuplicateDispense.code, E.NotInCustody.code, E.UnknownPack.code,
                                E.MismatchError.code})
MAD_SCALE = 0.6745  # modified z-score: 0.6745 * (x - median) / MAD (Iglewicz & Hoaglin, 1993)
MEAN_AD_SCALE = 1.253314  # when MAD is 0: (x - median) / (1.253314 * mean absolute deviation)


@dataclass(frozen=True)
class RiskThresholds:
    """Every threshold a signal uses; the report echoes them so a reader knows what was measured.

    flag_score: a subject whose combined score reaches this is flagged.
    robust_z: a peer comparison fires only above this robust z (modified z-score; 3.5 is the usual cut).
    min_peers: a subject is compared with the other actors of its role (itself left out) in its region when
        the region has at least this many of them (itself included), else nationally; with fewer than this
        many nationally it is not compared.
    outlier_min_ratio: a peer outlier must also be at least this many times the peer median (or below it).
    window_days: dispensing, undo and destruction volumes are counted over the last this many days.
    dispense_min: dispensing volumes below this are never outliers.
    stagnant_days, stagnant_min_units, stagnant_max_outflow_share: stock of one batch sitting unmoved longer
        than ``stagnant_days`` at a distributor, pharmacy or hospital, at least ``stagnant_min_units`` packs,
        when it moved on (shipped, returned, destroyed, dispensed) at most this share of what it received.
    expired_grace_days: expired stock still held this many days after expiry.
    dwell_min_units, dwell_min_diff_hours: dwell comparisons need this many packs, and a median dwell at
        least this far from the peer median.
    passthrough_hours, passthrough_min_units, passthrough_share: a receipt of at least the minimum, of
        which at least this share is shipped on within this many hours.
    circular_days, circular_min_units: A ships to B, B ships the same batch back to A within this many days.
    transit_days: a shipment in transit, or received after, longer than this.
    suspect_scan_min, suspect_scan_days: this many suspect-scan alerts at one actor within this many days.
    recall_grace_days: recalled stock still held this many days after the recall.
    clone_travel_hours: a serial dispensed in two regions within this many hours.
    undo_min, undo_min_rate: undone dispenses: at least this many, and this share of the actor's dispenses.
    destroy_min_units, destroy_min_share: stock of usable batches declared destroyed: at least this many
        packs and this share of what the actor received.
    max_evidence: at most this many entry indices per signal (the explanation gives the full count).
    """

    flag_score: float = 0.5
    robust_z: float = 3.5
    min_peers: int = 4
    outlier_min_ratio: float = 3.0
    window_days: float = 90.0
    dispense_min: int = 50
    stagnant_days: float = 30.0
    stagnant_min_units: int = 50
    stagnant_max_outflow_share: float = 0.1
    expired_grace_days: float = 30.0
    dwell_min_units: int = 50
    dwell_min_diff_hours: float = 24.0
    passthrough_hours: float = 6.0
    passthrough_min_units: int = 50
    passthrough_share: float = 0.8
    circular_days: float = 30.0
    circular_min_units: int = 10
    transit_days: float = 7.0
    suspect_scan_min: int = 3
    suspect_scan_days: float = 30.0
    recall_grace_days: float = 14.0
    clone_travel_hours: float = 24.0
    undo_min: int = 5
    undo_min_rate: float = 0.05
    destroy_min_units: int = 20
    destroy_min_share: float = 0.1
    max_evidence: int = 200


@dataclass(frozen=True)
class Signal:
    kind: str
    subject: str  # actor id, region name or "gtin/lot"
    level: str  # actor | region | batch
    score: float  # 0..1 contribution
    explanation: str
    evidence: tuple[int, ...]  # log entry indices


# ---- robust statistics ------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def mad(values: Sequence[float]) -> float:
    """Median absolute deviation from the median (unscaled)."""
    m = median(values)
    return median([abs(v - m) for v in values])


def robust_z(x: float, population: Sequence[float]) -> float:
    """Modified z-score of ``x`` against ``population``: 0.6745 (x - median) / MAD.

    When more than half the population is equal (MAD = 0) the mean absolute deviation is used instead
    (scaled by 1.253314); when every value is equal, any other value is infinitely far.
    """
    m = median(population)
    spread = mad(population)
    if spread > 0:
        return MAD_SCALE * (x - m) / spread
    mean_ad = sum(abs(v - m) for v in population) / len(population)
    if mean_ad > 0:
        return (x - m) / (MEAN_AD_SCALE * mean_ad)
    return 0.0 if x == m else math.copysign(math.inf, x - m)


def weighted_median(samples: Iterable[tuple[float, int]]) -> float:
    """The (lower) median of values with integer weights, e.g. dwell hours weighted by packs."""
    pairs = sorted((v, w) for v, w in samples if w > 0)
    total = sum(w for _, w in pairs)
    if total == 0:
        raise ValueError("weighted median of no values")
    seen = 0
    for value, weight in pairs:
        seen += weight
        if 2 * seen >= total:
            return value
    return pairs[-1][0]  # pragma: no cover


def ramp(value: float, low: float, high: float) -> float:
    """0 at ``low`` or below, 1 at ``high`` or above, linear in between."""
    if math.isinf(value):
        return 1.0 if value > 0 else 0.0
    if high <= low:
        return 1.0 if value >= high else 0.0
    return min(1.0, max(0.0, (value - low) / (high - low)))


def score_of(base: float, severity: float, span: float = 0.3) -> float:
    return round(min(1.0, base + span * severity), 4)


# ---- facts from a replay ----------------------------------------------------------------------------------


@dataclass
class Layer:
    """Packs an actor took in at one time (FIFO inventory layer), to measure dwell times."""

    at: dt.datetime
    qty: int
    evidence: tuple[int, ...]  # the entries that brought it: (ship, receive), (commission,), (undo,)
    source: str  # commission | receive | refuse | undo
    received_qty: int


@dataclass(frozen=True)
class Moved:
    """A portion of a layer that left an actor."""

    actor: str
    gtin: str
    lot: str
    kind: str  # ship | return | destroy | dispense
    qty: int
    index: int
    at: dt.datetime
    layer: Layer


@dataclass
class ShipmentFact:
    id: str
    kind: str  # ship | return
    gtin: str
    lot: str
    sender: str
    recipient: str
    quantity: int
    channel: str | None
    batch_channel: str
    shipped_index: int
    shipped_at: dt.datetime
    taken: list[tuple[Layer, int]]
    status: str = "in_transit"
    closed_index: int | None = None
    closed_at: dt.datetime | None = None


@dataclass(frozen=True)
class PackEvent:
    """A dispense or an undone dispense."""

    index: int
    at: dt.datetime
    actor: str
    gtin: str
    lot: str
    serial: str


@dataclass(frozen=True)
class DestroyFact:
    index: int
    at: dt.datetime
    actor: str
    gtin: str
    lot: str
    qty: int
    usable: bool  # the batch was active and unexpired: not a recall or expiry clean-up


@dataclass(frozen=True)
class AlertFact:
    index: int
    at: dt.datetime
    kind: str
    suspect: str
    gtin: str | None
    lot: str | None
    serial: str | None
    first_by: str | None = None  # for duplicate_dispense: who dispensed the pack first
    first_index: int | None = None
    first_at: dt.datetime | None = None


@dataclass
class Facts:
    now: dt.datetime
    state: MemoryState = field(default_factory=MemoryState)
    shipments: dict[str, ShipmentFact] = field(default_factory=dict)
    dispenses: list[PackEvent] = field(default_factory=list)
    undos: list[PackEvent] = field(default_factory=list)
    destroys: list[DestroyFact] = field(default_factory=list)
    alerts: list[AlertFact] = field(default_factory=list)
    recalls: dict[tuple[str, str], tuple[int, dt.datetime]] = field(default_factory=dict)
    layers: dict[tuple[str, str, str], deque[Layer]] = field(default_factory=lambda: defaultdict(deque))
    moved: list[Moved] = field(default_factory=list)
    received: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    outflow: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    skipped: list[int] = field(default_factory=list)

    def actor(self, actor_id: str) -> Actor | None:
        return self.state.actors.get(actor_id)

    def role(self, actor_id: str) -> Role | None:
        a = self.state.actors.get(actor_id)
        return a.role if a else None

    def region(self, actor_id: str) -> str:
        a = self.state.actors.get(actor_id)
        return a.region if a else "unknown"

    def custodians(self) -> list[Actor]:
        return sorted((a for a in self.state.actors.values() if a.role in CUSTODIANS), key=lambda a: a.id)

    def age_days(self, t: dt.datetime) -> float:
        return (self.now - t).total_seconds() / 86400

    # ---- inventory layers ----

    def push(self, actor: str, gtin: str, lot: str, layer: Layer) -> None:
        self.layers[(actor, gtin, lot)].append(layer)

    def take(self, actor: str, gtin: str, lot: str, qty: int, kind: str, index: int,
             at: dt.datetime) -> list[tuple[Layer, int]]:
        queue = self.layers[(actor, gtin, lot)]
        taken: list[tuple[Layer, int]] = []
        left = qty
        while left > 0 and queue:
            layer = queue[0]
            n = min(left, layer.qty)
            layer.qty -= n
            left -= n
            taken.append((layer, n))
            self.moved.append(Moved(actor, gtin, lot, kind, n, index, at, layer))
            if layer.qty == 0:
                queue.popleft()
        self.outflow[(actor, gtin, lot)] += qty
        return taken

    def observe(self, event: ev.Event, index: int, at: dt.datetime) -> None:
        """Record what an accepted event means for the signals (called before its changes are applied)."""
        state = self.state
        if isinstance(event, ev.Commission):
            n = len(event.serials)
            self.push(event.actor, event.gtin, event.lot, Layer(at, n, (index,), "commission", n))
        elif isinstance(event, ev.Ship | ev.Return):
            batch = state.batch(event.gtin, event.lot)
            taken = self.take(event.actor, event.gtin, event.lot, event.quantity, event.type, index, at)
            channel = event.channel.value if isinstance(event, ev.Ship) else None
            self.shipments[event.id] = ShipmentFact(
                event.id, event.type, event.gtin, event.lot, event.actor, event.to, event.quantity, channel,
                batch.channel.value if batch else Channel.PRIVATE.value, index, at, taken)
        elif isinstance(event, ev.Receive | ev.Refuse):
            s = self.shipments.get(event.shipment)
            if s is None:
                return
            s.status, s.closed_index, s.closed_at = ("received" if isinstance(event, ev.Receive) else "refused",
                                                     index, at)
            if isinstance(event, ev.Receive):
                self.received[(s.recipient, s.gtin, s.lot)] += s.quantity
                self.push(s.recipient, s.gtin, s.lot,
                          Layer(at, s.quantity, (s.shipped_index, index), "receive", s.quantity))
            else:  # custody returns to the sender, with the age its stock had
                for layer, n in s.taken:
                    self.push(s.sender, s.gtin, s.lot, Layer(layer.at, n, (*layer.evidence, index), "refuse", n))
                self.outflow[(s.sender, s.gtin, s.lot)] -= s.quantity
        elif isinstance(event, ev.Dispense):
            pack = state.pack(event.gtin, event.serial)
            if pack is None:
                return
            self.take(event.actor, event.gtin, pack.lot, 1, "dispense", index, at)
            self.dispenses.append(PackEvent(index, at, event.actor, event.gtin, pack.lot, event.serial))
        elif isinstance(event, ev.UndoDispense):
            pack = state.pack(event.gtin, event.serial)
            if pack is None:
                return
            self.push(event.actor, event.gtin, pack.lot, Layer(at, 1, (index,), "undo", 1))
            self.outflow[(event.actor, event.gtin, pack.lot)] -= 1
            self.undos.append(PackEvent(index, at, event.actor, event.gtin, pack.lot, event.serial))
        elif isinstance(event, ev.Destroy):
            batch = state.batch(event.gtin, event.lot)
            usable = batch is not None and batch.status == "active" and not is_expired(batch, at)
            self.take(event.actor, event.gtin, event.lot, event.quantity, "destroy", index, at)
            self.destroys.append(DestroyFact(index, at, event.actor, event.gtin, event.lot, event.quantity, usable))
        elif isinstance(event, ev.Recall):
            self.recalls[(event.gtin, event.lot)] = (index, at)
        elif isinstance(event, ev.Alert):
            first = state.pack(event.gtin, event.serial) if event.gtin and event.serial else None
            dup = event.kind == E.DuplicateDispense.code and first is not None
            self.alerts.append(AlertFact(
                index, at, event.kind, event.suspect, event.gtin, event.lot, event.serial,
                first.dispensed_by if dup and first else None, first.dispensed_index if dup and first else None,
                first.dispensed_at if dup and first else None))


def replay(entries: Iterable[Entry], now: dt.datetime) -> Facts:
    """Replay the custody rules over the entries (no signature checks: ``ledger.audit`` does those).

    An entry the rules refuse (a log that does not verify) is skipped and listed in ``Facts.skipped``.
    """
    facts = Facts(now)
    for entry in sorted(entries, key=lambda e: e.index):
        try:
            event = ev.parse_event(entry.signed.body)
            decision = decide(event, Context(entry.index, entry.received), facts.state)
        except E.LedgerError:
            facts.skipped.append(entry.index)
            continue
        facts.observe(event, entry.index, entry.received)
        facts.state.apply(decision.changes)
    return facts


# ---- scores and the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RiskScore:
    subject: str
    level: str  # actor | region | batch
    score: float
    signals: tuple[Signal, ...]
    flagged: bool = False

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(s.kind for s in self.signals)


@dataclass(frozen=True)
class RiskReport:
    generated_at: dt.datetime
    actors: tuple[RiskScore, ...]  # sorted by score, highest first
    regions: tuple[RiskScore, ...]
    batches: tuple[RiskScore, ...]
    thresholds: Mapping[str, float]
    entries: int = 0  # log entries assessed
    skipped: tuple[int, ...] = field(default=())  # entries the custody rules refused on replay (audit them)

    def flagged(self, level: str | None = None) -> tuple[RiskScore, ...]:
        rows = {ACTOR: self.actors, REGION: self.regions, BATCH: self.batches}
        levels = [level] if level else [ACTOR, REGION, BATCH]
        return tuple(r for lv in levels for r in rows[lv] if r.flagged)

    def get(self, level: str, subject: str) -> RiskScore | None:
        rows = {ACTOR: self.actors, REGION: self.regions, BATCH: self.batches}[level]
        return next((r for r in rows if r.subject == subject), None)


def combine(scores: Iterable[float]) -> float:
    """Noisy-OR of signal scores, in 0..1."""
    keep = 1.0
    for s in scores:
        keep *= 1.0 - min(1.0, max(0.0, s))
    return round(1.0 - keep, 4)


def _rank(level: str, subjects: Iterable[str], signals: Mapping[str, list[Signal]],
          t: RiskThresholds) -> tuple[RiskScore, ...]:
    rows = []
    for subject in set(subjects) | set(signals):
        own = tuple(sorted(signals.get(subject, []), key=lambda s: (-s.score, s.kind, s.evidence)))
        score = combine(s.score for s in own)
        rows.append(RiskScore(subject, level, score, own, flagged=score >= t.flag_score))
    return tuple(sorted(rows, key=lambda r: (-r.score, r.subject)))


def assess(entries: Iterable[Entry], *, now: dt.datetime, thresholds: RiskThresholds | None = None) -> RiskReport:
    """Replay ``entries`` (a whole log, in any order) and score every custodian, region and batch at ``now``."""
    t = thresholds or RiskThresholds()
    listed = list(entries)
    from ledger.risk_signals import DETECTORS  # the detectors build on the types above

    facts = replay(listed, now)
    by_level: dict[str, dict[str, list[Signal]]] = {ACTOR: defaultdict(list), REGION: defaultdict(list),
                                                     BATCH: defaultdict(list)}
    for detect in DETECTORS:
        for signal in detect(facts, t):
            by_level[signal.level][signal.subject].append(signal)

    custodians = facts.custodians()
    actors = _rank(ACTOR, (a.id for a in custodians), by_level[ACTOR], t)
    batches = _rank(BATCH, (f"{g}/{lot}" for g, lot in facts.state.batches), by_level[BATCH], t)

    actor_scores = {r.subject: r for r in actors}
    regions: dict[str, list[str]] = defaultdict(list)
    for a in custodians:
        regions[a.region].append(a.id)
    for region, members in regions.items():
        risky = sorted((actor_scores[m] for m in members if actor_scores[m].score > 0), key=lambda r: -r.score)
        if not risky:
            continue
        mean = round(sum(r.score for r in risky) / len(members), 4)
        named = ", ".join(f"{r.subject} {r.score:.2f} ({', '.join(sorted(r.kinds))})" for r in risky)
        text = (f"{len(risky)} of the {len(members)} custodians registered in {region} carry risk signals "
                f"({named}); their mean score is {mean:.2f}.")
        evidence = tuple(sorted({i for r in risky for s in r.signals for i in s.evidence}))[: t.max_evidence]
        by_level[REGION][region].append(Signal("actor_risk", region, REGION, mean, text, evidence))
    region_rows = _rank(REGION, regions, by_level[REGION], t)
    return RiskReport(now, actors, region_rows, batches,
                      {f.name: float(getattr(t, f.name)) for f in fields(t)}, len(listed), tuple(facts.skipped))


# ---- JSON -----------------------------------------------------------------------------------------------------


def _signal_json(s: Signal) -> dict[str, Any]:
    return {"kind": s.kind, "subject": s.subject, "level": s.level, "score": s.score,
            "explanation": s.explanation, "evidence": list(s.evidence)}


def _score_json(r: RiskScore) -> dict[str, Any]:
    return {"subject": r.subject, "level": r.level, "score": r.score, "flagged": r.flagged,
            "signals": [_signal_json(s) for s in r.signals]}


def to_json(report: RiskReport) -> dict[str, Any]:
    """The report as JSON-ready data (for the API)."""
    return {
        "generated_at": ev.format_time(report.generated_at),
        "entries": report.entries,
        "skipped": list(report.skipped),
        "thresholds": dict(report.thresholds),
        "actors": [_score_json(r) for r in report.actors],
        "regions": [_score_json(r) for r in report.regions],
        "batches": [_score_json(r) for r in report.batches],
    }
