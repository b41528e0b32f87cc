"""ledger.events.parse_event: every event type accepted in its valid form, and each malformation refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ledger import events as ev
from ledger.errors import InvalidEvent, InvalidIdentifier
from ledger.identifiers import Channel, Role
from signing import KeyPair

GTIN = "06111234567895"
PUBLIC_KEY = KeyPair.from_seed(bytes(range(32))).public.b64
T = "2026-11-22T10:15:00Z"


def body(type_: str, actor: str = "maphar", **fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": type_, "id": f"{type_}-1", "actor": actor, "time": T, **fields}


VALID: dict[str, dict[str, Any]] = {
    "commission": body("commission", gtin=GTIN, lot="L001", expiry="2028-06-30", product="Amoxicilline 500 mg",
                       quantity=2, serials=["S1", "S2"], channel="public"),
    "ship": body("ship", gtin=GTIN, lot="L001", to="dist-north", serials=["S1"], channel="private"),
    "return": body("return", actor="ph-rabat", gtin=GTIN, lot="L001", to="dist-north", quantity=3,
                   reason="recall"),
    "destroy": body("destroy", actor="dist-north", gtin=GTIN, lot="L001", quantity=1, reason="damaged"),
    "receive": body("receive", actor="dist-north", shipment="ship-1"),
    "refuse": body("refuse", actor="dist-north", shipment="ship-1", reason="broken seal"),
    "dispense": body("dispense", actor="ph-rabat", gtin=GTIN, serial="S1", lot="L001", expiry="280630"),
    "undo_dispense": body("undo_dispense", actor="ph-rabat", gtin=GTIN, serial="S1", reason="wrong patient"),
    "recall": body("recall", gtin=GTIN, lot="L001", reason="contamination"),
    "quarantine": body("quarantine", actor="regulator", gtin=GTIN, lot="L001", reason="investigation"),
    "release": body("release", actor="regulator", gtin=GTIN, lot="L001", reason="cleared"),
    "report": body("report", actor="ledger", gtin=GTIN, serial="S1", category="suspected_falsified",
                   details_hash="ab" * 32, region="Oriental"),
    "actor_register": body("actor_register", actor="root", subject="ph-tanger", name="Pharmacie du Détroit",
                           role="pharmacy", region="Tanger-Tétouan-Al Hoceïma", city="Tanger", gln="6111234000019",
                           public_key=PUBLIC_KEY),
    "key_rotate": body("key_rotate", actor="root", subject="ph-rabat", public_key=PUBLIC_KEY),
    "key_revoke": body("key_revoke", actor="root", subject="ph-rabat", key_id="ed25519:" + "00" * 16,
                       reason="lost"),
    "alert": body("alert", actor="ledger", kind="duplicate_dispense", message="clone", gtin=GTIN, lot="L001",
                  serial="S1", suspect="ph-fes", evidence={"event": {}, "key_id": "k", "signature": "AA=="}),
    "alert_update": body("alert_update", actor="regulator", alert="alert:" + "ab" * 20, status="closed",
                         outcome="confirmed", finding="clone seized"),
}


def with_(kind: str, **changes: Any) -> dict[str, Any]:
    b = dict(VALID[kind])
    for k, v in changes.items():
        if v is ...:
            b.pop(k, None)
        else:
            b[k] = v
    return b


def refused(b: Any, match: str | None = None) -> InvalidEvent:
    with pytest.raises(InvalidEvent, match=match) as info:
        ev.parse_event(b)
    return info.value


def test_every_event_type_has_a_valid_example() -> None:
    assert set(VALID) == set(ev.EVENT_TYPES)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_each_event_type_parses(kind: str) -> None:
    event = ev.parse_event(VALID[kind])
    assert type(event) is ev.EVENT_TYPES[kind]
    assert event.type == kind
    assert event.id == f"{kind}-1"
    assert event.time == dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.UTC)


def test_parsed_fields() -> None:
    c = ev.parse_event(VALID["commission"])
    assert isinstance(c, ev.Commission)
    assert (c.gtin, c.lot, c.expiry, c.serials, c.channel) == (GTIN, "L001", dt.date(2028, 6, 30), ("S1", "S2"),
                                                              Channel.PUBLIC)
    s = ev.parse_event(VALID["ship"])
    assert isinstance(s, ev.Ship) and s.quantity == 1 and s.by_serial and s.to == "dist-north"
    r = ev.parse_event(VALID["return"])
    assert isinstance(r, ev.Return) and r.serials is None and r.quantity == 3 and not r.by_serial
    d = ev.parse_event(VALID["dispense"])
    assert isinstance(d, ev.Dispense) and d.expiry == dt.date(2028, 6, 30)  # GS1 YYMMDD accepted
    a = ev.parse_event(VALID["actor_register"])
    assert isinstance(a, ev.ActorRegister) and a.role is Role.PHARMACY and a.gln == "6111234000019"


def test_short_gtins_are_normalised_to_gtin14() -> None:
    d = ev.parse_event(with_("dispense", gtin="6111234567895"))
    assert isinstance(d, ev.Dispense) and d.gtin == GTIN


def test_optional_fields_may_be_absent() -> None:
    d = ev.parse_event(with_("dispense", lot=..., expiry=...))
    assert isinstance(d, ev.Dispense) and d.lot is None and d.expiry is None
    r = ev.parse_event(with_("report", serial=..., details_hash=..., region=...))
    assert isinstance(r, ev.Report) and r.serial is None and r.details_hash is None


def test_time_with_fraction_of_second() -> None:
    e = ev.parse_event(with_("recall", time="2026-11-22T10:15:00.123456Z"))
    assert e.time.microsecond == 123456
    assert ev.format_time(e.time) == "2026-11-22T10:15:00.123456Z"
    assert ev.parse_time(ev.format_time(e.time)) == e.time


# ---- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, [], "event", 1, ["v", 1]])
def test_not_an_object(value: Any) -> None:
    refused(value)


@pytest.mark.parametrize("kind", [None, "", "transfer", "COMMISSION", 1, ["ship"]])
def test_unknown_type(kind: Any) -> None:
    refused(with_("recall", type=kind), "unknown event type")


@pytest.mark.parametrize("kind", sorted(VALID))
def test_unknown_field_is_refused_for_every_type(kind: str) -> None:
    refused(with_(kind, price=12), "unknown field")


def test_field_of_another_type_is_refused() -> None:
    refused(with_("receive", gtin=GTIN), "unknown field")
    refused(with_("dispense", quantity=1), "unknown field")


@pytest.mark.parametrize("version", [..., 0, 2, "1", 1.5, None, False])
def test_wrong_version(version: Any) -> None:
    refused(with_("recall", v=version), "'v'")


def test_boolean_version_is_refused() -> None:
    refused(with_("recall", v=True), "'v'")


@pytest.mark.parametrize("field", ["id", "actor", "time"])
def test_base_fields_are_required(field: str) -> None:
    refused(with_("recall", **{field: ...}))


@pytest.mark.parametrize("actor", ["Maphar", "ab", "a b", "-maphar", "x" * 65, 7])
def test_bad_actor_id(actor: Any) -> None:
    refused(with_("recall", actor=actor))


@pytest.mark.parametrize("event_id", ["", " id", "id with space", "-lead", "x" * 129, "é"])
def test_bad_event_id(event_id: str) -> None:
    refused(with_("recall", id=event_id))


@pytest.mark.parametrize("gtin", ["06111234567896", "6111234567896", "0611123456789", "061112345678950", "abc",
                                  "", "06111234567895 ", 6111234567895])
def test_bad_gtin_or_check_digit(gtin: Any) -> None:
    for kind in ("commission", "ship", "dispense", "recall", "report"):
        refused(with_(kind, gtin=gtin))


def test_bad_gtin_is_an_invalid_identifier() -> None:
    assert isinstance(refused(with_("dispense", gtin="06111234567896")), InvalidIdentifier)


@pytest.mark.parametrize("lot", ["L" * 21, "L 01", "L#01", "LOT\n", "", "é1"])
def test_bad_lot(lot: str) -> None:
    for kind in ("commission", "ship", "destroy", "recall", "dispense"):
        refused(with_(kind, lot=lot))


def test_lot_of_twenty_characters_is_accepted() -> None:
    assert isinstance(ev.parse_event(with_("recall", lot="A" * 20)), ev.Recall)
    assert isinstance(ev.parse_event(with_("recall", lot="A-1/2.x_(y)")), ev.Recall)


@pytest.mark.parametrize("serials", [["S" * 21], ["S 1"], [""], [], "S1", [1]])
def test_bad_serials(serials: Any) -> None:
    refused(with_("commission", serials=serials, quantity=max(1, len(serials) if isinstance(serials, list) else 1)))


@pytest.mark.parametrize("expiry", ["2028-02-30", "2028/06/30", "28-06-30", "281330", "2806300", "", "tomorrow",
                                    20280630])
def test_bad_expiry(expiry: Any) -> None:
    refused(with_("commission", expiry=expiry))
    refused(with_("dispense", expiry=expiry))


def test_gs1_expiry_day_00_means_end_of_month() -> None:
    c = ev.parse_event(with_("commission", expiry="280200"))
    assert isinstance(c, ev.Commission) and c.expiry == dt.date(2028, 2, 29)


@pytest.mark.parametrize("time", ["2026-11-22T10:15:00+00:00", "2026-11-22 10:15:00Z", "2026-11-22T10:15Z",
                                  "2026-11-22T10:15:00.1234567Z", "2026-02-30T10:15:00Z", "2026-11-22T25:00:00Z",
                                  "2026-11-22t10:15:00z", "2026-11-22", "", 1700000000, None])
def test_bad_time(time: Any) -> None:
    refused(with_("recall", time=time), "time")


def test_quantity_must_match_serials() -> None:
    refused(with_("ship", quantity=2), "does not match")
    refused(with_("commission", quantity=3), "must equal")
    refused(with_("commission", quantity=...))
    assert isinstance(ev.parse_event(with_("ship", quantity=1)), ev.Ship)


@pytest.mark.parametrize("quantity", [0, -1, True, 1.0, "1", ev.MAX_SERIALS + 1])
def test_bad_quantity(quantity: Any) -> None:
    refused(with_("return", quantity=quantity))


def test_movement_needs_serials_or_quantity() -> None:
    refused(with_("ship", serials=...), "either")
    refused(with_("destroy", quantity=...), "either")


def test_duplicate_serials_are_refused() -> None:
    refused(with_("commission", serials=["S1", "S1"], quantity=2), "more than once")
    refused(with_("ship", serials=["S1", "S2", "S1"]), "more than once")


@pytest.mark.parametrize("channel", ["tender", "Public", "", None, 1])
def test_bad_channel(channel: Any) -> None:
    refused(with_("commission", channel=channel))
    refused(with_("ship", channel=channel))


@pytest.mark.parametrize("role", ["wholesaler", "Pharmacy", "root", ""])
def test_bad_role(role: str) -> None:
    refused(with_("actor_register", role=role))


@pytest.mark.parametrize("gln", ["611123400001", "61112340000190", "611123400001x",
                                 "6111234000018",  # one digit off: the check digit catches it
                                 "6111234000091"])  # two digits swapped
def test_bad_gln(gln: str) -> None:
    refused(with_("actor_register", gln=gln), "GLN")


@pytest.mark.parametrize(("kind", "field", "value"), [
    ("actor_register", "name", "Pharmacie\x1b[31m Rouge"),  # a terminal would obey it
    ("actor_register", "name", "Pharmacie X\nstatus revoked"),  # a forged second line
    ("actor_register", "region", "   "),
    ("actor_register", "city", "Fès\u2028Rabat"),
    ("commission", "product", "Amoxicilline\r500 mg"),
    ("actor_register", "name", "Pharmacie \u202eRLO"),  # a bidi override reorders the line after it
    ("actor_register", "name", "A\u2067B"),
    ("actor_register", "name", "\u200b\u200b"),  # only invisible
    ("actor_register", "name", "\ufeff"),
    ("actor_register", "region", "\u3164"),  # a Hangul filler prints as blank
    ("actor_register", "city", "\u2800 "),
    ("actor_register", "name", "\u0301"),  # a combining mark alone
    ("actor_register", "name", "Ph\ue000"),  # private use
    ("actor_register", "name", "X\U000e0041"),  # a tag character
    ("actor_register", "name", "\u200c"),  # a joiner alone
])
def test_one_line_labels_refuse_control_characters_and_blanks(kind: str, field: str, value: str) -> None:
    refused(with_(kind, **{field: value}), "one line")


def test_one_line_labels_keep_any_script() -> None:
    body = with_("actor_register", name="صيدلية الأمل — Pharmacie Al Amal", region="Fès-Meknès", city="Fès")
    assert isinstance(ev.parse_event(body), ev.ActorRegister)
    body = with_("actor_register", name="داروخانه\u200cی مرکزی", region="Tadla", city="Béni Mellal")  # a ZWNJ in a word
    assert isinstance(ev.parse_event(body), ev.ActorRegister)


@pytest.mark.parametrize("category", ["fake", "Suspected_Falsified", "", None])
def test_bad_report_category(category: Any) -> None:
    refused(with_("report", category=category))


@pytest.mark.parametrize("details", ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, "ab" * 31 + "a "])
def test_details_hash_must_be_64_lowercase_hex(details: str) -> None:
    refused(with_("report", details_hash=details), "details_hash")


def test_text_fields_are_bounded() -> None:
    refused(with_("recall", reason="x" * (ev.MAX_TEXT + 1)))
    refused(with_("recall", reason=""))
    refused(with_("recall", reason=5))
    refused(with_("commission", product="p" * 201))


def test_alert_evidence_must_be_an_object() -> None:
    refused(with_("alert", evidence="signed"), "evidence")
    refused(with_("alert", evidence=...), "evidence")


@pytest.mark.parametrize(("status", "outcome"), [("open", None), ("closed", None), ("investigating", "confirmed"),
                                                 ("closed", "maybe"), ("", None)])
def test_bad_alert_update(status: str, outcome: str | None) -> None:
    refused(with_("alert_update", status=status, outcome=... if outcome is None else outcome))


def test_alert_update_investigating_needs_no_outcome() -> None:
    u = ev.parse_event(with_("alert_update", status="investigating", outcome=..., finding=...))
    assert isinstance(u, ev.AlertUpdate) and u.outcome is None


def test_required_specific_fields() -> None:
    for kind, field in [("ship", "to"), ("ship", "channel"), ("receive", "shipment"), ("refuse", "reason"),
                        ("dispense", "serial"), ("undo_dispense", "reason"), ("key_revoke", "key_id"),
                        ("actor_register", "public_key"), ("alert", "suspect"), ("commission", "product")]:
        refused(with_(kind, **{field: ...}))
