"""Risk signals over the log: one detector per pattern, over the facts ``ledger.risk.replay`` yields.

Each detector is a pure function ``(Facts, RiskThresholds) -> list[Signal]``. A signal names its subject
(an actor id, a region name or ``gtin/lot``), a score contribution in 0..1, a full sentence with the numbers
behind it, and the log entry indices that show the pattern, so an investigator can open every one of them.
``ledger.risk.assess`` runs them all and combines the signals into scores per actor, region and batch.

Why these signals, and what they deliberately do not do:

- The custody rules keep the books balanced by construction (nobody ships or dispenses more than they
  hold), so "received minus dispensed" never shows a gap. Leakage is measured by behaviour instead: stock
  that sits unmoved past a dwell threshold (``stagnant_stock``), expired stock still held
  (``expired_stock_held``), dwell times far from peers of the same role (``unusual_dwell``).
- Goods received with no shipment record cannot happen: ``receive`` must name an open shipment
  addressed to the receiver (``ledger.custody``). Dispensing a serial that only arrived inside a pooled
  (quantity) shipment is allowed by design, because pooled shipments are legitimate; it is not a signal.
- Peer comparisons use the median and the median absolute deviation (robust z, Iglewicz and Hoaglin's
  modified z-score), and every one also needs a minimum volume and a minimum ratio to the peer median, so
  that normal variation between similar actors never fires: the EU's 3% false alert rate buried real alerts.
- Circular transfers are detected for two parties (A -> B -> A); longer cycles are not searched.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Iterable

from ledger.identifiers import CUSTODIANS, Channel, Role
from ledger.risk import (
    ACTOR,
    BATCH,
    REGION,
    SUSPECT_SCAN_KINDS,
    AlertFact,
    Facts,
    Layer,
    Moved,
    RiskThresholds,
    ShipmentFact,
    Signal,
    mad,
    median,
    ramp,
    robust_z,
    score_of,
    weighted_median,
)
from ledger.state import Actor

# ---- detectors --------------------------------------------------------------------------------------------


def _cap(indices: Iterable[int], t: RiskThresholds) -> tuple[int, ...]:
    return tuple(sorted(set(indices)))[: t.max_evidence]


def _batch(gtin: str, lot: str) -> str:
    return f"{gtin}/{lot}"


def _who(f: Facts, actor_id: str) -> str:
    a = f.actor(actor_id)
    return f"{actor_id} ({a.role.value}, {a.region})" if a else actor_id


def _open_layers(f: Facts, key: tuple[str, str, str]) -> list[Layer]:
    return [layer for layer in f.layers.get(key, ()) if layer.qty > 0]


def stagnant_stock(f: Facts, t: RiskThresholds) -> list[Signal]:
    out: list[Signal] = []
    for key in sorted(f.layers):
        actor, gtin, lot = key
        if f.role(actor) not in CUSTODIANS - {Role.MANUFACTURER}:
            continue
        stale = [layer for layer in _open_layers(f, key) if f.age_days(layer.at) >= t.stagnant_days]
        stale_units = sum(layer.qty for layer in stale)
        received, moved = f.received.get(key, 0), f.outflow.get(key, 0)
        if stale_units < t.stagnant_min_units or received == 0 or moved > t.stagnant_max_outflow_share * received:
            continue
        oldest = max(f.age_days(layer.at) for layer in stale)
        text = (f"{_who(f, actor)} received {received} pack(s) of GTIN {gtin} lot {lot} and moved on (shipped, "
                f"returned, destroyed or dispensed) only {moved} ({moved / received:.0%}); {stale_units} pack(s) "
                f"have sat unmoved for more than {t.stagnant_days:g} days (the oldest {oldest:.0f} days): "
                "stock that may have left the books.")
        score = score_of(0.6, ramp(oldest, t.stagnant_days, 4 * t.stagnant_days))
        evidence = _cap((i for layer in stale for i in layer.evidence), t)
        out += [Signal("stagnant_stock", actor, ACTOR, score, text, evidence),
                Signal("stagnant_stock", _batch(gtin, lot), BATCH, score, text, evidence)]
    return out


def expired_stock_held(f: Facts, t: RiskThresholds) -> list[Signal]:
    out: list[Signal] = []
    for key in sorted(f.layers):
        actor, gtin, lot = key
        batch = f.state.batch(gtin, lot)
        layers = _open_layers(f, key)
        if batch is None or not layers:
            continue
        days = (f.now.date() - batch.expiry).days
        if days < t.expired_grace_days:
            continue
        units = sum(layer.qty for layer in layers)
        text = (f"{_who(f, actor)} still holds {units} pack(s) of GTIN {gtin} lot {lot}, which expired on "
                f"{batch.expiry.isoformat()} ({days} days ago), with no destruction or return recorded.")
        score = score_of(0.5, ramp(days, t.expired_grace_days, 6 * t.expired_grace_days))
        evidence = _cap((i for layer in layers for i in layer.evidence), t)
        out += [Signal("expired_stock_held", actor, ACTOR, score, text, evidence),
                Signal("expired_stock_held", _batch(gtin, lot), BATCH, score, text, evidence)]
    return out


def _peer_group(f: Facts, actor: Actor, t: RiskThresholds, eligible: Callable[[Actor], bool]) -> tuple[
        list[Actor], str]:
    """The actor's peers (same role, itself left out): its region's if the region has enough, else national.

    The group is empty when it is too small (``min_peers`` counts the actor itself) to compare with.
    """
    same_role = [a for a in f.custodians() if a.role == actor.role and eligible(a) and a.id != actor.id]
    regional = [a for a in same_role if a.region == actor.region]
    if len(regional) + 1 >= t.min_peers:
        return regional, f"the {len(regional)} other {actor.role.value} actors of {actor.region}"
    if len(same_role) + 1 >= t.min_peers:
        return same_role, f"the {len(same_role)} other {actor.role.value} actors nationally"
    return [], f"only {len(same_role)} other {actor.role.value} actor(s) nationally"


def dispensing_outlier(f: Facts, t: RiskThresholds) -> list[Signal]:
    since = f.now - dt.timedelta(days=t.window_days)
    net: dict[str, int] = defaultdict(int)
    evidence: dict[str, list[int]] = defaultdict(list)
    for d in f.dispenses:
        if d.at >= since:
            net[d.actor] += 1
            evidence[d.actor].append(d.index)
    for u in f.undos:
        if u.at >= since:
            net[u.actor] -= 1
    out: list[Signal] = []
    for actor in f.custodians():
        if actor.role not in (Role.PHARMACY, Role.HOSPITAL):
            continue
        x = net[actor.id]
        if x < t.dispense_min:
            continue
        peers, described = _peer_group(f, actor, t, lambda _a: True)
        if not peers:
            continue
        values = [float(net[p.id]) for p in peers]
        m, z = median(values), robust_z(x, values)
        if z <= t.robust_z or x < t.outlier_min_ratio * max(m, 1.0):
            continue
        text = (f"{_who(f, actor.id)} dispensed {x} pack(s) in the last {t.window_days:g} days, {x / max(m, 1.0):.1f} "
                f"times the median of {m:g} among {described} (robust z {z:.1f}, MAD {mad(values):g}).")
        out.append(Signal("dispensing_outlier", actor.id, ACTOR, score_of(0.6, ramp(z, t.robust_z, 10 * t.robust_z)),
                          text, _cap(evidence[actor.id], t)))
    return out


def unusual_dwell(f: Facts, t: RiskThresholds) -> list[Signal]:
    samples: dict[str, list[tuple[float, int]]] = defaultdict(list)
    sources: dict[str, list[int]] = defaultdict(list)
    for mv in f.moved:
        if mv.kind in ("ship", "dispense"):  # returns and destructions have their own signals
            samples[mv.actor].append(((mv.at - mv.layer.at).total_seconds() / 3600, mv.qty))
            sources[mv.actor].extend(mv.layer.evidence)
    for (holder, _, _), queue in f.layers.items():
        for layer in queue:
            if layer.qty > 0:  # still held: its age so far (a lower bound of its dwell)
                samples[holder].append(((f.now - layer.at).total_seconds() / 3600, layer.qty))
                sources[holder].extend(layer.evidence)
    eligible = {a: weighted_median(s) for a, s in samples.items() if sum(w for _, w in s) >= t.dwell_min_units}
    out: list[Signal] = []
    for actor in f.custodians():
        if actor.role == Role.MANUFACTURER or actor.id not in eligible:
            continue
        peers, described = _peer_group(f, actor, t, lambda a: a.id in eligible)
        if not peers:
            continue
        values = [eligible[p.id] for p in peers]
        x, m = eligible[actor.id], median(values)
        z = robust_z(x, values)
        ratio = (x + 1) / (m + 1)
        if (abs(z) <= t.robust_z or abs(x - m) < t.dwell_min_diff_hours
                or 1 / t.outlier_min_ratio < ratio < t.outlier_min_ratio):
            continue
        how = "longer" if x > m else "shorter"
        text = (f"{_who(f, actor.id)} keeps stock a median of {x / 24:.1f} days before it moves on, {how} than the "
                f"median of {m / 24:.1f} days among {described} (robust z {z:.1f}).")
        out.append(Signal("unusual_dwell", actor.id, ACTOR, score_of(0.4, ramp(abs(z), t.robust_z, 10 * t.robust_z),
                                                                   0.1), text, _cap(sources[actor.id], t)))
    return out


def fast_pass_through(f: Facts, t: RiskThresholds) -> list[Signal]:
    quick: dict[int, list[Moved]] = defaultdict(list)
    for m in f.moved:
        if (m.kind == "ship" and m.layer.source == "receive"
                and (m.at - m.layer.at).total_seconds() <= t.passthrough_hours * 3600):
            quick[id(m.layer)].append(m)
    out: list[Signal] = []
    for moves in quick.values():
        layer, actor = moves[0].layer, moves[0].actor
        units = sum(m.qty for m in moves)
        if units < t.passthrough_min_units or units < t.passthrough_share * layer.received_qty:
            continue
        hours = max((m.at - layer.at).total_seconds() for m in moves) / 3600
        text = (f"{_who(f, actor)} received {layer.received_qty} pack(s) of GTIN {moves[0].gtin} lot {moves[0].lot} "
                f"(entry {layer.evidence[-1]}) and shipped {units} of them on within {hours:.1f} hours: a very "
                "fast pass-through.")
        out.append(Signal("fast_pass_through", actor, ACTOR, 0.4, text,
                          _cap([*layer.evidence, *(m.index for m in moves)], t)))
    return out


def circular_transfer(f: Facts, t: RiskThresholds) -> list[Signal]:
    ships = [s for s in f.shipments.values() if s.kind == "ship"]
    by_route: dict[tuple[str, str, str, str], list[ShipmentFact]] = defaultdict(list)
    for s in ships:
        by_route[(s.sender, s.recipient, s.gtin, s.lot)].append(s)
    out: list[Signal] = []
    for back in ships:
        if back.quantity < t.circular_min_units:
            continue
        for there in by_route.get((back.recipient, back.sender, back.gtin, back.lot), []):
            if there.status != "received" or there.closed_at is None or there.closed_at > back.shipped_at:
                continue
            days = (back.shipped_at - there.closed_at).total_seconds() / 86400
            if days > t.circular_days:
                continue
            a, b = there.sender, there.recipient
            text = (f"{a} shipped {there.quantity} pack(s) of GTIN {back.gtin} lot {back.lot} to {b} (entry "
                    f"{there.shipped_index}), and {b} shipped {back.quantity} of the same batch back to {a} "
                    f"{days * 24:.1f} hours after receiving them (entry {back.shipped_index}): a circular transfer.")
            ev_ = _cap([i for i in (there.shipped_index, there.closed_index, back.shipped_index, back.closed_index)
                        if i is not None], t)
            score = score_of(0.7, ramp(-days, -t.circular_days, 0), 0.2)
            out += [Signal("circular_transfer", a, ACTOR, score, text, ev_),
                    Signal("circular_transfer", b, ACTOR, score, text, ev_),
                    Signal("circular_transfer", _batch(back.gtin, back.lot), BATCH, score, text, ev_)]
    return out


def late_shipment(f: Facts, t: RiskThresholds) -> list[Signal]:
    out: list[Signal] = []
    for s in sorted(f.shipments.values(), key=lambda s: s.shipped_index):
        end = s.closed_at if s.closed_at is not None else f.now
        days = (end - s.shipped_at).total_seconds() / 86400
        if days <= t.transit_days:
            continue
        what = (f"still in transit after {days:.1f} days, never received" if s.closed_at is None
                else f"{s.status} only after {days:.1f} days")
        text = (f"{s.kind.capitalize()} {s.id} of {s.quantity} pack(s) of GTIN {s.gtin} lot {s.lot} from {s.sender} "
                f"to {s.recipient} (entry {s.shipped_index}) was {what} (threshold {t.transit_days:g} days).")
        score = score_of(0.5, ramp(days, t.transit_days, 5 * t.transit_days))
        evidence = _cap([i for i in (s.shipped_index, s.closed_index) if i is not None], t)
        out += [Signal("late_shipment", s.sender, ACTOR, score, text, evidence),
                Signal("late_shipment", s.recipient, ACTOR, score, text, evidence),
                Signal("late_shipment", _batch(s.gtin, s.lot), BATCH, score, text, evidence)]
    return out


def suspect_scans(f: Facts, t: RiskThresholds) -> list[Signal]:
    by_actor: dict[str, list[AlertFact]] = defaultdict(list)
    for a in f.alerts:
        if a.kind in SUSPECT_SCAN_KINDS and f.actor(a.suspect) is not None:
            by_actor[a.suspect].append(a)
    out: list[Signal] = []
    window = dt.timedelta(days=t.suspect_scan_days)
    for actor, alerts in sorted(by_actor.items()):
        alerts.sort(key=lambda a: a.index)
        best: list[AlertFact] = []
        start = 0
        for end in range(len(alerts)):
            while alerts[end].at - alerts[start].at > window:
                start += 1
            if end - start + 1 > len(best):
                best = alerts[start:end + 1]
        if len(best) < t.suspect_scan_min:
            continue
        kinds = ", ".join(f"{k} x{sum(1 for a in best if a.kind == k)}" for k in sorted({a.kind for a in best}))
        text = (f"{len(best)} suspect scans were refused at {_who(f, actor)} within {t.suspect_scan_days:g} days "
                f"({kinds}); {len(alerts)} in all.")
        out.append(Signal("suspect_scans", actor, ACTOR,
                          score_of(0.5, ramp(len(best), t.suspect_scan_min, 4 * t.suspect_scan_min)), text,
                          _cap((a.index for a in best), t)))
    return out


def impossible_travel(f: Facts, t: RiskThresholds) -> list[Signal]:
    out: list[Signal] = []
    for a in f.alerts:
        if a.first_by is None or a.first_at is None or a.first_index is None or f.actor(a.suspect) is None:
            continue
        hours = (a.at - a.first_at).total_seconds() / 3600
        first_region, region = f.region(a.first_by), f.region(a.suspect)
        if first_region == region or hours > t.clone_travel_hours:
            continue
        text = (f"Pack GTIN {a.gtin} serial {a.serial} was dispensed by {a.first_by} in {first_region} (entry "
                f"{a.first_index}) and presented again for dispensing by {a.suspect} in {region} {hours:.1f} hours "
                f"later (alert entry {a.index}): faster than a pack travels; one of them is a clone.")
        score = score_of(0.8, ramp(-hours, -t.clone_travel_hours, 0), 0.2)
        evidence = (a.first_index, a.index)
        out += [Signal("impossible_travel", a.suspect, ACTOR, score, text, evidence),
                Signal("impossible_travel", region, REGION, score, text, evidence)]
        if a.gtin and a.lot:
            out.append(Signal("impossible_travel", _batch(a.gtin, a.lot), BATCH, score, text, evidence))
    return out


def recall_noncompliance(f: Facts, t: RiskThresholds) -> list[Signal]:
    out: list[Signal] = []
    for (gtin, lot), (recall_index, recall_at) in sorted(f.recalls.items()):
        days = f.age_days(recall_at)
        batch = f.state.batch(gtin, lot)
        if batch is None or days < t.recall_grace_days:
            continue
        for key in sorted(k for k in f.layers if k[1:] == (gtin, lot)):
            actor = key[0]
            held = f.state.holding(actor, gtin, lot)
            if actor == batch.manufacturer or held <= 0:  # stock back at its maker awaits destruction there
                continue
            text = (f"{_who(f, actor)} still holds {held} pack(s) of GTIN {gtin} lot {lot} {days:.0f} days after "
                    f"the batch was recalled (entry {recall_index}), with no return or destruction of them.")
            evidence = _cap([recall_index, *(i for layer in _open_layers(f, key) for i in layer.evidence)], t)
            score = score_of(0.7, ramp(days, t.recall_grace_days, 4 * t.recall_grace_days), 0.2)
            out += [Signal("recall_noncompliance", actor, ACTOR, score, text, evidence),
                    Signal("recall_noncompliance", _batch(gtin, lot), BATCH, score, text, evidence)]
    return out


def public_stock_private_pharmacy(f: Facts, t: RiskThresholds) -> list[Signal]:
    out: list[Signal] = []
    for s in sorted(f.shipments.values(), key=lambda s: s.shipped_index):
        public = Channel.PUBLIC.value in (s.channel, s.batch_channel)
        if s.kind != "ship" or not public or f.role(s.recipient) != Role.PHARMACY:
            continue
        dispensed = [d.index for d in f.dispenses if d.actor == s.recipient and (d.gtin, d.lot) == (s.gtin, s.lot)]
        declared = ("declared public" if s.channel == Channel.PUBLIC.value
                    else "declared private although the batch was bought by public tender")
        text = (f"{s.sender} shipped {s.quantity} pack(s) of public-tender stock (GTIN {s.gtin} lot {s.lot}, "
                f"{declared}) to the private pharmacy {_who(f, s.recipient)} (entry {s.shipped_index}); "
                f"it was {s.status} and {len(dispensed)} of its packs were dispensed there.")
        evidence = _cap([i for i in (s.shipped_index, s.closed_index) if i is not None] + dispensed, t)
        score = 0.8 if s.status == "received" else 0.7
        out += [Signal("public_stock_private_pharmacy", s.recipient, ACTOR, score, text, evidence),
                Signal("public_stock_private_pharmacy", s.sender, ACTOR, score, text, evidence),
                Signal("public_stock_private_pharmacy", _batch(s.gtin, s.lot), BATCH, score, text, evidence)]
    return out


def _rate_spike(f: Facts, t: RiskThresholds, kind: str, counts: dict[str, int], bases: dict[str, int],
                evidence: dict[str, list[int]], roles: frozenset[Role], min_count: int, min_rate: float,
                what: str) -> list[Signal]:
    out: list[Signal] = []
    actors = [a for a in f.custodians() if a.role in roles]
    rates = {a.id: counts.get(a.id, 0) / bases[a.id] if bases.get(a.id) else 0.0 for a in actors}
    for actor in actors:
        n, rate = counts.get(actor.id, 0), rates[actor.id]
        if n < min_count or rate < min_rate:
            continue
        peers, described = _peer_group(f, actor, t, lambda _a: True)
        if peers:
            values = [rates[p.id] for p in peers]
            z, m = robust_z(rate, values), median(values)
            if z <= t.robust_z or rate < t.outlier_min_ratio * m:
                continue
            versus = f"against a median of {m:.1%} among {described} (robust z {z:.1f})"
        else:
            z, versus = math.inf, f"(too few peers to compare: {described})"
        text = (f"{_who(f, actor.id)} {what.format(n=n)} in the last {t.window_days:g} days, {rate:.1%} of its "
                f"volume, {versus}.")
        out.append(Signal(kind, actor.id, ACTOR, score_of(0.5, ramp(rate, min_rate, 5 * min_rate)), text,
                          _cap(evidence[actor.id], t)))
    return out


def undo_spike(f: Facts, t: RiskThresholds) -> list[Signal]:
    since = f.now - dt.timedelta(days=t.window_days)
    undos: dict[str, int] = defaultdict(int)
    dispenses: dict[str, int] = defaultdict(int)
    evidence: dict[str, list[int]] = defaultdict(list)
    for u in f.undos:
        if u.at >= since:
            undos[u.actor] += 1
            evidence[u.actor].append(u.index)
    for d in f.dispenses:
        if d.at >= since:
            dispenses[d.actor] += 1
    return _rate_spike(f, t, "undo_spike", undos, dispenses, evidence, frozenset({Role.PHARMACY, Role.HOSPITAL}),
                       t.undo_min, t.undo_min_rate, "undid {n} dispense(s)")


def destruction_spike(f: Facts, t: RiskThresholds) -> list[Signal]:
    since = f.now - dt.timedelta(days=t.window_days)
    units: dict[str, int] = defaultdict(int)
    evidence: dict[str, list[int]] = defaultdict(list)
    for d in f.destroys:
        if d.usable and d.at >= since:
            units[d.actor] += d.qty
            evidence[d.actor].append(d.index)
    received: dict[str, int] = defaultdict(int)
    for (actor, _, _), n in f.received.items():
        received[actor] += n
    return _rate_spike(f, t, "destruction_spike", units, received, evidence,
                       frozenset({Role.DISTRIBUTOR, Role.PHARMACY, Role.HOSPITAL}), t.destroy_min_units,
                       t.destroy_min_share, "declared {n} pack(s) of usable stock destroyed")


DETECTORS: tuple[Callable[[Facts, RiskThresholds], list[Signal]], ...] = (
    stagnant_stock, expired_stock_held, dispensing_outlier, unusual_dwell, fast_pass_through, circular_transfer,
    late_shipment, suspect_scans, impossible_travel, recall_noncompliance, public_stock_private_pharmacy,
    undo_spike, destruction_spike,
)
