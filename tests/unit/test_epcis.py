"""ledger.epcis: ledger entries -> GS1 EPCIS 2.0 JSON-LD, checked against the official schema and CBV 2.0."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString, GS1ElementStrings

from ledger import epcis
from ledger.entry import Entry, SignedEvent
from ledger.errors import UnknownShipment
from ledger.events import format_time, parse_event
from ledger.identifiers import Role, batch_chain
from ledger.state import Actor
from signing import KeyPair
from tests.reference import reference_files, reference_path

GTIN = "09504000059101"
LOT = "L2026/A"
SERIALS = ["S1", "S2", "S3", "S4", "X/1%2", "S6"]
T0 = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
CREATED = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


def _gln(base12: str) -> str:
    """A GLN with a valid GS1 mod-10 check digit."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(base12)))
    return base12 + str((10 - total % 10) % 10)


GLN_MAKER = _gln("611123400001")
GLN_DIST = _gln("611123400002")
GLN_PHARM = _gln("611123400003")


def _actor(actor_id: str, role: Role, gln: str | None, index: int) -> Actor:
    return Actor(actor_id, actor_id.title(), role, "Rabat-Sale-Kenitra", "Rabat", gln, "active", index)


ACTORS = {
    "maker": _actor("maker", Role.MANUFACTURER, GLN_MAKER, 0),
    "dist": _actor("dist", Role.DISTRIBUTOR, GLN_DIST, 1),
    "pharm": _actor("pharm", Role.PHARMACY, GLN_PHARM, 2),
    "reg": _actor("reg", Role.REGULATOR, None, 3),
}


