"""The most likely cause of an alert, so the regulator reads an explanation, not just a rule number.

In the EU's first months, false alerts ran at 3% of scans and buried the real ones; most were typing errors,
double scans and software faults. Telling those apart from clones and diversion at the moment of the alert is
what keeps the false-alert rate visible and low.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger import errors as E
from ledger import events as ev


def one_edit_apart(a: str, b: str) -> bool:
    """True when b is a one-character substitution, insertion, deletion or adjacent swap of a (and a != b)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def needs_known_lots(err: E.LedgerError) -> bool:
    """Whether ``likely_cause`` looks at ``known_lots`` for this refusal."""
    return isinstance(err, E.UnknownPack)


def likely_cause(err: E.LedgerError, event: ev.Event, *, registered_lot: str | None = None,
                 known_lots: Sequence[str] = ()) -> str | None:
    if isinstance(err, E.MismatchError) and isinstance(event, ev.Dispense):
        if event.lot and registered_lot and one_edit_apart(event.lot, registered_lot):
            return (f"typing error: the lot {event.lot} is one character off the registered {registered_lot}")
        if event.lot and registered_lot and event.lot != registered_lot:
            return "the lot differs from the registration by more than a typo: suspect a relabelled pack"
        return "the expiry differs from the registration: check the printed date; suspect relabelling"
    if isinstance(err, E.UnknownPack):
        lot = getattr(event, "lot", None)
        if lot and any(one_edit_apart(lot, k) for k in known_lots):
            return "typing error likely: the lot is one character off a registered lot of this GTIN"
        if known_lots:
            return "the product is registered but this serial never was: suspect a falsified pack"
        return "the GTIN was never registered here: falsified, or imported outside the national supply chain"
    if isinstance(err, E.DuplicateDispense):
        return "a second dispense of one serial by another actor: likely a cloned pack in circulation"
    if isinstance(err, E.NotInCustody):
        return "the dispenser never received this pack: possible diversion or an unrecorded transfer"
    if isinstance(err, E.OverShipment):
        return "shipping more than held: stock of unknown origin, or a receipt that was never recorded"
    if isinstance(err, E.BatchRecalled | E.BatchQuarantined):
        return "dispensing blocked stock: the pharmacy may not have acted on the recall or quarantine notice"
    if isinstance(err, E.BatchExpired):
        return "expired stock offered for dispensing: poor stock rotation, or expired stock relabelled"
    return None
