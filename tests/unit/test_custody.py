"""ledger.custody.decide on an in-memory state: each custody rule, accepted and refused (no database)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from ledger import errors as E
from ledger import events as ev
from ledger.admission import TrustAnchors, authenticate, key_active_at
from ledger.builder import EventBuilder
from ledger.custody import CLOCK_SKEW, EARLIEST, UNDO_WINDOW, Context, Decision, decide
from ledger.entry import SignedEvent
from ledger.identifiers import batch_chain
from ledger.replay import MemoryState
from ledger.state import Actor, Batch, KeyRecord, Pack, Shipment
from signing import KeyPair

GTIN = "06111234567895"
GTIN_B = "06118000000013"  # note: tests/support.py GTIN_B has a bad check digit
START = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)
EXPIRY = dt.date(2028, 6, 30)
ACTORS = {
    "maphar": "manufacturer", "sothema": "manufacturer", "dist-north": "distributor", "dist-south": "distributor",
    "ph-rabat": "pharmacy", "ph-fes": "pharmacy", "chu-oujda": "hospital", "regulator": "regulator",
    "inspector": "inspector",
}
ROOT_KEY = KeyPair.from_seed(b"r" * 32)
LEDGER_KEY = KeyPair.from_seed(b"l" * 32)
TRUST = TrustAnchors(ROOT_KEY.public, LEDGER_KEY.public)


class Sim:
    """A tiny sequencer over MemoryState: parse, authenticate, decide, apply; one index per accepted event."""

    def __init__(self) -> None:
        self.state = MemoryState()
        self.index = 0
        self.now = START
        self.keys: dict[str, KeyPair] = {}
        for n, (actor, role) in enumerate(ACTORS.items()):
            self.keys[actor] = KeyPair.from_seed(bytes([n + 1]) * 32)
            self.ok(self.root.register_actor(actor, actor.title(), role, "Rabat", self.keys[actor].public.b64))

    def clock(self) -> dt.datetime:
        return self.now

    @property
    def root(self) -> EventBuilder:
        return EventBuilder(ev.ROOT_ACTOR, ROOT_KEY, self.clock)

    def as_(self, actor: str) -> EventBuilder:
        return EventBuilder(actor, self.keys.get(actor) or KeyPair.from_seed(b"x" * 32), self.clock)

    def decide(self, signed: SignedEvent) -> Decision:
        event = ev.parse_event(signed.body)
        authenticate(signed, event, self.index, self.state, TRUST)
        return decide(event, Context(self.index, self.now), self.state)

    def ok(self, signed: SignedEvent) -> Decision:
        decision = self.decide(signed)
        self.state.apply(decision.changes)
        self.index += 1
        return decision

    def no(self, signed: SignedEvent, error: type[E.LedgerError], match: str | None = None) -> E.LedgerError:
        before = (dict(self.state.holdings), dict(self.state.packs_), dict(self.state.batches))
        with pytest.raises(error, match=match) as info:
            self.ok(signed)
        assert type(info.value) is error, f"expected exactly {error.__name__}, got {type(info.value).__name__}"
        assert (dict(self.state.holdings), dict(self.state.packs_), dict(self.state.batches)) == before
        return info.value

    # helpers for common set-ups
    def commission(self, lot: str = "L001", n: int = 10, actor: str = "maphar", gtin: str = GTIN,
                   expiry: dt.date = EXPIRY) -> list[str]:
        serials = [f"{lot}S{i:03d}" for i in range(n)]
        self.ok(self.as_(actor).commission(gtin, lot, expiry, "Amoxicilline", serials))
        return serials

    def deliver(self, sender: str, recipient: str, serials: list[str] | None = None, *, lot: str = "L001",
                quantity: int | None = None, gtin: str = GTIN) -> str:
        ship = self.as_(sender).ship(gtin, lot, recipient, serials=serials, quantity=quantity)
        self.ok(ship)
        self.ok(self.as_(recipient).receive(ship.event_id))
        return ship.event_id

    def holding(self, actor: str, lot: str = "L001", gtin: str = GTIN) -> int:
        return self.state.holding(actor, gtin, lot)

    def pack(self, serial: str, gtin: str = GTIN) -> Pack:
        pack = self.state.pack(gtin, serial)
        assert pack is not None
        return pack

    def batch(self, lot: str = "L001", gtin: str = GTIN) -> Batch:
        batch = self.state.batch(gtin, lot)
        assert batch is not None
        return batch

    def shipment(self, shipment_id: str) -> Shipment:
        shipment = self.state.shipment(shipment_id)
        assert shipment is not None
        return shipment

    def key(self, key_id: str) -> KeyRecord:
        key = self.state.key(key_id)
        assert key is not None
        return key

    def actor(self, actor_id: str) -> Actor:
        actor = self.state.actor(actor_id)
        assert actor is not None
        return actor


@pytest.fixture
def sim() -> Sim:
    return Sim()


# ---- the event's own time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("when", "accepted"), [
    (START + CLOCK_SKEW, True),
    (START + CLOCK_SKEW + dt.timedelta(microseconds=1), False),
    (START + dt.timedelta(days=365), False),
    (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), False),
    (START - dt.timedelta(days=400), True),  # recorded long after, offline: the past has no bound
    (EARLIEST, True),
    (EARLIEST - dt.timedelta(microseconds=1), False),
    (dt.datetime(1, 1, 1, tzinfo=dt.UTC), False),
])
def test_an_event_may_not_claim_a_time_after_its_receipt_or_before_2000(sim: Sim, when: dt.datetime,
                                                                         accepted: bool) -> None:
    signer = EventBuilder("maphar", sim.keys["maphar"], lambda: when)
    for signed in (signer.commission(GTIN, "T1", EXPIRY, "p", ["T1S1"]),
                   signer.ship(GTIN, "T1", "dist-north", serials=["T1S1"])):
        if accepted:
            sim.ok(signed)
        else:
            err = sim.no(signed, E.ImplausibleTime, "before 2000" if when < EARLIEST else "later than the ledger")
            assert err.details["time"] == ev.format_time(when) and ev.format_time(when)[:4] == f"{when.year:04d}"
            return


# ---- commission ------------------------------------------------------------------------------------------


def test_commission_by_active_manufacturer(sim: Sim) -> None:
    serials = sim.commission(n=3)
    batch = sim.state.batch(GTIN, "L001")
    assert batch is not None and batch.manufacturer == "maphar" and batch.quantity == 3 and batch.status == "active"
    assert sim.holding("maphar") == 3
    assert all(sim.pack(s).holder == "maphar" and sim.pack(s).status == "active" for s in serials)


@pytest.mark.parametrize("actor", ["dist-north", "ph-rabat", "chu-oujda", "regulator", "inspector"])
def test_commission_by_other_roles_is_refused(sim: Sim, actor: str) -> None:
    sim.no(sim.as_(actor).commission(GTIN, "L001", EXPIRY, "p", ["S1"]), E.RoleNotAllowed)


def test_commission_by_unknown_or_suspended_actor_is_refused(sim: Sim) -> None:
    event = ev.parse_event(sim.as_("ghost-lab").commission(GTIN, "L001", EXPIRY, "p", ["S1"]).body)
    with pytest.raises(E.UnknownActor):
        decide(event, Context(99, START), sim.state)
    sim.state.actors["maphar"] = replace(sim.state.actors["maphar"], status="suspended")
    sim.no(sim.as_("maphar").commission(GTIN, "L001", EXPIRY, "p", ["S1"]), E.ActorNotActive)


@pytest.mark.parametrize("expiry", [START.date(), START.date() - dt.timedelta(days=1), dt.date(2020, 1, 1)])
def test_commission_expiry_must_be_in_the_future(sim: Sim, expiry: dt.date) -> None:
    sim.no(sim.as_("maphar").commission(GTIN, "L001", expiry, "p", ["S1"]), E.InvalidEvent, "expiry")
    sim.commission(expiry=START.date() + dt.timedelta(days=1))


def test_duplicate_batch_is_refused(sim: Sim) -> None:
    sim.commission()
    sim.no(sim.as_("maphar").commission(GTIN, "L001", EXPIRY, "p", ["OTHER1"]), E.DuplicateBatch)
    sim.no(sim.as_("sothema").commission(GTIN, "L001", EXPIRY, "p", ["OTHER2"]), E.DuplicateBatch)
    # same lot under another GTIN is another batch
    sim.commission(gtin=GTIN_B)


def test_duplicate_serial_is_refused_across_lots(sim: Sim) -> None:
    serials = sim.commission()
    err = sim.no(sim.as_("maphar").commission(GTIN, "L002", EXPIRY, "p", ["NEW1", serials[3]]), E.DuplicateSerial)
    assert err.details["serial"] == serials[3]
    assert sim.state.batch(GTIN, "L002") is None
    # the same serial under another GTIN is fine
    sim.ok(sim.as_("maphar").commission(GTIN_B, "L002", EXPIRY, "p", [serials[3]]))


# ---- ship / return / receive / refuse -----------------------------------------------------------------


def test_ship_moves_stock_in_transit_and_receive_hands_over(sim: Sim) -> None:
    serials = sim.commission()
    ship = sim.as_("maphar").ship(GTIN, "L001", "dist-north", serials=serials[:4])
    decision = sim.ok(ship)
    assert decision.chain == batch_chain(GTIN, "L001")
    assert sim.holding("maphar") == 6 and sim.holding("dist-north") == 0
    assert all(sim.pack(s).status == "in_transit" for s in serials[:4])
    assert sim.shipment(ship.event_id).status == "in_transit"
    sim.ok(sim.as_("dist-north").receive(ship.event_id))
    assert sim.holding("dist-north") == 4
    assert all(sim.pack(s).status == "active" and sim.pack(s).holder == "dist-north" for s in serials[:4])
    assert sim.shipment(ship.event_id).status == "received"


def test_only_the_holder_ships_listed_packs(sim: Sim) -> None:
    serials = sim.commission()
    sim.deliver("maphar", "dist-north", serials[:5])
    # dist-north holds 5 packs, but not serials 5 and 6
    sim.no(sim.as_("dist-north").ship(GTIN, "L001", "ph-rabat", serials=serials[5:7]), E.NotHolder)
    # maphar no longer holds the delivered ones
    sim.no(sim.as_("maphar").ship(GTIN, "L001", "dist-south", serials=serials[:1]), E.NotHolder)


def test_packs_in_transit_cannot_be_shipped_again(sim: Sim) -> None:
    serials = sim.commission()
    sim.ok(sim.as_("maphar").ship(GTIN, "L001", "dist-north", serials=serials[:2]))
    sim.no(sim.as_("maphar").ship(GTIN, "L001", "dist-south", serials=serials[:1]), E.NotHolder)


def test_never_ship_more_than_held(sim: Sim) -> None:
    serials = sim.commission(n=5)
    err = sim.no(sim.as_("maphar").ship(GTIN, "L001", "dist-north", quantity=6), E.OverShipment)
    assert err.details["held"] == 5 and err.details["requested"] == 6
    assert err.raises_alert
    sim.no(sim.as_("dist-north").ship(GTIN, "L001", "ph-rabat", quantity=1), E.OverShipment)
    sim.no(sim.as_("maphar").ship(GTIN, "L001", "dist-north", serials=[*serials, "L001S999"]), E.OverShipment)
    sim.ok(sim.as_("maphar").ship(GTIN, "L001", "dist-north", quantity=5))
    assert sim.holding("maphar") == 0


def test_unknown_or_foreign_serials_are_refused(sim: Sim) -> None:
    sim.commission()
    other = sim.commission(lot="L002")
    sim.no(sim.as_("maphar").ship(GTIN, "L001", "dist-north", serials=["NOPE"]), E.UnknownPack)
    sim.no(sim.as_("maphar").ship(GTIN, "L001", "dist-north", serials=[other[0]]), E.UnknownPack)


def test_ship_to_unknown_batch_is_refused(sim: Sim) -> None:
    sim.no(sim.as_("maphar").ship(GTIN, "NOLOT", "dist-north", quantity=1), E.UnknownBatch)


@pytest.mark.parametrize("recipient", ["sothema", "regulator", "inspector"])
def test_ship_recipient_role(sim: Sim, recipient: str) -> None:
    sim.commission()
    sim.no(sim.as_("maphar").ship(GTIN, "L001", recipient, quantity=1), E.RoleNotAllowed)


@pytest.mark.parametrize("recipient", ["dist-north", "ph-rabat", "chu-oujda"])
def test_ship_to_custodians_downstream(sim: Sim, recipient: str) -> None:
    sim.commission()
    sim.ok(sim.as_("maphar").ship(GTIN, "L001", recipient, quantity=1))


def test_ship_to_unregistered_recipient_is_refused(sim: Sim) -> None:
    sim.commission()
    sim.no(sim.as_("maphar").ship(GTIN, "L001", "nobody-here", quantity=1), E.UnknownActor)


def test_self_shipment_is_refused(sim: Sim) -> None:
    sim.commission()
    sim.no(sim.as_("maphar").ship(GTIN, "L001", "maphar", quantity=1), E.InvalidEvent, "another actor")


def test_pharmacy_returns_but_does_not_ship(sim: Sim) -> None:
    serials = sim.commission()
    sim.deliver("maphar", "ph-rabat", serials[:3])
    sim.no(sim.as_("ph-rabat").ship(GTIN, "L001", "ph-fes", serials=serials[:1]), E.RoleNotAllowed)
    sim.no(sim.as_("ph-rabat").return_(GTIN, "L001", "ph-fes", "x", serials=serials[:1]), E.RoleNotAllowed)
    sim.no(sim.as_("regulator").ship(GTIN, "L001", "ph-fes", quantity=1), E.RoleNotAllowed)
    ret = sim.as_("ph-rabat").return_(GTIN, "L001", "maphar", "overstock", serials=serials[:2])
    sim.ok(ret)
    sim.ok(sim.as_("maphar").receive(ret.event_id))
    assert sim.holding("ph-rabat") == 1 and sim.holding("maphar") == 9


def test_receive_only_by_named_recipient_and_once(sim: Sim) -> None:
    sim.commission()
    ship = sim.as_("maphar").ship(GTIN, "L001", "dist-north", quantity=3)
    sim.ok(ship)
    sim.no(sim.as_("dist-south").receive(ship.event_id), E.NotRecipient)
    sim.no(sim.as_("maphar").receive(ship.event_id), E.NotRecipient)
    sim.no(sim.as_("dist-south").refuse(ship.event_id, "not mine"), E.NotRecipient)
    sim.ok(sim.as_("dist-north").receive(ship.event_id))
    sim.no(sim.as_("dist-north").receive(ship.event_id), E.ShipmentClosed)
    sim.no(sim.as_("dist-north").refuse(ship.event_id, "changed my mind"), E.ShipmentClosed)
    assert sim.holding("dist-north") == 3


def test_receive_unknown_shipment(sim: Sim) -> None:
    sim.no(sim.as_("dist-north").receive("no-such-shipment"), E.UnknownShipment)


def test_refuse_returns_custody_to_the_sender(sim: Sim) -> None:
    serials = sim.commission()
    ship = sim.as_("maphar").ship(GTIN, "L001", "dist-north", serials=serials[:4])
    sim.ok(ship)
    sim.ok(sim.as_("dist-north").refuse(ship.event_id, "broken seals"))
    assert sim.holding("maphar") == 10 and sim.holding("dist-north") == 0
    assert all(sim.pack(s).holder == "maphar" and sim.pack(s).status == "active" for s in serials[:4])
    assert sim.shipment(ship.event_id).status == "refused"
    sim.no(sim.as_("dist-north").receive(ship.event_id), E.ShipmentClosed)


# ---- dispense ------------------------------------------------------------------------------------------


@pytest.fixture
def stocked(sim: Sim) -> tuple[Sim, list[str]]:
    serials = sim.commission()
    sim.deliver("maphar", "dist-north", serials[:8])
    sim.deliver("dist-north", "ph-rabat", serials[:3])
    sim.deliver("dist-north", "chu-oujda", serials[3:5])
    return sim, serials


def test_pharmacy_and_hospital_dispense_packs_they_hold(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0], lot="L001", expiry=EXPIRY))
    sim.ok(sim.as_("chu-oujda").dispense(GTIN, serials[3]))
    p = sim.pack(serials[0])
    assert (p.status, p.dispensed_by, p.dispensed_at, p.dispensed_index) == ("dispensed", "ph-rabat", START,
                                                                              sim.index - 2)
    assert sim.holding("ph-rabat") == 2 and sim.holding("chu-oujda") == 1


@pytest.mark.parametrize("actor", ["maphar", "dist-north", "regulator", "inspector"])
def test_only_dispensers_dispense(stocked: tuple[Sim, list[str]], actor: str) -> None:
    sim, serials = stocked
    sim.no(sim.as_(actor).dispense(GTIN, serials[6]), E.RoleNotAllowed)


def test_dispense_of_a_pack_not_held_is_refused(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    err = sim.no(sim.as_("ph-fes").dispense(GTIN, serials[0]), E.NotInCustody)
    assert err.raises_alert
    sim.no(sim.as_("ph-rabat").dispense(GTIN, serials[3]), E.NotInCustody)  # held by chu-oujda
    sim.no(sim.as_("ph-rabat").dispense(GTIN, serials[9]), E.NotInCustody)  # still at maphar


def test_dispense_of_a_pack_in_transit_is_refused(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("dist-north").ship(GTIN, "L001", "ph-fes", serials=serials[5:6]))
    sim.no(sim.as_("ph-fes").dispense(GTIN, serials[5]), E.NotInCustody)


def test_dispense_of_unknown_pack(stocked: tuple[Sim, list[str]]) -> None:
    sim, _ = stocked
    err = sim.no(sim.as_("ph-rabat").dispense(GTIN, "FAKE001"), E.UnknownPack)
    assert err.raises_alert


def test_pooled_stock_dispenses_by_quantity(sim: Sim) -> None:
    serials = sim.commission(n=6)
    sim.deliver("maphar", "dist-north", quantity=4)
    sim.deliver("dist-north", "ph-fes", quantity=2)
    assert sim.holding("ph-fes") == 2
    assert all(sim.pack(s).holder is None for s in serials)  # pooled: packs can no longer be told apart
    sim.ok(sim.as_("ph-fes").dispense(GTIN, serials[5]))
    sim.ok(sim.as_("ph-fes").dispense(GTIN, serials[0]))
    assert sim.holding("ph-fes") == 0
    # holding exhausted: a third pooled pack is not in ph-fes's custody
    sim.no(sim.as_("ph-fes").dispense(GTIN, serials[1]), E.NotInCustody)
    sim.no(sim.as_("ph-rabat").dispense(GTIN, serials[1]), E.NotInCustody)


def test_same_pharmacy_dispensing_twice_is_told_when(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))
    first_index = sim.index - 1
    sim.now += dt.timedelta(hours=2)
    err = sim.no(sim.as_("ph-rabat").dispense(GTIN, serials[0]), E.AlreadyDispensedByYou)
    assert err.details["dispensed_at"] == START.isoformat()
    assert err.details["index"] == first_index
    assert START.isoformat() in err.message
    assert not err.raises_alert


def test_another_actor_dispensing_a_dispensed_pack_is_a_duplicate(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))
    for actor in ("ph-fes", "chu-oujda"):
        err = sim.no(sim.as_(actor).dispense(GTIN, serials[0]), E.DuplicateDispense)
        assert err.raises_alert
        assert err.details["serial"] == serials[0]


@pytest.mark.parametrize(("lot", "expiry"), [("L002", None), (None, dt.date(2028, 6, 29)),
                                             ("L002", EXPIRY), ("L001", dt.date(2029, 1, 1))])
def test_mismatch_on_lot_or_expiry(stocked: tuple[Sim, list[str]], lot: str | None, expiry: dt.date | None) -> None:
    sim, serials = stocked
    err = sim.no(sim.as_("ph-rabat").dispense(GTIN, serials[0], lot=lot, expiry=expiry), E.MismatchError)
    assert err.raises_alert


# ---- undo dispense ---------------------------------------------------------------------------------------


def test_undo_within_ten_days(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))
    sim.now += UNDO_WINDOW  # exactly ten days: still allowed
    sim.ok(sim.as_("ph-rabat").undo_dispense(GTIN, serials[0], "wrong patient"))
    p = sim.pack(serials[0])
    assert (p.status, p.holder, p.dispensed_by, p.dispensed_at) == ("active", "ph-rabat", None, None)
    assert sim.holding("ph-rabat") == 3
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))  # dispensable again


def test_undo_after_ten_days_is_refused(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))
    sim.now += UNDO_WINDOW + dt.timedelta(seconds=1)
    sim.no(sim.as_("ph-rabat").undo_dispense(GTIN, serials[0], "late"), E.UndoNotAllowed, "10 days")


def test_undo_by_another_pharmacy_or_of_an_undispensed_pack(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))
    sim.no(sim.as_("ph-fes").undo_dispense(GTIN, serials[0], "x"), E.UndoNotAllowed)
    sim.no(sim.as_("ph-rabat").undo_dispense(GTIN, serials[1], "x"), E.UndoNotAllowed)
    sim.no(sim.as_("ph-rabat").undo_dispense(GTIN, "FAKE001", "x"), E.UnknownPack)


def test_undo_after_recall_is_refused(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))
    sim.ok(sim.as_("maphar").recall(GTIN, "L001", "contamination"))
    sim.no(sim.as_("ph-rabat").undo_dispense(GTIN, serials[0], "x"), E.UndoNotAllowed, "recalled")


def test_undo_after_expiry_is_refused(sim: Sim) -> None:
    expiry = START.date() + dt.timedelta(days=3)
    serials = sim.commission(expiry=expiry)
    sim.deliver("maphar", "ph-rabat", serials[:2])
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))
    sim.now = dt.datetime.combine(expiry + dt.timedelta(days=1), dt.time(8), dt.UTC)
    sim.no(sim.as_("ph-rabat").undo_dispense(GTIN, serials[0], "x"), E.UndoNotAllowed, "expired")


# ---- recall, quarantine, release -------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["maphar", "regulator"])
def test_recall_by_manufacturer_of_the_batch_or_regulator(sim: Sim, actor: str) -> None:
    sim.commission()
    sim.ok(sim.as_(actor).recall(GTIN, "L001", "contamination"))
    batch = sim.state.batch(GTIN, "L001")
    assert batch is not None and batch.status == "recalled" and batch.status_reason == "contamination"
    sim.no(sim.as_(actor).recall(GTIN, "L001", "again"), E.InvalidTransition)


@pytest.mark.parametrize("actor", ["sothema", "dist-north", "ph-rabat", "inspector"])
def test_recall_by_others_is_refused(sim: Sim, actor: str) -> None:
    sim.commission()
    sim.no(sim.as_(actor).recall(GTIN, "L001", "x"), E.RoleNotAllowed)


def test_recall_of_unknown_batch(sim: Sim) -> None:
    sim.no(sim.as_("regulator").recall(GTIN, "NOLOT", "x"), E.UnknownBatch)


@pytest.mark.parametrize("actor", ["maphar", "dist-north", "ph-rabat", "inspector"])
def test_quarantine_and_release_by_regulator_only(sim: Sim, actor: str) -> None:
    sim.commission()
    sim.no(sim.as_(actor).quarantine(GTIN, "L001", "x"), E.RoleNotAllowed)
    sim.ok(sim.as_("regulator").quarantine(GTIN, "L001", "investigation"))
    assert sim.batch().status == "quarantined"
    sim.no(sim.as_(actor).release(GTIN, "L001", "x"), E.RoleNotAllowed)
    sim.no(sim.as_("regulator").quarantine(GTIN, "L001", "twice"), E.InvalidTransition)
    sim.ok(sim.as_("regulator").release(GTIN, "L001", "cleared"))
    assert sim.batch().status == "active"
    sim.no(sim.as_("regulator").release(GTIN, "L001", "not quarantined"), E.InvalidTransition)


def test_recalled_batch_cannot_be_quarantined_or_released(sim: Sim) -> None:
    sim.commission()
    sim.ok(sim.as_("maphar").recall(GTIN, "L001", "x"))
    sim.no(sim.as_("regulator").quarantine(GTIN, "L001", "x"), E.InvalidTransition)
    sim.no(sim.as_("regulator").release(GTIN, "L001", "x"), E.InvalidTransition)


def _unusable(sim: Sim, how: str) -> None:
    if how == "recalled":
        sim.ok(sim.as_("maphar").recall(GTIN, "L001", "contamination"))
    elif how == "quarantined":
        sim.ok(sim.as_("regulator").quarantine(GTIN, "L001", "investigation"))
    else:
        sim.now = dt.datetime.combine(EXPIRY + dt.timedelta(days=1), dt.time(0, 0, 1), dt.UTC)


UNUSABLE = {"recalled": E.BatchRecalled, "quarantined": E.BatchQuarantined, "expired": E.BatchExpired}


@pytest.mark.parametrize("how", sorted(UNUSABLE))
def test_unusable_batch_cannot_be_shipped_or_dispensed(stocked: tuple[Sim, list[str]], how: str) -> None:
    sim, serials = stocked
    _unusable(sim, how)
    err = sim.no(sim.as_("dist-north").ship(GTIN, "L001", "ph-fes", serials=serials[5:6]), UNUSABLE[how])
    assert err.raises_alert
    sim.no(sim.as_("maphar").ship(GTIN, "L001", "dist-south", quantity=1), UNUSABLE[how])
    sim.no(sim.as_("ph-rabat").dispense(GTIN, serials[0]), UNUSABLE[how])
    sim.no(sim.as_("chu-oujda").dispense(GTIN, serials[3]), UNUSABLE[how])


@pytest.mark.parametrize("how", sorted(UNUSABLE))
def test_unusable_batch_can_be_returned_and_destroyed(stocked: tuple[Sim, list[str]], how: str) -> None:
    sim, serials = stocked
    _unusable(sim, how)
    ret = sim.as_("ph-rabat").return_(GTIN, "L001", "dist-north", how, serials=serials[:2])
    sim.ok(ret)
    sim.ok(sim.as_("dist-north").receive(ret.event_id))
    sim.ok(sim.as_("dist-north").destroy(GTIN, "L001", how, serials=[serials[0], serials[5]]))
    assert sim.pack(serials[0]).status == "destroyed" and sim.pack(serials[5]).status == "destroyed"
    sim.ok(sim.as_("maphar").destroy(GTIN, "L001", how, quantity=2))
    assert sim.holding("maphar") == 0 and sim.holding("dist-north") == 3  # 8 in, 5 out, 2 back, 2 destroyed


def test_expiry_day_itself_is_usable(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.now = dt.datetime.combine(EXPIRY, dt.time(23, 59), dt.UTC)
    sim.ok(sim.as_("ph-rabat").dispense(GTIN, serials[0]))


def test_destroyed_packs_cannot_be_shipped_or_dispensed(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    sim.ok(sim.as_("ph-rabat").destroy(GTIN, "L001", "damaged", serials=serials[:1]))
    sim.no(sim.as_("ph-rabat").dispense(GTIN, serials[0]), E.NotInCustody)
    sim.ok(sim.as_("dist-north").destroy(GTIN, "L001", "flood", quantity=3))
    sim.no(sim.as_("dist-north").ship(GTIN, "L001", "ph-fes", quantity=1), E.OverShipment)


def test_destroy_by_non_custodian_is_refused(stocked: tuple[Sim, list[str]]) -> None:
    sim, _ = stocked
    sim.no(sim.as_("regulator").destroy(GTIN, "L001", "x", quantity=1), E.RoleNotAllowed)
    sim.no(sim.as_("ph-fes").destroy(GTIN, "L001", "x", quantity=1), E.OverShipment)


# ---- registry and keys ---------------------------------------------------------------------------------


def test_registry_events_only_by_root(sim: Sim) -> None:
    key = KeyPair.from_seed(b"n" * 32)
    for actor in ("regulator", "maphar"):
        b = sim.as_(actor)
        sim.no(b.register_actor("ph-new", "New", "pharmacy", "Rabat", key.public.b64), E.RoleNotAllowed)
        sim.no(b.rotate_key("ph-rabat", key.public.b64), E.RoleNotAllowed)
        sim.no(b.revoke_key("ph-rabat", sim.keys["ph-rabat"].key_id, "x"), E.RoleNotAllowed)
    decision = sim.ok(sim.root.register_actor("ph-new", "New", "pharmacy", "Rabat", key.public.b64))
    assert decision.chain == "actor/ph-new"
    assert sim.actor("ph-new").status == "active"
    assert sim.key(key.key_id).actor == "ph-new"


def test_register_refuses_duplicates_reserved_ids_and_bad_keys(sim: Sim) -> None:
    fresh = KeyPair.from_seed(b"f" * 32).public.b64
    sim.no(sim.root.register_actor("maphar", "Again", "manufacturer", "R", fresh), E.DuplicateActor)
    for reserved in ("root", "ledger", "public"):
        sim.no(sim.root.register_actor(reserved, "X", "pharmacy", "R", fresh), E.DuplicateActor)
    sim.no(sim.root.register_actor("ph-new", "X", "pharmacy", "R", sim.keys["maphar"].public.b64), E.DuplicateKey)
    sim.no(sim.root.register_actor("ph-new", "X", "pharmacy", "R", "AAAA"), E.InvalidEvent, "public_key")


def test_key_rotate_retires_old_keys(sim: Sim) -> None:
    old = sim.keys["ph-rabat"]
    new = KeyPair.from_seed(b"N" * 32)
    rotate_index = sim.index
    sim.ok(sim.root.rotate_key("ph-rabat", new.public.b64))
    assert sim.key(old.key_id).status == "rotated"
    assert sim.key(old.key_id).retired_index == rotate_index
    assert sim.key(new.key_id).status == "active"
    assert [k.key_id for k in sim.state.active_keys("ph-rabat")] == [new.key_id]
    sim.no(sim.root.rotate_key("ph-rabat", new.public.b64), E.DuplicateKey)
    # errors about the subject are not errors of the root key that signed (not AuthError: CLI exit 3, not 4)
    sim.no(sim.root.rotate_key("nobody-here", KeyPair.from_seed(b"z" * 32).public.b64), E.UnknownSubject)
    # the old key signs nothing any more; the new one does
    sim.no(sim.as_("ph-rabat").report(GTIN, "other"), E.KeyNotActive)
    sim.keys["ph-rabat"] = new
    sim.ok(sim.as_("ph-rabat").report(GTIN, "other"))


def test_key_revoke(sim: Sim) -> None:
    key = sim.keys["ph-fes"]
    sim.no(sim.root.revoke_key("ph-rabat", key.key_id, "not theirs"), E.UnknownSubjectKey)
    sim.no(sim.root.revoke_key("ph-fes", "ed25519:" + "00" * 16, "unknown"), E.UnknownSubjectKey)
    sim.no(sim.root.revoke_key("nobody-here", key.key_id, "no such actor"), E.UnknownSubject)
    sim.ok(sim.root.revoke_key("ph-fes", key.key_id, "stolen"))
    assert sim.key(key.key_id).status == "revoked"
    sim.no(sim.root.revoke_key("ph-fes", key.key_id, "again"), E.InvalidTransition)
    for refused in (E.UnknownSubject, E.UnknownSubjectKey, E.InvalidTransition):
        assert not issubclass(refused, E.AuthError)
    sim.no(sim.as_("ph-fes").report(GTIN, "other"), E.KeyNotActive)


def test_key_active_window() -> None:
    k = KeyRecord("k", "a", "p", "rotated", 5, 9)
    assert [i for i in range(12) if key_active_at(k, i)] == [6, 7, 8]
    assert [i for i in range(8) if key_active_at(replace(k, retired_index=None), i)] == [6, 7]


def test_signer_mismatch_and_bad_signatures(sim: Sim) -> None:
    sim.commission()
    forged = EventBuilder("ph-fes", sim.keys["ph-rabat"], sim.clock).report(GTIN, "other")
    sim.no(forged, E.SignerMismatch)
    unknown = EventBuilder("ph-fes", KeyPair.from_seed(b"?" * 32), sim.clock).report(GTIN, "other")
    sim.no(unknown, E.UnknownKey)
    good = sim.as_("ph-fes").report(GTIN, "other")
    tampered = SignedEvent({**good.body, "category": "diversion"}, good.key_id, good.signature)
    sim.no(tampered, E.SignatureInvalid)
    # root events need the root anchor, ledger events the ledger anchor
    sim.no(EventBuilder(ev.ROOT_ACTOR, sim.keys["regulator"], sim.clock).rotate_key("maphar", ROOT_KEY.public.b64),
           E.SignerMismatch)
    sim.no(EventBuilder(ev.LEDGER_ACTOR, ROOT_KEY, sim.clock).report(GTIN, "other"), E.SignerMismatch)


# ---- reports and alerts ---------------------------------------------------------------------------------------


def test_reports_by_actors_and_the_ledger(stocked: tuple[Sim, list[str]]) -> None:
    sim, serials = stocked
    d = sim.ok(sim.as_("inspector").report(GTIN, "suspected_falsified", serial=serials[0]))
    assert d.chain == batch_chain(GTIN, "L001")
    d = sim.ok(EventBuilder(ev.LEDGER_ACTOR, LEDGER_KEY, sim.clock).report(GTIN_B, "damaged_pack"))
    assert d.chain == "reports"
    assert len(sim.state.alerts) == 2


def _alert(actor: str, key: KeyPair) -> SignedEvent:
    body = {"v": 1, "type": "alert", "id": f"alert-by-{actor}", "actor": actor, "time": ev.format_time(START),
            "kind": "x", "message": "m", "suspect": "ph-fes", "evidence": {"event": {}, "key_id": "k"}}
    return SignedEvent.create(body, key)


def test_alerts_only_by_the_ledger(sim: Sim) -> None:
    sim.no(_alert("regulator", sim.keys["regulator"]), E.RoleNotAllowed)
    d = sim.ok(_alert(ev.LEDGER_ACTOR, LEDGER_KEY))
    assert d.chain == "alerts"
    assert sim.state.alerts["alert-by-ledger"].suspect == "ph-fes"


def test_a_registered_key_that_does_not_hash_to_its_id_is_refused_every_time() -> None:
    """The signer's key is decoded once per key (cached): a tampered registry row must still be refused on
    every use, and a good one give the same key as before."""
    from ledger.admission import registered_public_key

    good, other = KeyPair.from_seed(b"g" * 32), KeyPair.from_seed(b"o" * 32)
    record = KeyRecord(good.key_id, "ph-rabat", good.public.b64, "active", 0, None)
    assert registered_public_key(record) == good.public
    assert registered_public_key(replace(record)) == good.public
    swapped = replace(record, public_key=other.public.b64)  # an edited row: another key under the same id
    for _ in range(2):
        with pytest.raises(E.IntegrityError, match="does not hash to its id"):
            registered_public_key(swapped)
    with pytest.raises(E.IntegrityError, match="is malformed"):
        registered_public_key(replace(record, public_key="not base64!"))


def test_a_moved_pack_is_a_new_equal_frozen_pack() -> None:
    pack = Pack(GTIN, "SN1", "L1", "active", "dist-north", "ph-rabat", START, 7)
    moved = pack.moved("in_transit", "ph-fes")
    assert moved == replace(pack, status="in_transit", holder="ph-fes")
    assert hash(moved) == hash(replace(pack, status="in_transit", holder="ph-fes"))
    assert (pack.status, pack.holder) == ("active", "dist-north")  # the original is untouched
    with pytest.raises(AttributeError):
        moved.status = "dispensed"  # type: ignore[misc]
