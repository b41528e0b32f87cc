"""A pack's provenance: which entries of its batch's chain tell where that pack went.

One rule for the server's answer and for the scanner's local verification, so the two always show the same
steps. Receipts, refusals, reports and alerts are not shown (a patient reads the custody path, not the case
file), and neither are quantities.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ledger.entry import Entry
from ledger.events import EVENT_TYPES
from ledger.state import Actor

HIDDEN = frozenset({"alert", "alert_update", "report", "receive", "refuse"})


@dataclass(frozen=True)
class Step:
    """One public provenance step: who did what, where and when. No quantities."""

    index: int
    type: str
    actor: str
    actor_name: str
    role: str
    region: str
    time: dt.datetime


SINGLE_PACK = frozenset({"dispense", "undo_dispense"})
SHIPMENT_KINDS = frozenset({"ship", "return"})
# Entry types of a batch chain that may concern any of its packs, whatever serial the pack has (single-pack
# types are here for entries logged before the serial column, which hold NULL there).
BATCH_WIDE = frozenset(EVENT_TYPES) - HIDDEN - SHIPMENT_KINDS - {"actor_register", "key_rotate", "key_revoke"}


def concerns(kind: str, event_serial: object, serials: object, serial: str) -> bool:
    """Does an event of this kind, with this ``serial`` / ``serials`` field, belong in the pack's provenance?"""
    if kind in HIDDEN or kind.startswith("key") or kind == "actor_register":
        return False
    if kind in SINGLE_PACK:
        return event_serial == serial
    # stock moved by quantity may hold the pack; moves that list serials show only where they include it
    return kind == "commission" or not isinstance(serials, list | tuple) or serial in serials


def concerns_pack(entry: Entry, serial: str) -> bool:
    body = entry.signed.body
    return concerns(str(body.get("type")), body.get("serial"), body.get("serials"), serial)


def pack_steps(entries: Iterable[Entry], serial: str, actors: Callable[[str], Actor | None]) -> list[Step]:
    steps = []
    for entry in entries:
        if not concerns_pack(entry, serial):
            continue
        actor_id = str(entry.signed.body.get("actor"))
        actor = actors(actor_id)
        steps.append(Step(entry.index, str(entry.signed.body.get("type")), actor_id,
                          actor.name if actor else actor_id, actor.role.value if actor else "",
                          actor.region if actor else "", entry.received))
    return steps
