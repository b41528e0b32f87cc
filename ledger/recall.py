"""Recall progress: who still holds recalled stock, and how much of it came back over time.

Stock "in the field" is what distributors, pharmacies and hospitals hold plus what is in transit to them.
A recall is effective as that stock is returned to the manufacturer or destroyed; the share recovered at
each later entry is the recall-effectiveness curve the regulator follows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from ledger import errors as E
from ledger import events as ev
from ledger.custody import Context, decide
from ledger.entry import Entry
from ledger.replay import MemoryState


@dataclass(frozen=True)
class RecallPoint:
    index: int
    time: dt.datetime
    in_field: int
    recovered_share: float


@dataclass(frozen=True)
class RecallReport:
    gtin: str
    lot: str
    recalled_index: int
    recalled_at: dt.datetime
    reason: str
    in_field_at_recall: int
    in_field_now: int
    holders: dict[str, int]  # actor -> packs still held (manufacturer excluded), in transit counted at recipient
    timeline: list[RecallPoint]

    @property
    def recovered_share(self) -> float:
        return 1.0 if self.in_field_at_recall == 0 else 1 - self.in_field_now / self.in_field_at_recall


def _field(state: MemoryState, gtin: str, lot: str, manufacturer: str) -> dict[str, int]:
    held = {a: q for (a, g, lot_), q in state.holdings.items() if g == gtin and lot_ == lot and q and a != manufacturer}
    for s in state.shipments.values():
        if s.gtin == gtin and s.lot == lot and s.status == "in_transit" and s.recipient != manufacturer:
            held[s.recipient] = held.get(s.recipient, 0) + s.quantity
    return held


def recall_report(entries: Iterable[Entry], gtin: str, lot: str) -> RecallReport:
    """Replay the batch's chain (with the actor registry chains) and measure the recall."""
    state = MemoryState()
    recalled: tuple[int, dt.datetime, str] | None = None
    at_recall = 0
    manufacturer = ""
    timeline: list[RecallPoint] = []
    for entry in sorted(entries, key=lambda e: e.index):
        event = ev.parse_event(entry.signed.body)
        state.apply(decide(event, Context(entry.index, entry.received), state).changes)
        batch = state.batch(gtin, lot)
        if batch is None:
            continue
        manufacturer = batch.manufacturer
        if recalled is None and isinstance(event, ev.Recall):
            recalled = (entry.index, entry.received, event.reason)
            at_recall = sum(_field(state, gtin, lot, manufacturer).values())
        elif recalled is not None:
            now = sum(_field(state, gtin, lot, manufacturer).values())
            share = 1.0 if at_recall == 0 else 1 - now / at_recall
            timeline.append(RecallPoint(entry.index, entry.received, now, round(share, 4)))
    if recalled is None:
        raise E.InvalidTransition(f"batch GTIN {gtin} lot {lot} was not recalled", gtin=gtin, lot=lot)
    holders = _field(state, gtin, lot, manufacturer)
    return RecallReport(gtin, lot, recalled[0], recalled[1], recalled[2], at_recall, sum(holders.values()),
                        dict(sorted(holders.items(), key=lambda kv: -kv[1])), timeline)
