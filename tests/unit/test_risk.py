"""ledger.risk on tiny hand-built logs (no database): robust statistics with known answers, and each signal,
firing on its pattern and staying silent on the normal case next to it."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest

from ledger import errors as E
from ledger import events as ev
from ledger.builder import EventBuilder
from ledger.custody import Context, decide
from ledger.entry import Entry, SignedEvent
from ledger.replay import MemoryState
from ledger.risk import (
    RiskReport,
    RiskThresholds,
    Signal,
    assess,
    combine,
    mad,
    median,
    ramp,
    robust_z,
    to_json,
    weighted_median,
)
from signing import KeyPair

GTIN = "06111234567895"
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
EXPIRY = dt.date(2028, 6, 30)
ROOT_KEY = KeyPair.from_seed(b"r" * 32)
LEDGER_KEY = KeyPair.from_seed(b"l" * 32)
ACTORS = {  # id -> (role, region)
    "maphar": ("manufacturer", "Casablanca-Settat"),
    "rep-a": ("distributor", "Casablanca-Settat"),
    "rep-b": ("distributor", "Fès-Meknès"),
    "rep-c": ("distributor", "Souss-Massa"),
    "rep-d": ("distributor", "Oriental"),
    "ph-1": ("pharmacy", "Rabat-Salé-Kénitra"),
    "ph-2": ("pharmacy", "Rabat-Salé-Kénitra"),
    "ph-3": ("pharmacy", "Rabat-Salé-Kénitra"),
    "ph-4": ("pharmacy", "Rabat-Salé-Kénitra"),
    "ph-far": ("pharmacy", "Oriental"),
    "chu": ("hospital", "Rabat-Salé-Kénitra"),
}


class Log:
    """A tiny sequencer over MemoryState that keeps the entries, and records refusals as alerts like the ledger."""

    def __init__(self) -> None:
        self.state = MemoryState()
        self.entries: list[Entry] = []
        self.now = START
        self.keys = {a: KeyPair.from_seed(bytes([n + 1]) * 32) for n, a in enumerate(ACTORS)}
        self.lots: dict[str, list[str]] = {}
        root = EventBuilder(ev.ROOT_ACTOR, ROOT_KEY, self.clock)
        for actor, (role, region) in ACTORS.items():
            self.add(root.register_actor(actor, actor, role, region, self.keys[actor].public.b64))

    def clock(self) -> dt.datetime:
        return self.now

    def later(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)

    def as_(self, actor: str) -> EventBuilder:
        return EventBuilder(actor, self.keys[actor], self.clock)

    def add(self, signed: SignedEvent) -> int:
        index = len(self.entries)
        decision = decide(ev.parse_event(signed.body), Context(index, self.now), self.state)
        self.state.apply(decision.changes)
        self.entries.append(Entry(index, self.now, decision.chain, None, signed))
        return index

    def refused(self, signed: SignedEvent) -> int:
        """The event must be refused with an alert-raising error; record the alert as the ledger does."""
        event = ev.parse_event(signed.body)
        with pytest.raises(E.LedgerError) as info:
            decide(event, Context(len(self.entries), self.now), self.state)
        err = info.value
        assert err.raises_alert
        body: dict[str, Any] = {"v": 1, "type": "alert", "id": f"alert:{len(self.entries)}", "actor": ev.LEDGER_ACTOR,
                                "time": ev.format_time(self.now), "kind": err.code, "message": err.message,
                                "suspect": event.actor, "evidence": signed.to_json()}
        for name in ("gtin", "lot", "serial"):
            value = err.details.get(name, getattr(event, name, None))
            if isinstance(value, str):
                body[name] = value
        pack = self.state.pack(body.get("gtin", ""), body.get("serial", ""))
        if "lot" not in body and pack is not None:
            body["lot"] = pack.lot
        return self.add(SignedEvent.create(body, LEDGER_KEY))

    # ---- common moves ----

    def commission(self, lot: str = "L1", n: int = 100, expiry: dt.date = EXPIRY, channel: str = "private") -> None:
        self.lots[lot] = [f"{lot}S{i:04d}" for i in range(n)]
        self.add(self.as_("maphar").commission(GTIN, lot, expiry, "Amoxicilline", self.lots[lot], channel=channel))

    def ship(self, sender: str, to: str, n: int, lot: str = "L1", channel: str = "private") -> tuple[str, int]:
        signed = self.as_(sender).ship(GTIN, lot, to, quantity=n, channel=channel)
        return signed.event_id, self.add(signed)

    def deliver(self, sender: str, to: str, n: int, lot: str = "L1", channel: str = "private",
                transit: dt.timedelta = dt.timedelta(hours=4)) -> tuple[int, int]:
        shipment, shipped = self.ship(sender, to, n, lot, channel)
        self.now += transit
        return shipped, self.add(self.as_(to).receive(shipment))

    def dispense(self, actor: str, count: int, lot: str = "L1") -> list[int]:
        out = []
        for _ in range(count):
            serial = self.lots[lot].pop()
            out.append(self.add(self.as_(actor).dispense(GTIN, serial, lot=lot)))
        return out

    def assess(self, **thresholds: Any) -> RiskReport:
        return assess(self.entries, now=self.now, thresholds=RiskThresholds(**thresholds))


def signals(report: RiskReport, kind: str, level: str | None = None) -> list[Signal]:
    rows = [*report.actors, *report.regions, *report.batches]
    return [s for r in rows for s in r.signals if s.kind == kind and (level is None or s.level == level)]


def subjects(report: RiskReport, kind: str, level: str = "actor") -> set[str]:
    return {s.subject for s in signals(report, kind, level)}


# ---- robust statistics --------------------------------------------------------------------------------------


def test_median_and_mad_known_answers() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert mad([1, 2, 3, 4, 100]) == 1  # deviations from 3: 2 1 0 1 97
    with pytest.raises(ValueError):
        median([])


def test_robust_z_known_answers() -> None:
    assert robust_z(100, [1, 2, 3, 4, 100]) == pytest.approx(0.6745 * 97)
    assert robust_z(3, [1, 2, 3, 4, 100]) == 0
    assert robust_z(1, [1, 2, 3, 4, 100]) == pytest.approx(-0.6745 * 2)
    # MAD is 0 (most values equal): mean absolute deviation 0.8, scaled by 1.253314
    assert robust_z(9, [5, 5, 5, 5, 9]) == pytest.approx(4 / (1.253314 * 0.8))
    assert robust_z(5, [5, 5, 5]) == 0
    assert robust_z(6, [5, 5, 5]) == math.inf and robust_z(4, [5, 5, 5]) == -math.inf
    # an outlier does not drag the median and MAD the way it drags a mean and standard deviation
    assert robust_z(52, [50, 51, 52, 53, 54, 500]) < 1


def test_weighted_median_ramp_combine() -> None:
    assert weighted_median([(1.0, 1), (10.0, 5)]) == 10
    assert weighted_median([(1.0, 3), (10.0, 3)]) == 1
    assert (ramp(0, 1, 3), ramp(2, 1, 3), ramp(5, 1, 3), ramp(math.inf, 1, 3)) == (0, 0.5, 1, 1)
    assert combine([]) == 0 and combine([0.5, 0.5]) == 0.75 and combine([1.0, 0.2]) == 1.0


# ---- leakage ---------------------------------------------------------------------------------------------------


def test_stagnant_stock_at_a_distributor_that_never_ships() -> None:
    log = Log()
    log.commission(n=200)
    shipped, received = log.deliver("maphar", "rep-a", 60)
    log.deliver("maphar", "rep-b", 60)
    log.later(days=1)
    log.deliver("rep-b", "ph-1", 45)  # rep-b moves its stock on: normal (and ph-1 holds under the minimum)
    log.later(days=40)
    report = log.assess()
    [sig] = signals(report, "stagnant_stock", "actor")
    assert sig.subject == "rep-a" and set(sig.evidence) == {shipped, received}
    assert "received 60 pack(s)" in sig.explanation and "only 0 (0%)" in sig.explanation
    assert subjects(report, "stagnant_stock", "batch") == {f"{GTIN}/L1"}
    assert report.get("actor", "rep-a") is not None and report.get("actor", "rep-a").flagged  # type: ignore[union-attr]
    assert report.get("actor", "rep-b").score == 0  # type: ignore[union-attr]
    assert not signals(log.assess(stagnant_days=60), "stagnant_stock")  # not stale yet at 41 days


def test_expired_stock_still_held() -> None:
    log = Log()
    log.commission(n=20, expiry=START.date() + dt.timedelta(days=30))
    shipped, received = log.deliver("maphar", "ph-1", 10)
    log.later(days=20)
    assert not signals(log.assess(), "expired_stock_held")
    log.later(days=45)  # 35 days past expiry
    report = log.assess()
    assert subjects(report, "expired_stock_held") == {"ph-1", "maphar"}
    sig = next(s for s in signals(report, "expired_stock_held") if s.subject == "ph-1")
    assert set(sig.evidence) == {shipped, received} and "still holds 10 pack(s)" in sig.explanation


# ---- peer comparisons ------------------------------------------------------------------------------------------


def test_dispensing_outlier_against_regional_peers() -> None:
    log = Log()
    log.commission(n=200)
    for ph, n in (("ph-1", 10), ("ph-2", 10), ("ph-3", 10), ("ph-4", 60)):
        log.deliver("maphar", ph, n)
    normal = [log.dispense(ph, k) for ph, k in (("ph-1", 5), ("ph-2", 6), ("ph-3", 5))]
    heavy = log.dispense("ph-4", 55)
    report = log.assess(dispense_min=20)
    [sig] = signals(report, "dispensing_outlier")
    assert sig.subject == "ph-4" and set(sig.evidence) == set(heavy)
    assert "the 3 other pharmacy actors of Rabat-Salé-Kénitra" in sig.explanation and "robust z" in sig.explanation
    assert not set(sig.evidence) & {i for n in normal for i in n}
    assert not signals(log.assess(dispense_min=100), "dispensing_outlier")  # minimum volume


def test_similar_dispensing_is_not_an_outlier() -> None:
    log = Log()
    log.commission(n=200)
    for ph, k in (("ph-1", 30), ("ph-2", 34), ("ph-3", 28), ("ph-4", 40)):
        log.deliver("maphar", ph, 40)
        log.dispense(ph, k)
    assert not signals(log.assess(dispense_min=20), "dispensing_outlier")


def test_unusual_dwell_against_same_role_peers() -> None:
    log = Log()
    log.commission(n=200)
    for rep in ("rep-a", "rep-b", "rep-c", "rep-d"):
        log.deliver("maphar", rep, 40)
    log.later(days=1)
    for rep, ph in (("rep-a", "ph-1"), ("rep-b", "ph-2"), ("rep-c", "ph-3")):
        log.ship(rep, ph, 40)
    log.later(days=30)
    report = log.assess(dwell_min_units=10)
    [sig] = signals(report, "unusual_dwell")
    assert sig.subject == "rep-d" and "longer than the median" in sig.explanation
    assert not signals(log.assess(dwell_min_units=50), "unusual_dwell")


# ---- flows -----------------------------------------------------------------------------------------------------


def test_fast_pass_through_corroborates_but_does_not_flag_alone() -> None:
    log = Log()
    log.commission(n=100)
    _, received = log.deliver("maphar", "rep-a", 80)
    log.later(minutes=30)
    _, onward = log.ship("rep-a", "ph-1", 80)
    report = log.assess()
    [sig] = signals(report, "fast_pass_through")
    assert sig.subject == "rep-a" and {received, onward} <= set(sig.evidence) and sig.score < 0.5
    assert not report.get("actor", "rep-a").flagged  # type: ignore[union-attr]
    assert not signals(log.assess(passthrough_hours=0.25), "fast_pass_through")


def test_circular_transfer_between_distributors() -> None:
    log = Log()
    log.commission(n=100)
    log.deliver("maphar", "rep-a", 60)
    log.later(days=2)
    there, there_rcv = log.deliver("rep-a", "rep-b", 50)
    log.later(hours=2)
    back, back_rcv = log.deliver("rep-b", "rep-a", 50)
    report = log.assess()
    assert subjects(report, "circular_transfer") == {"rep-a", "rep-b"}
    assert subjects(report, "circular_transfer", "batch") == {f"{GTIN}/L1"}
    assert all(s.evidence == (there, there_rcv, back, back_rcv) for s in signals(report, "circular_transfer"))
    assert not signals(log.assess(circular_days=0.01), "circular_transfer")


def test_shipments_late_or_never_received() -> None:
    log = Log()
    log.commission(n=100)
    log.deliver("maphar", "rep-a", 10, transit=dt.timedelta(days=1))  # normal
    late, late_rcv = log.deliver("maphar", "rep-b", 10, transit=dt.timedelta(days=9))
    _, lost = log.ship("maphar", "ph-1", 10)
    log.later(days=8)
    report = log.assess()
    sigs = signals(report, "late_shipment", "actor")
    assert {s.subject for s in sigs} == {"maphar", "rep-b", "ph-1"}
    assert {s.evidence for s in sigs} == {(late, late_rcv), (lost,)}
    assert any("never received" in s.explanation for s in sigs) and any("received only after 9.0 days" in
                                                                        s.explanation for s in sigs)
    assert "rep-a" not in subjects(report, "late_shipment")


# ---- suspect scans and clones ------------------------------------------------------------------------------------


def test_repeated_suspect_scans_at_one_pharmacy() -> None:
    log = Log()
    log.commission(n=10)
    alerts = []
    for k in range(3):
        log.later(days=2)
        alerts.append(log.refused(log.as_("ph-1").dispense(GTIN, f"FAKE{k}")))
    log.refused(log.as_("ph-2").dispense(GTIN, "FAKE9"))
    report = log.assess()
    [sig] = signals(report, "suspect_scans")
    assert sig.subject == "ph-1" and sig.evidence == tuple(alerts) and "unknown_pack x3" in sig.explanation
    assert not signals(log.assess(suspect_scan_days=3), "suspect_scans")


def test_a_clone_dispensed_in_two_regions_within_hours() -> None:
    log = Log()
    log.commission(n=10)
    log.deliver("maphar", "ph-1", 5)
    [first] = log.dispense("ph-1", 1)
    serial = log.entries[first].signed.body["serial"]
    log.later(hours=2)
    alert = log.refused(log.as_("ph-far").dispense(GTIN, serial))
    log.later(hours=1)
    log.refused(log.as_("ph-2").dispense(GTIN, serial))  # same region as the first dispense: no travel
    report = log.assess()
    sigs = signals(report, "impossible_travel")
    assert {(s.level, s.subject) for s in sigs} == {("actor", "ph-far"), ("region", "Oriental"),
                                                   ("batch", f"{GTIN}/L1")}
    assert all(s.evidence == (first, alert) for s in sigs)
    assert "2.0 hours later" in sigs[0].explanation
    assert not signals(log.assess(clone_travel_hours=1), "impossible_travel")


# ---- recall, channel, spikes -------------------------------------------------------------------------------------


def test_recall_noncompliance() -> None:
    log = Log()
    log.commission(n=100)
    kept_ship, kept_rcv = log.deliver("maphar", "ph-1", 10)
    log.deliver("maphar", "ph-2", 10)
    log.later(days=1)
    recall = log.add(log.as_("maphar").recall(GTIN, "L1", "dissolution"))
    log.later(days=1)
    ret = log.as_("ph-2").return_(GTIN, "L1", "maphar", "rappel", quantity=10)
    log.add(ret)
    log.add(log.as_("maphar").receive(ret.event_id))
    log.later(days=5)
    assert not signals(log.assess(), "recall_noncompliance")  # within the grace period
    log.later(days=20)
    report = log.assess()
    [sig] = signals(report, "recall_noncompliance", "actor")
    assert sig.subject == "ph-1" and set(sig.evidence) == {recall, kept_ship, kept_rcv}
    assert "26 days after" in sig.explanation  # the manufacturer's own stock and ph-2 (returned) are not flagged
    assert subjects(report, "recall_noncompliance", "batch") == {f"{GTIN}/L1"}


def test_public_stock_reaching_a_private_pharmacy() -> None:
    log = Log()
    log.commission(n=100, channel="public")
    log.deliver("maphar", "rep-a", 80, channel="public")
    log.deliver("rep-a", "chu", 40, channel="public")  # a hospital: where public stock belongs
    shipped, received = log.deliver("rep-a", "ph-1", 10, channel="private")  # laundered as private
    sold = log.dispense("ph-1", 2)
    report = log.assess()
    assert subjects(report, "public_stock_private_pharmacy") == {"ph-1", "rep-a"}
    sig = signals(report, "public_stock_private_pharmacy", "batch")[0]
    assert set(sig.evidence) == {shipped, received, *sold}
    assert "declared private although the batch was bought by public tender" in sig.explanation


def test_undo_spike_against_peers() -> None:
    log = Log()
    log.commission(n=200)
    for ph in ("ph-1", "ph-2", "ph-3", "ph-4"):
        log.deliver("maphar", ph, 30)
        log.dispense(ph, 20)
    one = next(e for e in log.entries if e.signed.body.get("actor") == "ph-2" and e.signed.body["type"] == "dispense")
    log.add(log.as_("ph-2").undo_dispense(GTIN, one.signed.body["serial"], "erreur"))  # normal: one
    undone = []
    for entry in [e for e in log.entries if e.signed.body.get("actor") == "ph-4"
                  and e.signed.body["type"] == "dispense"][:8]:
        undone.append(log.add(log.as_("ph-4").undo_dispense(GTIN, entry.signed.body["serial"], "erreur")))
    report = log.assess()
    [sig] = signals(report, "undo_spike")
    assert sig.subject == "ph-4" and sig.evidence == tuple(undone) and "undid 8 dispense(s)" in sig.explanation


def test_destruction_spike_counts_usable_stock_only() -> None:
    log = Log()
    log.commission(n=200)
    log.commission("L2", n=100)
    log.deliver("maphar", "rep-a", 100)
    log.deliver("maphar", "rep-b", 60, lot="L2")
    destroyed = log.add(log.as_("rep-a").destroy(GTIN, "L1", "casse", quantity=40))
    log.add(log.as_("maphar").recall(GTIN, "L2", "contamination"))
    log.add(log.as_("rep-b").destroy(GTIN, "L2", "lot rappelé", quantity=60))  # compliance, not a spike
    report = log.assess()
    [sig] = signals(report, "destruction_spike")
    assert sig.subject == "rep-a" and sig.evidence == (destroyed,) and "40 pack(s)" in sig.explanation


# ---- the report ------------------------------------------------------------------------------------------------


def test_report_shape_json_and_normal_traffic_is_quiet() -> None:
    log = Log()
    log.commission(n=200)
    for rep in ("rep-a", "rep-b"):
        log.deliver("maphar", rep, 60, transit=dt.timedelta(days=1))
    log.later(days=2)
    for rep, ph in (("rep-a", "ph-1"), ("rep-a", "ph-2"), ("rep-b", "ph-3"), ("rep-b", "ph-4")):
        log.deliver(rep, ph, 25)
    for _ in range(10):
        log.later(days=3)
        for ph in ("ph-1", "ph-2", "ph-3", "ph-4"):
            log.dispense(ph, 2)
    report = log.assess()
    assert report.flagged() == () and all(r.score == 0 and not r.signals for r in report.actors)
    assert {r.subject for r in report.actors} == {a for a, (role, _) in ACTORS.items()}
    assert report.entries == len(log.entries) and report.skipped == ()
    doc = json.loads(json.dumps(to_json(report)))
    assert doc["thresholds"]["robust_z"] == 3.5 and doc["generated_at"].endswith("Z")
    assert {r["subject"] for r in doc["batches"]} == {f"{GTIN}/L1"}


def test_scores_sorted_and_entries_refused_on_replay_are_skipped() -> None:
    log = Log()
    log.commission(n=100)
    log.deliver("maphar", "rep-a", 60)
    log.later(days=40)
    forged = log.as_("ph-1").dispense(GTIN, "L1S0001")  # ph-1 holds nothing: the rules refuse it on replay
    entries = [*log.entries, Entry(len(log.entries), log.now, "batch/x", None, forged)]
    report = assess(entries, now=log.now)
    assert report.skipped == (len(log.entries),)
    scores = [r.score for r in report.actors]
    assert scores == sorted(scores, reverse=True) and report.actors[0].subject == "rep-a"
    assert report.thresholds["flag_score"] == 0.5
