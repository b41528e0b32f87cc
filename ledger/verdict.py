"""The verdict on a scanned pack: a pure function of what the ledger holds about it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from ledger.state import BatchFacts, Pack, is_expired


class Verdict(StrEnum):
    AUTHENTIC = "AUTHENTIC"
    UNKNOWN = "UNKNOWN"
    MISMATCH = "MISMATCH"
    ALREADY_DISPENSED = "ALREADY_DISPENSED"
    RECALLED = "RECALLED"
    QUARANTINED = "QUARANTINED"
    EXPIRED = "EXPIRED"
    NOT_IN_CUSTODY = "NOT_IN_CUSTODY"
    TAMPERED = "TAMPERED"

    @property
    def is_suspect(self) -> bool:
        return self not in (Verdict.AUTHENTIC, Verdict.TAMPERED)


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    reason: str


def judge(pack: Pack | None, batch: BatchFacts | None, *, gtin: str, serial: str, lot: str | None,
          expiry: dt.date | None, now: dt.datetime, scanner: str | None = None,
          scanner_holds_pooled: bool = False) -> Finding:
    """Decide the verdict. One verdict per scan, checked in this order: UNKNOWN, MISMATCH, then the batch's
    state (RECALLED, QUARANTINED, EXPIRED: what a patient must know even about a pack dispensed to them), then
    the pack's (ALREADY_DISPENSED, destroyed), then custody (NOT_IN_CUSTODY), else AUTHENTIC. (A dispense
    *attempt* is judged by ``ledger.custody``, where a second dispense is refused first: it signals a clone.)

    ``scanner`` is the scanning pharmacy when known: it turns 'genuine but held by someone else' into
    NOT_IN_CUSTODY (possible diversion). ``scanner_holds_pooled`` says whether the scanner holds stock of
    the batch moved by quantity, which covers packs that were never scanned one by one.
    """
    if pack is None or batch is None:
        return Finding(Verdict.UNKNOWN, f"no pack with GTIN {gtin} and serial {serial} was ever registered: "
                                        "suspect falsified; do not dispense, report it")
    if (lot is not None and lot != pack.lot) or (expiry is not None and expiry != batch.expiry):
        return Finding(Verdict.MISMATCH,
                       f"the pack is registered with lot {pack.lot} and expiry {batch.expiry.isoformat()}, "
                       f"but the code says lot {lot or '-'} and expiry {expiry.isoformat() if expiry else '-'}")
    if batch.status == "recalled":
        return Finding(Verdict.RECALLED, f"batch {batch.lot} was recalled: {batch.status_reason}")
    if batch.status == "quarantined":
        return Finding(Verdict.QUARANTINED, f"batch {batch.lot} is quarantined: {batch.status_reason}")
    if is_expired(batch, now):
        return Finding(Verdict.EXPIRED, f"batch {batch.lot} expired on {batch.expiry.isoformat()}")
    if pack.status == "dispensed":
        when = pack.dispensed_at.strftime("%Y-%m-%d %H:%M UTC") if pack.dispensed_at else "an unknown time"
        if scanner is not None and scanner == pack.dispensed_by:
            return Finding(Verdict.ALREADY_DISPENSED, f"you dispensed this pack on {when} (a double scan)")
        return Finding(Verdict.ALREADY_DISPENSED, f"this pack was already dispensed on {when}; if it is offered "
                                                  "for sale again it may be a clone")
    if pack.status == "destroyed":
        return Finding(Verdict.ALREADY_DISPENSED, "this pack was declared destroyed (decommissioned)")
    if scanner is not None:
        holds = pack.holder == scanner or (pack.holder is None and scanner_holds_pooled)
        if not holds or pack.status != "active":
            return Finding(Verdict.NOT_IN_CUSTODY, "the pack is genuine but was never delivered to you: "
                                                   "possible diversion")
    return Finding(Verdict.AUTHENTIC, f"genuine pack of {batch.product}, lot {batch.lot}, expires "
                                      f"{batch.expiry.isoformat()}")
