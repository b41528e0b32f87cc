"""The custody rules: a pure function from (state, event) to the changes the event makes, or a refusal.

Nothing here touches storage or the clock; the sequencer passes the entry index and receive time in a
``Context``. The same function serves the live append path and ``audit rebuild``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ledger import errors as E
from ledger import events as ev
from ledger.identifiers import CUSTODIANS, DISPENSERS, Role, actor_chain, batch_chain
from ledger.state import (
    Actor,
    AddPacks,
    AdjustHolding,
    AlertRecord,
    Batch,
    Change,
    KeyRecord,
    Pack,
    PoolPacks,
    PutActor,
    PutAlert,
    PutBatch,
    PutKey,
    PutPacks,
    PutShipment,
    Shipment,
    StateReader,
    is_expired,
)
from signing import PublicKey, SigningError

UNDO_WINDOW = dt.timedelta(days=10)
#: How far an event's own time may run ahead of the receipt the sequencer stamps: signers' clocks drift. The past
#: has no such bound (a handover recorded offline is submitted later), beyond the first date a serialized pack can
#: carry; without them an event could claim the year 9999, or 0001, which no EPCIS document can even express.
CLOCK_SKEW = dt.timedelta(minutes=10)
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
ALERTS_CHAIN = "alerts"
REPORTS_CHAIN = "reports"


@dataclass(frozen=True)
class Context:
    index: int
    now: dt.datetime


@dataclass(frozen=True)
class Decision:
    chain: str
    changes: tuple[Change, ...]


E_ = TypeVar("E_", bound=ev.Event)
_RULES: dict[type[ev.Event], Callable[[Any, Context, StateReader], Decision]] = {}


def _rule(cls: type[E_]) -> Callable[[Callable[[E_, Context, StateReader], Decision]], Any]:
    def register(fn: Callable[[E_, Context, StateReader], Decision]) -> Any:
        _RULES[cls] = fn
        return fn

    return register


def decide(event: ev.Event, ctx: Context, state: StateReader) -> Decision:
    """Apply the custody rules. The signer was already authenticated (see ``ledger.admission``)."""
    if not EARLIEST <= event.time <= ctx.now + CLOCK_SKEW:
        _implausible(event.time, ctx.now)
    return _RULES[type(event)](event, ctx, state)


# ---- helpers -----------------------------------------------------------------------------------------


def _implausible(time: dt.datetime, now: dt.datetime) -> None:
    said = ev.format_time(time)
    if time < EARLIEST:
        raise E.ImplausibleTime(f"the event's time {said} is before 2000; check the signer's clock", time=said)
    raise E.ImplausibleTime(f"the event's time {said} is later than the ledger received it ({ev.format_time(now)}, "
                            f"allowing {CLOCK_SKEW.seconds // 60} minutes of clock skew); check the signer's clock",
                            time=said)


def _actor(state: StateReader, actor_id: str, *, what: str = "actor") -> Actor:
    actor = state.actor(actor_id)
    if actor is None:
        raise E.UnknownActor(f"{what} {actor_id!r} is not registered in the ledger", actor=actor_id)
    if actor.status != "active":
        raise E.ActorNotActive(f"{what} {actor_id!r} is {actor.status}", actor=actor_id)
    return actor


def _role(actor: Actor, allowed: frozenset[Role] | set[Role], action: str) -> None:
    if actor.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        article = "an" if actor.role.value[0] in "aeiou" else "a"
        raise E.RoleNotAllowed(f"{article} {actor.role.value} may not {action}; only: {names}", actor=actor.id)


def _batch(state: StateReader, gtin: str, lot: str) -> Batch:
    batch = state.batch(gtin, lot)
    if batch is None:
        raise E.UnknownBatch(f"batch GTIN {gtin} lot {lot} is not registered", gtin=gtin, lot=lot)
    return batch


def _usable(batch: Batch, now: dt.datetime, action: str) -> None:
    where = f"batch GTIN {batch.gtin} lot {batch.lot}"
    if batch.status == "recalled":
        raise E.BatchRecalled(f"{where} was recalled ({batch.status_reason}); it cannot be {action}",
                              gtin=batch.gtin, lot=batch.lot)
    if batch.status == "quarantined":
        raise E.BatchQuarantined(f"{where} is quarantined ({batch.status_reason}); it cannot be {action}",
                                 gtin=batch.gtin, lot=batch.lot)
    if is_expired(batch, now):
        raise E.BatchExpired(f"{where} expired on {batch.expiry.isoformat()}; it cannot be {action}",
                             gtin=batch.gtin, lot=batch.lot)


def _take_stock(event: ev.Movement, state: StateReader, holder: str) -> tuple[list[Change], tuple[Pack, ...]]:
    """Check that ``holder`` holds what the movement names; return the holding change and the packs."""
    held = state.holding(holder, event.gtin, event.lot)
    if event.quantity > held:
        raise E.OverShipment(
            f"{holder} holds {held} pack(s) of GTIN {event.gtin} lot {event.lot} and cannot move "
            f"{event.quantity}", held=held, requested=event.quantity, gtin=event.gtin, lot=event.lot)
    changes: list[Change] = [AdjustHolding(holder, event.gtin, event.lot, -event.quantity)]
    if event.serials is None:
        return [*changes, PoolPacks(event.gtin, event.lot, holder)], ()
    found = state.packs(event.gtin, event.serials)
    packs = []
    for s in event.serials:
        pack = found.get(s)
        if pack is None or pack.lot != event.lot:
            raise E.UnknownPack(f"pack GTIN {event.gtin} serial {s} is not registered in lot {event.lot}",
                                gtin=event.gtin, serial=s)
        if pack.status != "active" or pack.holder not in (holder, None):
            raise E.NotHolder(f"{holder} does not hold pack GTIN {event.gtin} serial {s} "
                              f"(it is {pack.status}, held by {pack.holder or 'an unknown holder'})",
                              gtin=event.gtin, serial=s)
        packs.append(pack)
    return changes, tuple(packs)


# ---- registry -----------------------------------------------------------------------------------------


def _root_only(event: ev.Event) -> None:
    if event.actor != ev.ROOT_ACTOR:
        raise E.RoleNotAllowed("only the regulator root key may change the actor registry", actor=event.actor)


def _new_key(state: StateReader, public_key_b64: str, actor: str, ctx: Context) -> KeyRecord:
    try:
        key = PublicKey.from_b64(public_key_b64)
    except SigningError as exc:
        raise E.InvalidEvent(f"public_key is not a base64 Ed25519 public key: {exc}") from exc
    if state.key(key.key_id) is not None:
        raise E.DuplicateKey(f"key {key.key_id} is already registered", key_id=key.key_id)
    return KeyRecord(key.key_id, actor, key.b64, "active", ctx.index, None)


def _subject(state: StateReader, actor_id: str) -> Actor:
    """The actor a registry event is about: an error about it is no error of the root key that signed."""
    actor = state.actor(actor_id)
    if actor is None:
        raise E.UnknownSubject(f"actor {actor_id!r} is not registered in the ledger", actor=actor_id)
    return actor


@_rule(ev.ActorRegister)
def _register(e: ev.ActorRegister, ctx: Context, state: StateReader) -> Decision:
    _root_only(e)
    if e.subject in (ev.ROOT_ACTOR, ev.LEDGER_ACTOR, ev.PUBLIC_ACTOR) or state.actor(e.subject) is not None:
        raise E.DuplicateActor(f"actor {e.subject!r} is already registered or reserved", actor=e.subject)
    actor = Actor(e.subject, e.name, e.role, e.region, e.city, e.gln, "active", ctx.index)
    return Decision(actor_chain(e.subject), (PutActor(actor), PutKey(_new_key(state, e.public_key, e.subject, ctx))))


@_rule(ev.KeyRotate)
def _rotate(e: ev.KeyRotate, ctx: Context, state: StateReader) -> Decision:
    _root_only(e)
    _subject(state, e.subject)
    new = _new_key(state, e.public_key, e.subject, ctx)
    retired = [PutKey(replace(k, status="rotated", retired_index=ctx.index)) for k in state.active_keys(e.subject)]
    return Decision(actor_chain(e.subject), (*retired, PutKey(new)))


@_rule(ev.KeyRevoke)
def _revoke(e: ev.KeyRevoke, ctx: Context, state: StateReader) -> Decision:
    _root_only(e)
    _subject(state, e.subject)
    key = state.key(e.key_id)
    if key is None or key.actor != e.subject:
        raise E.UnknownSubjectKey(f"key {e.key_id} is not a key of {e.subject}", key_id=e.key_id)
    if key.status != "active":
        raise E.InvalidTransition(f"key {e.key_id} is already {key.status}", key_id=e.key_id)
    return Decision(actor_chain(e.subject), (PutKey(replace(key, status="revoked", retired_index=ctx.index)),))


# ---- batches ------------------------------------------------------------------------------------------


@_rule(ev.Commission)
def _commission(e: ev.Commission, ctx: Context, state: StateReader) -> Decision:
    actor = _actor(state, e.actor)
    _role(actor, {Role.MANUFACTURER}, "commission a batch")
    if e.expiry <= ctx.now.date():
        raise E.InvalidEvent(f"expiry {e.expiry.isoformat()} is not in the future", field="expiry")
    if state.batch(e.gtin, e.lot) is not None:
        raise E.DuplicateBatch(f"batch GTIN {e.gtin} lot {e.lot} is already registered", gtin=e.gtin, lot=e.lot)
    taken = state.packs(e.gtin, e.serials)
    if taken:
        first = sorted(taken)[0]
        raise E.DuplicateSerial(
            f"{len(taken)} serial(s) already registered for GTIN {e.gtin}, e.g. {first} in lot "
            f"{taken[first].lot}", gtin=e.gtin, serial=first)
    batch = Batch(e.gtin, e.lot, e.expiry, e.product, e.actor, len(e.serials), e.channel, "active", None, None,
                  ctx.index, ctx.now)
    return Decision(batch_chain(e.gtin, e.lot), (
        PutBatch(batch), AddPacks(e.gtin, e.lot, e.serials, e.actor),
        AdjustHolding(e.actor, e.gtin, e.lot, len(e.serials))))


def _movement_to(e: ev.Ship | ev.Return, ctx: Context, state: StateReader, *, kind: str) -> Decision:
    sender = _actor(state, e.actor)
    _role(sender, CUSTODIANS, f"{kind} stock")
    recipient = _actor(state, e.to, what="recipient")
    if recipient.id == sender.id:
        raise E.InvalidEvent("a shipment's recipient must be another actor")
    batch = _batch(state, e.gtin, e.lot)
    if isinstance(e, ev.Ship):
        _role(sender, {Role.MANUFACTURER, Role.DISTRIBUTOR}, "ship stock onwards (use 'return')")
        _role(recipient, {Role.DISTRIBUTOR, Role.PHARMACY, Role.HOSPITAL}, "receive a shipment")
        _usable(batch, ctx.now, "shipped")
        channel = e.channel
    else:
        _role(recipient, {Role.MANUFACTURER, Role.DISTRIBUTOR}, "receive returned stock")
        channel = batch.channel  # a return travels in the channel the stock was bought in
    changes, packs = _take_stock(e, state, sender.id)
    moved = tuple(p.moved("in_transit", sender.id) for p in packs)
    shipment = Shipment(e.id, kind, e.gtin, e.lot, sender.id, recipient.id, e.quantity, e.serials, channel,
                        "in_transit", ctx.index, ctx.now, None)
    return Decision(batch_chain(e.gtin, e.lot),
                    (*changes, *([PutPacks(moved)] if moved else []), PutShipment(shipment)))


@_rule(ev.Ship)
def _ship(e: ev.Ship, ctx: Context, state: StateReader) -> Decision:
    return _movement_to(e, ctx, state, kind="ship")


@_rule(ev.Return)
def _return(e: ev.Return, ctx: Context, state: StateReader) -> Decision:
    return _movement_to(e, ctx, state, kind="return")


def _open_shipment(e: ev.Receive | ev.Refuse, state: StateReader) -> Shipment:
    _actor(state, e.actor)
    shipment = state.shipment(e.shipment)
    if shipment is None:
        raise E.UnknownShipment(f"shipment {e.shipment!r} is not in the ledger", shipment=e.shipment)
    if shipment.recipient != e.actor:
        raise E.NotRecipient(f"shipment {e.shipment!r} is addressed to {shipment.recipient}, not {e.actor}",
                             shipment=e.shipment)
    if shipment.status != "in_transit":
        raise E.ShipmentClosed(f"shipment {e.shipment!r} was already {shipment.status}", shipment=e.shipment)
    return shipment


def _hand_over(shipment: Shipment, to: str, ctx: Context, state: StateReader, status: str) -> Decision:
    changes: list[Change] = [AdjustHolding(to, shipment.gtin, shipment.lot, shipment.quantity)]
    if shipment.serials is not None:
        packs = state.packs(shipment.gtin, shipment.serials)
        changes.append(PutPacks(tuple(packs[s].moved("active", to) for s in shipment.serials)))
    changes.append(PutShipment(replace(shipment, status=status, closed_index=ctx.index)))
    return Decision(batch_chain(shipment.gtin, shipment.lot), tuple(changes))


@_rule(ev.Receive)
def _receive(e: ev.Receive, ctx: Context, state: StateReader) -> Decision:
    shipment = _open_shipment(e, state)
    return _hand_over(shipment, e.actor, ctx, state, "received")


@_rule(ev.Refuse)
def _refuse(e: ev.Refuse, ctx: Context, state: StateReader) -> Decision:
    shipment = _open_shipment(e, state)
    return _hand_over(shipment, shipment.sender, ctx, state, "refused")


@_rule(ev.Destroy)
def _destroy(e: ev.Destroy, ctx: Context, state: StateReader) -> Decision:
    actor = _actor(state, e.actor)
    _role(actor, CUSTODIANS, "destroy stock")
    _batch(state, e.gtin, e.lot)
    changes, packs = _take_stock(e, state, actor.id)
    destroyed = tuple(replace(p, status="destroyed", holder=actor.id) for p in packs)
    return Decision(batch_chain(e.gtin, e.lot), (*changes, *([PutPacks(destroyed)] if destroyed else [])))


def _set_status(batch: Batch, status: str, reason: str, ctx: Context) -> Decision:
    return Decision(batch_chain(batch.gtin, batch.lot),
                    (PutBatch(replace(batch, status=status, status_reason=reason, status_index=ctx.index)),))


@_rule(ev.Recall)
def _recall(e: ev.Recall, ctx: Context, state: StateReader) -> Decision:
    actor = _actor(state, e.actor)
    batch = _batch(state, e.gtin, e.lot)
    if not (actor.role == Role.REGULATOR or actor.id == batch.manufacturer):
        raise E.RoleNotAllowed("only the batch's manufacturer or a regulator may recall it", actor=actor.id)
    if batch.status == "recalled":
        raise E.InvalidTransition(f"batch GTIN {e.gtin} lot {e.lot} is already recalled", gtin=e.gtin, lot=e.lot)
    return _set_status(batch, "recalled", e.reason, ctx)


@_rule(ev.Quarantine)
def _quarantine(e: ev.Quarantine, ctx: Context, state: StateReader) -> Decision:
    _role(_actor(state, e.actor), {Role.REGULATOR}, "quarantine a batch")
    batch = _batch(state, e.gtin, e.lot)
    if batch.status != "active":
        raise E.InvalidTransition(f"batch GTIN {e.gtin} lot {e.lot} is {batch.status}, not active",
                                  gtin=e.gtin, lot=e.lot)
    return _set_status(batch, "quarantined", e.reason, ctx)


@_rule(ev.Release)
def _release(e: ev.Release, ctx: Context, state: StateReader) -> Decision:
    _role(_actor(state, e.actor), {Role.REGULATOR}, "release a quarantined batch")
    batch = _batch(state, e.gtin, e.lot)
    if batch.status != "quarantined":
        raise E.InvalidTransition(f"batch GTIN {e.gtin} lot {e.lot} is {batch.status}, not quarantined",
                                  gtin=e.gtin, lot=e.lot)
    return _set_status(batch, "active", e.reason, ctx)


# ---- packs ---------------------------------------------------------------------------------------------


def _registered_pack(state: StateReader, gtin: str, serial: str) -> tuple[Pack, Batch]:
    pack = state.pack(gtin, serial)
    if pack is None:
        raise E.UnknownPack(f"pack GTIN {gtin} serial {serial} was never registered: suspect falsified",
                            gtin=gtin, serial=serial)
    batch = state.batch(gtin, pack.lot)
    assert batch is not None, "a registered pack always has its batch"
    return pack, batch


@_rule(ev.Dispense)
def _dispense(e: ev.Dispense, ctx: Context, state: StateReader) -> Decision:
    actor = _actor(state, e.actor)
    _role(actor, DISPENSERS, "dispense a pack")
    pack, batch = _registered_pack(state, e.gtin, e.serial)
    if (e.lot is not None and e.lot != pack.lot) or (e.expiry is not None and e.expiry != batch.expiry):
        raise E.MismatchError(
            f"pack GTIN {e.gtin} serial {e.serial} is registered with lot {pack.lot} expiry "
            f"{batch.expiry.isoformat()}, but the scan says lot {e.lot} expiry "
            f"{e.expiry.isoformat() if e.expiry else None}", gtin=e.gtin, serial=e.serial)
    if pack.status == "dispensed":
        when = pack.dispensed_at.isoformat() if pack.dispensed_at else "?"
        if pack.dispensed_by == actor.id:
            raise E.AlreadyDispensedByYou(f"you already dispensed pack GTIN {e.gtin} serial {e.serial} at {when} "
                                          f"(entry {pack.dispensed_index}): a double scan, not a new dispense",
                                          dispensed_at=when, index=pack.dispensed_index)
        raise E.DuplicateDispense(f"pack GTIN {e.gtin} serial {e.serial} was already dispensed by another actor "
                                  f"at {when}: likely a cloned pack; do not dispense it",
                                  gtin=e.gtin, serial=e.serial, index=pack.dispensed_index)
    _usable(batch, ctx.now, "dispensed")
    if pack.status != "active":
        raise E.NotInCustody(f"pack GTIN {e.gtin} serial {e.serial} is {pack.status}", gtin=e.gtin, serial=e.serial)
    in_custody = pack.holder == actor.id or (pack.holder is None and state.holding(actor.id, e.gtin, pack.lot) > 0)
    if not in_custody:
        raise E.NotInCustody(f"{actor.id} does not hold pack GTIN {e.gtin} serial {e.serial} "
                             f"(no shipment of it to you was received): possible diversion",
                             gtin=e.gtin, serial=e.serial)
    # built directly: dataclasses.replace costs several times more, and most entries are dispenses
    dispensed = Pack(pack.gtin, pack.serial, pack.lot, "dispensed", actor.id, actor.id, ctx.now, ctx.index)
    return Decision(batch_chain(e.gtin, pack.lot),
                    (AdjustHolding(actor.id, e.gtin, pack.lot, -1), PutPacks((dispensed,))))


@_rule(ev.UndoDispense)
def _undo(e: ev.UndoDispense, ctx: Context, state: StateReader) -> Decision:
    actor = _actor(state, e.actor)
    pack, batch = _registered_pack(state, e.gtin, e.serial)
    if pack.status != "dispensed" or pack.dispensed_by != actor.id or pack.dispensed_at is None:
        raise E.UndoNotAllowed(f"pack GTIN {e.gtin} serial {e.serial} is not a pack you dispensed")
    if ctx.now - pack.dispensed_at > UNDO_WINDOW:
        raise E.UndoNotAllowed(f"the dispense at {pack.dispensed_at.isoformat()} is more than "
                               f"{UNDO_WINDOW.days} days old and can no longer be undone")
    if batch.status == "recalled" or is_expired(batch, ctx.now):
        raise E.UndoNotAllowed(f"batch lot {batch.lot} is recalled or expired: the pack cannot return to stock")
    restored = replace(pack, status="active", holder=actor.id, dispensed_by=None, dispensed_at=None,
                       dispensed_index=None)
    return Decision(batch_chain(e.gtin, pack.lot),
                    (AdjustHolding(actor.id, e.gtin, pack.lot, +1), PutPacks((restored,))))


# ---- reports and alerts ------------------------------------------------------------------------------------


@_rule(ev.Report)
def _report(e: ev.Report, ctx: Context, state: StateReader) -> Decision:
    if e.actor != ev.LEDGER_ACTOR:  # the ledger key files anonymous public reports
        _actor(state, e.actor)
    pack = state.pack(e.gtin, e.serial) if e.serial else None
    lot = e.lot or (pack.lot if pack else None)
    who = "a member of the public" if e.actor == ev.LEDGER_ACTOR else e.actor
    alert = AlertRecord(f"report:{e.id}", "report", f"{e.category} reported by {who}", e.gtin, lot, e.serial,
                        e.actor, ctx.index, ctx.now, "open")
    return Decision(alert_chain(alert, state), (PutAlert(alert),))


@_rule(ev.Alert)
def _alert(e: ev.Alert, ctx: Context, state: StateReader) -> Decision:
    if e.actor != ev.LEDGER_ACTOR:
        raise E.RoleNotAllowed("only the ledger itself records alerts", actor=e.actor)
    alert = AlertRecord(e.id, e.kind, e.message, e.gtin, e.lot, e.serial, e.suspect, ctx.index, ctx.now, "open",
                        cause=e.cause)
    return Decision(alert_chain(alert, state), (PutAlert(alert),))


def alert_chain(alert: AlertRecord, state: StateReader) -> str:
    """Alerts and reports about a registered batch go in its chain; the others in their own chains."""
    if alert.gtin and alert.lot and state.batch(alert.gtin, alert.lot):
        return batch_chain(alert.gtin, alert.lot)
    return REPORTS_CHAIN if alert.kind == "report" else ALERTS_CHAIN


@_rule(ev.AlertUpdate)
def _alert_update(e: ev.AlertUpdate, ctx: Context, state: StateReader) -> Decision:
    _role(_actor(state, e.actor), {Role.REGULATOR, Role.INSPECTOR}, "handle alerts")
    alert = state.alert(e.alert)
    if alert is None:
        raise E.NotFound(f"alert {e.alert!r} does not exist", alert=e.alert)
    if alert.status == "closed":
        raise E.InvalidTransition(f"alert {e.alert!r} is already closed ({alert.outcome})", alert=e.alert)
    updated = replace(alert, status=e.status, outcome=e.outcome, finding=e.finding or alert.finding,
                      updated_index=ctx.index)
    return Decision(alert_chain(alert, state), (PutAlert(updated),))
