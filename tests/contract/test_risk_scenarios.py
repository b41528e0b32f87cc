"""Risk indicators on a real ledger (SQLite, and PostgreSQL when reachable): patterns planted among ten weeks of
normal traffic (fixtures/scenarios.py) are flagged with the right signal and evidence; normal actors are not.

The scenario is built once per database (about 5 s on SQLite) and shared by the tests of this module.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from fixtures.scenarios import ACTORS, START, Scenario, build_risk_scenario
from ledger.entry import Entry
from ledger.risk import RiskReport, RiskThresholds, assess, to_json
from ledger.service import Ledger
from tests.conftest import postgres_base_url
from tests.support import Clock, make_world


@dataclass
class Built:
    scenario: Scenario
    entries: dict[int, Entry]
    report: RiskReport


def _fetch(ledger: Ledger) -> dict[int, Entry]:
    """Every entry, in pages of 1000 (the API's page size), parsed from its stored leaf."""
    size = ledger.size()
    out: dict[int, Entry] = {}
    for start in range(0, size, 1000):
        for stored in ledger.entries(start, start + 1000):
            out[stored.index] = Entry.from_leaf(stored.leaf)
    assert sorted(out) == list(range(size))
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    path = tmp_path_factory.mktemp(f"risk-{request.param}")
    drop: str | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{path / 'ledger.db'}"
    else:
        base = postgres_base_url()
        if base is None:
            if os.environ.get("ATHAR_REQUIRE_POSTGRES") == "1":
                pytest.fail("PostgreSQL not reachable (set ATHAR_TEST_POSTGRES_URL)")
            pytest.skip("PostgreSQL not reachable (set ATHAR_TEST_POSTGRES_URL to run these tests on it)")
        drop = "t_" + uuid.uuid4().hex[:12]
        engine = sa.create_engine(base)
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {drop}"))
        url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={drop}')}"
    world = make_world(path / "home", url, clock=Clock(START), register=lambda _a: False)
    try:
        assert world.root_key is not None
        scenario = build_risk_scenario(world.ledger, world.root_key, world.clock)
        entries = _fetch(world.ledger)
        yield Built(scenario, entries, assess(entries.values(), now=scenario.now))
    finally:
        world.db.dispose()
        if drop is not None:
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {drop} CASCADE"))
            engine.dispose()


def test_every_planted_pattern_is_flagged_with_its_own_evidence(built: Built) -> None:
    report, scenario = built.report, built.scenario
    assert report.skipped == () and report.entries == scenario.entries == len(built.entries)
    for planted in scenario.planted:
        row = report.get(planted.level, planted.subject)
        assert row is not None, planted
        assert row.flagged, f"{planted} not flagged: {row}"
        found = [s for s in row.signals if s.kind == planted.kind]
        assert found, f"{planted}: expected a {planted.kind} signal, got {sorted(row.kinds)}"
        marks = scenario.marks[planted.pattern]
        for signal in found:
            assert signal.evidence and set(signal.evidence) <= marks, (planted, signal.evidence, sorted(marks))
            assert all(i in built.entries for i in signal.evidence)
            assert any(ch.isdigit() for ch in signal.explanation) and signal.explanation.endswith(".")


def test_evidence_entries_are_the_pattern_itself(built: Built) -> None:
    report, entries = built.report, built.entries

    def body(i: int) -> dict[str, object]:
        return dict(entries[i].signed.body)

    outlier = next(s for s in report.get("actor", "ph-hassan").signals  # type: ignore[union-attr]
                   if s.kind == "dispensing_outlier")
    assert all(body(i)["type"] == "dispense" and body(i)["actor"] == "ph-hassan" for i in outlier.evidence)
    diverted = next(s for s in report.get("actor", "rep-dakhla").signals  # type: ignore[union-attr]
                    if s.kind == "stagnant_stock")
    assert {body(i)["type"] for i in diverted.evidence} == {"ship", "receive"}
    assert all(body(i).get("to") == "rep-dakhla" or body(i)["actor"] == "rep-dakhla" for i in diverted.evidence)
    circular = next(s for s in report.get("actor", "rep-centre").signals  # type: ignore[union-attr]
                    if s.kind == "circular_transfer")
    assert [body(i)["type"] for i in circular.evidence] == ["ship", "receive", "ship", "receive"]
    clone = next(s for s in report.get("actor", "ph-oujda").signals  # type: ignore[union-attr]
                 if s.kind == "impossible_travel")
    first, alert = (body(i) for i in clone.evidence)
    assert (first["type"], first["actor"], alert["type"], alert["kind"], alert["suspect"]) == (
        "dispense", "ph-agdal", "alert", "duplicate_dispense", "ph-oujda")
    scans = next(s for s in report.get("actor", "ph-derb").signals  # type: ignore[union-attr]
                 if s.kind == "suspect_scans")
    assert len(scans.evidence) == 4 and all(body(i)["kind"] == "unknown_pack" for i in scans.evidence)
    lost = next(s for s in report.get("actor", "ph-meknes").signals)  # type: ignore[union-attr]
    [ship] = lost.evidence
    assert body(ship)["type"] == "ship" and body(ship)["to"] == "ph-meknes"
    assert not any(body(i)["type"] == "receive" and body(i)["shipment"] == body(ship)["id"] for i in entries)


def test_normal_actors_batches_and_regions_carry_no_signal(built: Built) -> None:
    report, scenario = built.report, built.scenario
    normal = scenario.normal_actors()
    assert len(normal) >= 10
    for subject in normal:
        row = report.get("actor", subject)
        assert row is not None and row.score == 0 and row.signals == (), row
    for subject in scenario.normal_batches():
        row = report.get("batch", subject)
        assert row is not None and row.score == 0 and row.signals == (), row
    for region in scenario.normal_regions():
        row = report.get("region", region)
        assert row is not None and row.score == 0, row
    # a region with several actors and one or two flagged among them is not flagged as a whole
    rabat = report.get("region", "Rabat-Salé-Kénitra")
    assert rabat is not None and not rabat.flagged and 0 < rabat.score < 0.5


def test_precision_and_recall_over_the_planted_set(built: Built) -> None:
    report, scenario = built.report, built.scenario
    planted = scenario.planted_subjects
    levels = ("actor", "batch")
    flagged = {(r.level, r.subject) for level in levels for r in report.flagged(level)}
    expected = {(p.level, p.subject) for p in scenario.planted if p.level in levels}
    caught = {(p.level, p.subject) for p in scenario.planted if p.level in levels
              and p.kind in report.get(p.level, p.subject).kinds  # type: ignore[union-attr]
              and report.get(p.level, p.subject).flagged}  # type: ignore[union-attr]
    precision = len(flagged & expected) / len(flagged)
    recall = len(caught) / len(expected)
    print(f"\nrisk scenario ({len(built.entries)} entries): {len(flagged)} actor/batch subjects flagged, "
          f"{len(expected)} planted; precision {precision:.2f}, recall {recall:.2f}")
    for row in report.flagged():
        print(f"  {row.level:6} {row.subject:32} {row.score:.2f} {', '.join(sorted(row.kinds))}")
    assert precision == 1.0 and recall == 1.0
    # regions: the clone's region is flagged for it; no region without a planted actor is flagged
    assert ("region", "Oriental") in planted
    assert "impossible_travel" in report.get("region", "Oriental").kinds  # type: ignore[union-attr]
    risky_regions = {ACTORS[p.subject][2] for p in scenario.planted if p.level == "actor"}
    assert {r.subject for r in report.flagged("region")} <= risky_regions


def test_thresholds_are_honoured_and_reported(built: Built) -> None:
    lenient = assess(built.entries.values(), now=built.scenario.now,
                     thresholds=RiskThresholds(transit_days=100, recall_grace_days=60, dispense_min=10_000))
    kinds = {s.kind for r in lenient.actors for s in r.signals}
    assert not kinds & {"late_shipment", "recall_noncompliance", "dispensing_outlier"}
    assert lenient.thresholds["transit_days"] == 100
    doc = to_json(built.report)
    assert [a["subject"] for a in doc["actors"]][:1] == [built.report.actors[0].subject]
    assert all(a["score"] >= b["score"] for a, b in zip(doc["actors"], doc["actors"][1:], strict=False))
    assert {s["kind"] for a in doc["actors"] for s in a["signals"]} >= {"stagnant_stock", "circular_transfer"}