class Log:
    """Builds signed entries in memory, with per-chain ``prev`` links, as the sequencer would."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyPair] = {}
        self.entries: list[Entry] = []
        self.heads: dict[str, bytes] = {}

    def add(self, type_: str, actor: str, chain: str = batch_chain(GTIN, LOT), **fields: Any) -> Entry:
        n = len(self.entries)
        body = {"v": 1, "type": type_, "id": f"ev-{n}", "actor": actor,
                "time": format_time(T0 + dt.timedelta(hours=n)), **fields}
        parse_event(body)  # the body must be one the ledger accepts
        key = self.keys.setdefault(actor, KeyPair.generate())
        entry = Entry(n, T0 + dt.timedelta(hours=n, seconds=3), chain, self.heads.get(chain),
                      SignedEvent.create(body, key))
        self.heads[chain] = entry.hash
        self.entries.append(entry)
        return entry


def _register(log: Log, subject: str, role: str, gln: str | None) -> None:
    fields: dict[str, Any] = {"subject": subject, "name": subject.title(), "role": role, "region": "Rabat-Sale-Kenitra",
                              "public_key": "AAAA"}
    if gln:
        fields["gln"] = gln
    log.add("actor_register", "root", f"actor/{subject}", **fields)


def lifecycle() -> Log:
    """A full batch life: commission, ship (serials and quantity), receive, refuse, dispense, undo, return,
    destroy, quarantine, release, recall, reports, plus the master-data and alert entries the export skips."""
    log = Log()
    _register(log, "maker", "manufacturer", GLN_MAKER)  # 0
    _register(log, "dist", "distributor", GLN_DIST)  # 1
    _register(log, "pharm", "pharmacy", GLN_PHARM)  # 2
    _register(log, "reg", "regulator", None)  # 3
    log.add("key_rotate", "root", "actor/pharm", subject="pharm", public_key="BBBB")  # 4
    b = {"gtin": GTIN, "lot": LOT}
    log.add("commission", "maker", **b, expiry="2028-06-30", product="Amoxicilline 500 mg", quantity=len(SERIALS),
            serials=SERIALS, channel="public")  # 5
    log.add("ship", "maker", **b, to="dist", serials=SERIALS[:4], channel="public")  # 6
    log.add("receive", "dist", shipment="ev-6")  # 7
    log.add("ship", "maker", **b, to="dist", quantity=2, channel="public")  # 8
    log.add("refuse", "dist", shipment="ev-8", reason="not ordered")  # 9
    log.add("ship", "dist", **b, to="pharm", serials=SERIALS[:3], channel="public")  # 10
    log.add("receive", "pharm", shipment="ev-10")  # 11
    log.add("dispense", "pharm", gtin=GTIN, serial="S1", lot=LOT, expiry="2028-06-30")  # 12
    log.add("undo_dispense", "pharm", gtin=GTIN, serial="S1", reason="scanned the wrong pack")  # 13
    log.add("dispense", "pharm", gtin=GTIN, serial="S2")  # 14
    log.add("return", "pharm", **b, to="dist", serials=["S3"], reason="damaged box")  # 15
    log.add("receive", "dist", shipment="ev-15")  # 16
    log.add("destroy", "dist", **b, serials=["S3"], reason="damaged")  # 17
    log.add("destroy", "maker", **b, quantity=2, reason="expired samples")  # 18
    log.add("quarantine", "reg", **b, reason="under investigation")  # 19
    log.add("release", "reg", **b, reason="investigation closed")  # 20
    log.add("recall", "reg", **b, reason="contamination")  # 21
    log.add("report", "pharm", gtin=GTIN, serial="S2", lot=LOT, category="suspected_falsified",
            region="Rabat-Sale-Kenitra")  # 22
    log.add("report", "ledger", "reports", gtin=GTIN, category="quality_defect")  # 23
    log.add("alert", "ledger", **b, kind="duplicate_dispense", message="S2 dispensed twice", serial="S2",
            suspect="pharm", evidence={"event": {}, "key_id": "k", "signature": ""})  # 24
    log.add("key_revoke", "root", "actor/pharm", subject="pharm", key_id="ed25519:00", reason="lost")  # 25
    return log


SKIPPED = {0, 1, 2, 3, 4, 24, 25}


@pytest.fixture(scope="module")
def log() -> Log:
    return lifecycle()


@pytest.fixture(scope="module")
def doc(log: Log) -> dict[str, Any]:
    return epcis.to_epcis_document(log.entries, ACTORS, created=CREATED, sender="urn:athar:ledger")


def events_by_index(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {e["athar:index"]: e for e in doc["epcisBody"]["eventList"]}


# ---- validators ------------------------------------------------------------------------------------

# jsonschema enforces "uri" and "date-time" only when optional packages (rfc3987, rfc3339-validator) are
# installed; without them the schema's rule that extension keys be namespaced (format: uri) is not
# checked. So the strict checker adds RFC 3986 / RFC 3339 checks of its own.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or _URI.fullmatch(value) is not None


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.fullmatch(value):
        return False
    try:
        dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # 2026-02-30 and the like
        return False
    return True


def _strict_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    checker.checks("uri")(_is_uri)
    checker.checks("date-time")(_is_date_time)
    return checker


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(reference_path("epcis", "schema", "EPCIS-JSON-Schema.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def cbv() -> dict[str, set[str]]:
    vocab = json.loads(reference_path("epcis", "cbv-vocab.json").read_text())
    return {k: {t["term"] for t in vocab[k]} for k in ("bizStep", "disposition", "sourceDestType")}


def _validator(schema: dict[str, Any], checker: jsonschema.FormatChecker) -> jsonschema.Draft7Validator:
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=checker)


def _errors(validator: jsonschema.Draft7Validator, doc: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


EXAMPLES = reference_files("epcis", "examples", pattern="*.jsonld")


# ---- the official schema ---------------------------------------------------------------------------


def test_ten_official_examples_are_present() -> None:
    reference_path("epcis", "examples")
    assert len(EXAMPLES) == 10


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_official_example_validates(schema: dict[str, Any], example: Path) -> None:
    doc = json.loads(example.read_text())
    assert _errors(_validator(schema, jsonschema.FormatChecker()), doc) == []
    assert _errors(_validator(schema, _strict_checker()), doc) == []


def test_lifecycle_document_validates(schema: dict[str, Any], doc: dict[str, Any]) -> None:
    assert _errors(_validator(schema, jsonschema.FormatChecker()), doc) == []


def test_lifecycle_document_validates_with_strict_formats(schema: dict[str, Any], doc: dict[str, Any]) -> None:
    assert _errors(_validator(schema, _strict_checker()), doc) == []


def test_lifecycle_document_validates_with_jsonschema_rs_formats(schema: dict[str, Any], doc: dict[str, Any]) -> None:
    rs = pytest.importorskip("jsonschema_rs")
    validator = rs.Draft7Validator(schema, validate_formats=True)
    assert [str(e) for e in validator.iter_errors(doc)] == []
    bad = json.loads(json.dumps(doc))
    bad["epcisBody"]["eventList"][0]["channel"] = "public"
    assert not validator.is_valid(bad)


def test_strict_checker_rejects_unnamespaced_extension(schema: dict[str, Any], doc: dict[str, Any]) -> None:
    """The set-up can fail: a bare extension key, or a bad time, is refused by the same validator."""
    validator = _validator(schema, _strict_checker())
    bad = json.loads(json.dumps(doc))
    bad["epcisBody"]["eventList"][0]["channel"] = "public"
    assert _errors(validator, bad)
    bad = json.loads(json.dumps(doc))
    bad["epcisBody"]["eventList"][0]["eventTime"] = "2026-02-30T10:00:00Z"
    assert _errors(validator, bad)


def test_openepcis_valid_document_validates(schema: dict[str, Any]) -> None:
    path = reference_path("epcis", "supplementary", "openepcis-valid", "ObjectEvent_with_userExtensions.json")
    assert _errors(_validator(schema, _strict_checker()), json.loads(path.read_text())) == []


# ---- CBV vocabulary ----------------------------------------------------------------------------------


def _all_events(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from doc["epcisBody"]["eventList"]


def test_only_standard_cbv_terms(doc: dict[str, Any], cbv: dict[str, set[str]]) -> None:
    for event in _all_events(doc):
        assert event["bizStep"] in cbv["bizStep"], event
        if "disposition" in event:
            assert event["disposition"] in cbv["disposition"], event
        for src in event.get("sourceList", []):
            assert src["type"] in cbv["sourceDestType"]
        for dst in event.get("destinationList", []):
            assert dst["type"] in cbv["sourceDestType"]


def test_extension_keys_are_namespaced_and_declared(doc: dict[str, Any]) -> None:
    assert doc["@context"] == [epcis.EPCIS_CONTEXT, {"athar": epcis.ATHAR_NS}]
    standard = {"type", "eventID", "eventTime", "eventTimeZoneOffset", "recordTime", "action", "bizStep",
                "disposition", "epcList", "quantityList", "readPoint", "bizLocation", "sourceList",
                "destinationList", "ilmd"}
    for event in _all_events(doc):
        for key in set(event) - standard:
            assert key.startswith("athar:"), key
        for key in event.get("ilmd", {}):
            assert key.split(":")[0] in ("cbvmda", "athar"), key


# ---- mapping -------------------------------------------------------------------------------------------

MAPPING = {
    5: ("commission", "ADD", "commissioning", "active"),
    6: ("ship", "OBSERVE", "shipping", "in_transit"),
    7: ("receive", "OBSERVE", "receiving", "in_progress"),
    8: ("ship", "OBSERVE", "shipping", "in_transit"),
    9: ("refuse", "OBSERVE", "receiving", "returned"),
    12: ("dispense", "OBSERVE", "dispensing", "dispensed"),
    13: ("undo_dispense", "OBSERVE", "stocking", "sellable_accessible"),
    15: ("return", "OBSERVE", "shipping", "returned"),
    17: ("destroy", "DELETE", "destroying", "destroyed"),
    19: ("quarantine", "OBSERVE", "holding", "non_sellable_other"),
    20: ("release", "OBSERVE", "holding", "available"),
    21: ("recall", "OBSERVE", "holding", "recalled"),
    22: ("report", "OBSERVE", "inspecting", None),
}


@pytest.mark.parametrize("index", sorted(MAPPING))
def test_mapping_table(doc: dict[str, Any], index: int) -> None:
    type_, action, biz_step, disposition = MAPPING[index]
    event = events_by_index(doc)[index]
    assert event["type"] == "ObjectEvent"
    assert event["athar:eventType"] == type_
    assert (event["action"], event["bizStep"], event.get("disposition")) == (action, biz_step, disposition)


def test_one_event_per_entry_in_order_skipping_master_data_and_alerts(log: Log, doc: dict[str, Any]) -> None:
    indexes = [e["athar:index"] for e in _all_events(doc)]
    assert indexes == [e.index for e in log.entries if e.index not in SKIPPED]
    types = {e["athar:eventType"] for e in _all_events(doc)}
    assert not types & {"actor_register", "key_rotate", "key_revoke", "alert"}


def test_document_header(doc: dict[str, Any]) -> None:
    assert doc["type"] == "EPCISDocument"
    assert doc["schemaVersion"] == "2.0"
    assert doc["creationDate"] == "2026-12-01T09:30:00.000000Z"
    assert doc["sender"] == "urn:athar:ledger"
    assert "sender" not in epcis.to_epcis_document([], ACTORS, created=CREATED)


def test_naive_creation_date_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        epcis.to_epcis_document([], ACTORS, created=dt.datetime(2026, 1, 1))


def test_every_event_links_back_to_its_entry(log: Log, doc: dict[str, Any]) -> None:
    by_index = {e.index: e for e in log.entries}
    ids = [e["eventID"] for e in _all_events(doc)]
    assert len(set(ids)) == len(ids)
    for event in _all_events(doc):
        entry = by_index[event["athar:index"]]
        assert event["athar:entryHash"] == entry.hash.hex()
        assert event["eventID"] == f"ni:///sha-256;{entry.hash.hex()}"
        assert event["athar:eventId"] == entry.signed.body["id"]
        assert event["eventTime"] == format_time(parse_event(entry.signed.body).time)
        assert event["recordTime"] == format_time(entry.received)
        assert event["eventTimeZoneOffset"] == "+00:00"


def test_commission(doc: dict[str, Any]) -> None:
    event = events_by_index(doc)[5]
    assert event["epcList"] == [f"https://id.gs1.org/01/{GTIN}/21/{s}" for s in SERIALS[:4]] + [
        f"https://id.gs1.org/01/{GTIN}/21/X%2F1%252", f"https://id.gs1.org/01/{GTIN}/21/S6"]
    assert event["ilmd"] == {"cbvmda:lotNumber": LOT, "cbvmda:itemExpirationDate": "2028-06-30",
                             "athar:product": "Amoxicilline 500 mg"}
    assert event["readPoint"] == event["bizLocation"] == {"id": f"https://id.gs1.org/414/{GLN_MAKER}"}
    assert event["athar:channel"] == "public"


def test_ship_by_serials_names_owning_parties(doc: dict[str, Any]) -> None:
    event = events_by_index(doc)[6]
    assert event["epcList"] == [f"https://id.gs1.org/01/{GTIN}/21/{s}" for s in SERIALS[:4]]
    assert "quantityList" not in event
    assert event["sourceList"] == [{"type": "owning_party", "source": f"https://id.gs1.org/417/{GLN_MAKER}"}]
    assert event["destinationList"] == [{"type": "owning_party",
                                         "destination": f"https://id.gs1.org/417/{GLN_DIST}"}]
    assert event["readPoint"] == {"id": f"https://id.gs1.org/414/{GLN_MAKER}"}
    assert "bizLocation" not in event
    assert (event["athar:channel"], event["athar:shipment"]) == ("public", "ev-6")


def test_ship_by_quantity_uses_the_batch_class(doc: dict[str, Any]) -> None:
    event = events_by_index(doc)[8]
    assert event["quantityList"] == [{"epcClass": f"https://id.gs1.org/01/{GTIN}/10/L2026%2FA", "quantity": 2}]
    assert "epcList" not in event


def test_receive_takes_goods_and_parties_from_its_shipment(doc: dict[str, Any]) -> None:
    events = events_by_index(doc)
    receive, ship = events[7], events[6]
    for field in ("epcList", "sourceList", "destinationList", "athar:channel", "athar:shipment"):
        assert receive[field] == ship[field], field
    assert receive["readPoint"] == receive["bizLocation"] == {"id": f"https://id.gs1.org/414/{GLN_DIST}"}
    returned = events[16]  # receipt of a return: upstream, from the pharmacy to the distributor
    assert returned["epcList"] == [f"https://id.gs1.org/01/{GTIN}/21/S3"]
    assert returned["sourceList"][0]["source"] == f"https://id.gs1.org/417/{GLN_PHARM}"
    assert "athar:channel" not in returned


def test_refuse(doc: dict[str, Any]) -> None:
    refuse = events_by_index(doc)[9]
    assert refuse["quantityList"] == events_by_index(doc)[8]["quantityList"]
    assert refuse["readPoint"] == {"id": f"https://id.gs1.org/414/{GLN_DIST}"}
    assert "bizLocation" not in refuse
    assert refuse["athar:reason"] == "not ordered"


def test_receive_uses_shipments_mapping_when_ship_is_not_exported(log: Log, schema: dict[str, Any]) -> None:
    ship, receive = log.entries[10], log.entries[11]
    doc = epcis.to_epcis_document([receive], ACTORS, created=CREATED, shipments={"ev-10": ship})
    (event,) = doc["epcisBody"]["eventList"]
    assert event["epcList"] == [f"https://id.gs1.org/01/{GTIN}/21/{s}" for s in SERIALS[:3]]
    assert event["athar:index"] == 11
    assert _errors(_validator(schema, _strict_checker()), doc) == []


def test_receive_of_unknown_shipment_is_refused(log: Log) -> None:
    with pytest.raises(UnknownShipment, match="ev-10"):
        epcis.to_epcis_document([log.entries[11]], ACTORS, created=CREATED)


def test_dispense_undo_destroy(doc: dict[str, Any]) -> None:
    events = events_by_index(doc)
    pharmacy = {"id": f"https://id.gs1.org/414/{GLN_PHARM}"}
    s1 = [f"https://id.gs1.org/01/{GTIN}/21/S1"]
    assert (events[12]["epcList"], events[12]["readPoint"]) == (s1, pharmacy)
    assert (events[13]["epcList"], events[13]["bizLocation"]) == (s1, pharmacy)
    assert events[17]["epcList"] == [f"https://id.gs1.org/01/{GTIN}/21/S3"]
    assert events[18]["quantityList"] == [{"epcClass": f"https://id.gs1.org/01/{GTIN}/10/L2026%2FA", "quantity": 2}]
    assert events[18]["athar:reason"] == "expired samples"


def test_regulatory_events_name_the_whole_lot(doc: dict[str, Any]) -> None:
    for index in (19, 20, 21):
        event = events_by_index(doc)[index]
        assert event["quantityList"] == [{"epcClass": f"https://id.gs1.org/01/{GTIN}/10/L2026%2FA"}]
        assert "readPoint" not in event and "epcList" not in event


def test_reports(doc: dict[str, Any]) -> None:
    events = events_by_index(doc)
    assert events[22]["epcList"] == [f"https://id.gs1.org/01/{GTIN}/21/S2"]
    assert events[22]["athar:reportCategory"] == "suspected_falsified"
    assert events[22]["athar:region"] == "Rabat-Sale-Kenitra"
    anonymous = events[23]
    assert anonymous["quantityList"] == [{"epcClass": f"https://id.gs1.org/01/{GTIN}"}]
    assert "readPoint" not in anonymous and "athar:region" not in anonymous and "disposition" not in anonymous


def test_actor_without_gln_gets_an_athar_urn(log: Log) -> None:
    actors = {k: v for k, v in ACTORS.items() if k != "dist"}
    doc = epcis.to_epcis_document(log.entries[5:8], actors, created=CREATED)
    ship, receive = doc["epcisBody"]["eventList"][1:]
    assert ship["destinationList"] == [{"type": "owning_party", "destination": "urn:athar:actor:dist"}]
    assert "readPoint" not in receive and "bizLocation" not in receive


@pytest.mark.parametrize("serial", ["S1", "X/1%2", "a?b=c", "(x)&'+,:;=<>\"!*"])
def test_pack_uri_encodes_like_biip(serial: str) -> None:
    elements = GS1ElementStrings([GS1ElementString.extract("01" + GTIN), GS1ElementString.extract("21" + serial)])
    assert epcis.pack_uri(GTIN, serial) == GS1DigitalLinkURI.from_element_strings(elements).as_uri(
        domain="id.gs1.org")



def test_a_regulators_alert_update_in_a_batch_chain_is_skipped(log: Log, doc: dict[str, Any]) -> None:
    """A regulator handling an alert about a batch writes an alert_update; the batch's export failed on it (500)."""
    log.add("alert_update", "regulator", alert="alert:over_shipment:x", status="investigating")
    after = epcis.to_epcis_document(log.entries, ACTORS, created=CREATED, sender="urn:athar:ledger")
    assert after["epcisBody"]["eventList"] == doc["epcisBody"]["eventList"]
