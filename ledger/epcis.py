"""Export ledger entries as a GS1 EPCIS 2.0 JSON-LD document (pure mapping, no I/O).

``to_epcis_document`` turns log entries into one ``EPCISDocument`` that validates against the official
EPCIS 2.0 JSON Schema and uses only standard CBV 2.0 business steps, dispositions and source/destination
types. Every exported event is an ``ObjectEvent``; one ledger entry gives exactly one EPCIS event, in the
order given.

Skipped entries: ``actor_register``, ``key_rotate`` and ``key_revoke`` are master data (who the parties
are and which keys they sign with), ``alert`` is the ledger's own evidence of a refused submission, and
``alert_update`` the regulator's handling of one: none of them is something that happened to a medicine, so none
becomes an EPCIS event.

Identifiers (GS1 Digital Link URIs, which EPCIS 2.0 accepts wherever an EPC URI may appear; the
``urn:epc:id:sgtin`` / ``sgln`` forms would need the GS1 company prefix length, which the ledger does not
know):

- a pack (instance): ``https://id.gs1.org/01/<gtin14>/21/<serial>``;
- a batch (class, in ``quantityList``): ``https://id.gs1.org/01/<gtin14>/10/<lot>``; a report without a lot
  names the product class ``https://id.gs1.org/01/<gtin14>``;
- lot and serial are percent-encoded exactly as GS1 Digital Link (and ``biip``) does (``quote(v, safe="")``);
- ``readPoint`` / ``bizLocation`` (a physical location): ``https://id.gs1.org/414/<gln>`` when the acting
  actor has a GLN in ``actors``; omitted otherwise;
- a party in ``sourceList`` / ``destinationList`` (type ``owning_party``): ``https://id.gs1.org/417/<gln>``
  (AI 417 is the *party* GLN) when the actor has a GLN, else ``urn:athar:actor:<actor id>``.

Every event carries ``eventID`` = ``ni:///sha-256;<entry hash, hex>`` (the RFC 9162 leaf hash of the
entry, i.e. SHA-256(0x00 || JCS(entry)); it has no ``?ver=CBV2.0`` parameter because it is *not* the
CBV 8.9 canonical event hash), ``eventTime`` = the signed body's ``time`` (UTC),
``eventTimeZoneOffset`` ``+00:00``, ``recordTime`` = the entry's receive time, and these user extension
fields (namespace prefix ``athar`` = ``https://athar.example/ns/``, declared in the document's
``@context``), so that an auditor can go from any EPCIS event back to the signed log entry:
``athar:index`` (entry index), ``athar:entryHash`` (hex), ``athar:eventType`` (ledger type) and
``athar:eventId`` (the body's client-chosen id). Type-specific extensions: ``athar:channel`` (supply
channel), ``athar:shipment`` (the ship/return body id that a shipment, receipt or refusal belongs to),
``athar:reason`` (free-text reason), ``athar:reportCategory`` and ``athar:region`` (reports).

=================  ======  ================  ========================  ===================================
ledger type        action  bizStep           disposition               what / where
=================  ======  ================  ========================  ===================================
commission         ADD     commissioning     active                    epcList (serials); ilmd
                                                                       ``cbvmda:lotNumber``,
                                                                       ``cbvmda:itemExpirationDate``
                                                                       (YYYY-MM-DD), ``athar:product``;
                                                                       readPoint + bizLocation = maker
ship               OBSERVE shipping          in_transit                epcList or quantityList (batch class
                                                                       + quantity); source/destination
                                                                       owning_party; readPoint = sender
return             OBSERVE shipping          returned                  as ship (CBV has no ``returning``)
receive            OBSERVE receiving         in_progress               goods, parties and channel of the
                                                                       shipment it names; readPoint +
                                                                       bizLocation = recipient
refuse             OBSERVE receiving         returned                  as receive, readPoint = refuser, no
                                                                       bizLocation (goods go back)
dispense           OBSERVE dispensing        dispensed                 epcList [pack]; readPoint = dispenser
undo_dispense      OBSERVE stocking          sellable_accessible       epcList [pack]; readPoint +
                                                                       bizLocation = dispenser
destroy            DELETE  destroying        destroyed                 epcList or quantityList; readPoint
recall             OBSERVE holding           recalled                  quantityList [batch class], no
                                                                       quantity (the whole lot)
quarantine         OBSERVE holding           non_sellable_other        as recall
release            OBSERVE holding           available                 as recall
report             OBSERVE inspecting        (none)                    epcList [pack] if a serial is given,
                                                                       else the batch or product class
=================  ======  ================  ========================  ===================================

Choices, and why:

- *receive* needs the goods it takes in, but its body only names the shipment. The ship (or return) entry
  is looked up first among ``entries`` (by the body ``id``), then in the optional ``shipments`` mapping
  (shipment id -> its ship/return entry), for exports that hold the receipt but not the shipment. A
  receipt or refusal whose shipment is found in neither raises ``UnknownShipment``.
- *refuse*: CBV has no "rejecting" step; ``receiving`` ties the event to the receipt process and
  ``returned`` ("sent or brought back") says where the goods go: the ledger returns custody to the sender.
  ``accepting`` is not used because nothing changes hands.
- *undo_dispense*: the ledger keeps the dispense and records the undo as a new signed entry, so the export
  does the same with a forward event instead of an EPCIS error declaration (which would re-state the
  dispense event under its own eventID and claim it did not occur). ``stocking`` ("make an object available
  to the customer") with ``sellable_accessible`` puts the pack back in the pharmacy's dispensable stock.
- *destroy* uses action ``DELETE``, the end-of-life action (see CBV ``sampling``); *dispense* stays
  ``OBSERVE`` as in GS1 healthcare practice, since a dispense can be undone.
- *recall / quarantine / release*: ``holding`` ("segregated for further review") for all three;
  ``non_sellable_other`` for a quarantined batch (it may be neither shipped nor dispensed),
  and ``available`` ("returned to service or to the supply chain") when the quarantine is lifted.
  These regulatory decisions have no readPoint: the regulator's office is not where the stock is.
- *report*: a report is a claim, not an observed state, so it sets no disposition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ledger import events as ev
from ledger.entry import Entry
from ledger.errors import UnknownShipment
from ledger.state import Actor

__all__ = [
    "ATHAR_NS",
    "EPCIS_CONTEXT",
    "SKIPPED_TYPES",
    "batch_uri",
    "pack_uri",
    "product_uri",
    "to_epcis_document",
]

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
ATHAR_NS = "https://athar.example/ns/"
DIGITAL_LINK = "https://id.gs1.org"
SKIPPED_TYPES = frozenset({ev.ActorRegister.TYPE, ev.KeyRotate.TYPE, ev.KeyRevoke.TYPE, ev.Alert.TYPE,
                           ev.AlertUpdate.TYPE})
_OWNING_PARTY = "owning_party"


def to_epcis_document(
    entries: Sequence[Entry],
    actors: Mapping[str, Actor],
    *,
    created: dt.datetime,
    sender: str | None = None,
    shipments: Mapping[str, Entry] | None = None,
) -> dict[str, Any]:
    """Map log entries to an EPCIS 2.0 ``EPCISDocument`` (one ObjectEvent per non-skipped entry, in order).

    ``actors`` gives GLNs for locations and parties; ``created`` (timezone-aware) is the document's
    ``creationDate``; ``sender`` fills the optional document ``sender``; ``shipments`` (shipment id -> its
    ship or return entry) resolves receipts and refusals whose shipment is not among ``entries``.
    Raises ``InvalidEvent`` for a malformed body, ``UnknownShipment`` for an unresolvable receipt, and
    ``ValueError`` for a naive ``created``.
    """
    if created.tzinfo is None:
        raise ValueError("created must be a timezone-aware datetime")
    parsed = [(entry, ev.parse_event(entry.signed.body)) for entry in entries]
    known: dict[str, tuple[Entry, ev.Ship | ev.Return]] = {}
    for shipment_id, entry in (shipments or {}).items():
        event = ev.parse_event(entry.signed.body)
        if isinstance(event, ev.Ship | ev.Return):
            known[shipment_id] = (entry, event)
    for entry, event in parsed:
        if isinstance(event, ev.Ship | ev.Return):
            known[event.id] = (entry, event)
    mapper = _Mapper(actors, known)
    events = [mapper.event(entry, event) for entry, event in parsed if event.type not in SKIPPED_TYPES]
    doc: dict[str, Any] = {
        "@context": [EPCIS_CONTEXT, {"athar": ATHAR_NS}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": ev.format_time(created),
    }
    if sender is not None:
        doc["sender"] = sender
    doc["epcisBody"] = {"eventList": events}
    return doc


# ---- identifiers -------------------------------------------------------------------------------------


def _dl(*parts: str) -> str:
    """A GS1 Digital Link URI on id.gs1.org, each value percent-encoded as the Digital Link standard says."""
    return DIGITAL_LINK + "".join(f"/{quote(p, safe='')}" for p in parts)


def pack_uri(gtin: str, serial: str) -> str:
    return _dl("01", gtin, "21", serial)


def batch_uri(gtin: str, lot: str) -> str:
    return _dl("01", gtin, "10", lot)


def product_uri(gtin: str) -> str:
    return _dl("01", gtin)


class _Mapper:
    def __init__(self, actors: Mapping[str, Actor], shipments: Mapping[str, tuple[Entry, ev.Ship | ev.Return]]):
        self.actors = actors
        self.shipments = shipments

    def _gln(self, actor_id: str) -> str | None:
        actor = self.actors.get(actor_id)
        return actor.gln if actor is not None else None

    def location(self, actor_id: str) -> dict[str, str] | None:
        gln = self._gln(actor_id)
        return {"id": _dl("414", gln)} if gln else None

    def party(self, actor_id: str) -> str:
        gln = self._gln(actor_id)
        return _dl("417", gln) if gln else f"urn:athar:actor:{actor_id}"

    def transfer(self, sender: str, recipient: str) -> dict[str, Any]:
        return {
            "sourceList": [{"type": _OWNING_PARTY, "source": self.party(sender)}],
            "destinationList": [{"type": _OWNING_PARTY, "destination": self.party(recipient)}],
        }

    def shipment(self, entry: Entry, shipment_id: str) -> ev.Ship | ev.Return:
        found = self.shipments.get(shipment_id)
        if found is None:
            raise UnknownShipment(
                f"entry {entry.index} names shipment {shipment_id!r}, which is neither among the exported "
                "entries nor in 'shipments'", shipment=shipment_id, index=entry.index)
        return found[1]

    # ---- events ------------------------------------------------------------------------------------

    def event(self, entry: Entry, e: ev.Event) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventID": f"ni:///sha-256;{entry.hash.hex()}",
            "eventTime": ev.format_time(e.time),
            "eventTimeZoneOffset": "+00:00",
            "recordTime": ev.format_time(entry.received),
        }
        out.update(self.body(entry, e))
        out = {k: v for k, v in out.items() if v is not None}
        out.update({
            "athar:index": entry.index,
            "athar:entryHash": entry.hash.hex(),
            "athar:eventType": e.type,
            "athar:eventId": e.id,
        })
        return out

    def body(self, entry: Entry, e: ev.Event) -> dict[str, Any]:
        where = self.location(e.actor)
        if isinstance(e, ev.Commission):
            return {"action": "ADD", "bizStep": "commissioning", "disposition": "active",
                    "epcList": [pack_uri(e.gtin, s) for s in e.serials], "readPoint": where, "bizLocation": where,
                    "ilmd": {"cbvmda:lotNumber": e.lot, "cbvmda:itemExpirationDate": e.expiry.isoformat(),
                             "athar:product": e.product},
                    "athar:channel": e.channel.value}
        if isinstance(e, ev.Ship):
            return {"action": "OBSERVE", "bizStep": "shipping", "disposition": "in_transit", **_goods(e),
                    "readPoint": where, **self.transfer(e.actor, e.to), "athar:channel": e.channel.value,
                    "athar:shipment": e.id}
        if isinstance(e, ev.Return):
            return {"action": "OBSERVE", "bizStep": "shipping", "disposition": "returned", **_goods(e),
                    "readPoint": where, **self.transfer(e.actor, e.to), "athar:shipment": e.id,
                    "athar:reason": e.reason}
        if isinstance(e, ev.Receive | ev.Refuse):
            shipment = self.shipment(entry, e.shipment)
            refused = isinstance(e, ev.Refuse)
            out = {"action": "OBSERVE", "bizStep": "receiving", "disposition": "returned" if refused else "in_progress",
                   **_goods(shipment), "readPoint": where, "bizLocation": None if refused else where,
                   **self.transfer(shipment.actor, shipment.to), "athar:shipment": e.shipment}
            if isinstance(shipment, ev.Ship):
                out["athar:channel"] = shipment.channel.value
            if isinstance(e, ev.Refuse):
                out["athar:reason"] = e.reason
            return out
        if isinstance(e, ev.Dispense):
            return {"action": "OBSERVE", "bizStep": "dispensing", "disposition": "dispensed",
                    "epcList": [pack_uri(e.gtin, e.serial)], "readPoint": where}
        if isinstance(e, ev.UndoDispense):
            return {"action": "OBSERVE", "bizStep": "stocking", "disposition": "sellable_accessible",
                    "epcList": [pack_uri(e.gtin, e.serial)], "readPoint": where, "bizLocation": where,
                    "athar:reason": e.reason}
        if isinstance(e, ev.Destroy):
            return {"action": "DELETE", "bizStep": "destroying", "disposition": "destroyed", **_goods(e),
                    "readPoint": where, "athar:reason": e.reason}
        if isinstance(e, ev.Recall | ev.Quarantine | ev.Release):
            disposition = {ev.Recall.TYPE: "recalled", ev.Quarantine.TYPE: "non_sellable_other",
                           ev.Release.TYPE: "available"}[e.type]
            return {"action": "OBSERVE", "bizStep": "holding", "disposition": disposition,
                    "quantityList": [{"epcClass": batch_uri(e.gtin, e.lot)}], "athar:reason": e.reason}
        if isinstance(e, ev.Report):
            if e.serial is not None:
                goods: dict[str, Any] = {"epcList": [pack_uri(e.gtin, e.serial)]}
            else:
                cls = batch_uri(e.gtin, e.lot) if e.lot is not None else product_uri(e.gtin)
                goods = {"quantityList": [{"epcClass": cls}]}
            return {"action": "OBSERVE", "bizStep": "inspecting", **goods, "readPoint": where,
                    "athar:reportCategory": e.category, "athar:region": e.region}
        raise AssertionError(f"no EPCIS mapping for {e.type!r}")  # pragma: no cover


def _goods(e: ev.Movement) -> dict[str, Any]:
    """Packs moved by serial (``epcList``), or a quantity of the batch class (``quantityList``, unit: packs)."""
    if e.serials is not None:
        return {"epcList": [pack_uri(e.gtin, s) for s in e.serials]}
    return {"quantityList": [{"epcClass": batch_uri(e.gtin, e.lot), "quantity": e.quantity}]}
