"""Lots and serials hold any character of GS1 set 82, '/' and '%' included: every read that names one in its path
finds it when the client percent-encodes it, and a signed read verifies whatever the path holds."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import pytest

from api.path_segments import SLASH
from scanner_cli.client import AtharClient, Identity
from tests.integration.api.conftest import Live
from tests.support import GTIN

EXPIRY = dt.date(2028, 6, 30)


def seg(value: str) -> str:
    return quote(value, safe="")


def test_a_slash_inside_a_lot_or_a_serial(live: Live) -> None:
    w = live.world
    lot, serials = "A/B", ["S/1", "S2", "S//3"]
    w.ledger.submit(w.as_("maphar").commission(GTIN, lot, EXPIRY, "Amoxicilline 500 mg", serials))
    w.deliver("maphar", "ph-rabat", lot, serials[:1])
    w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, "S/1"))
    for serial, verdict in (("S/1", "ALREADY_DISPENSED"), ("S//3", "AUTHENTIC")):
        r = live.http.get(f"/v1/packs/{GTIN}/{seg(serial)}", params={"lot": lot})
        assert r.status_code == 200, r.text
        assert (r.json()["serial"], r.json()["lot"], r.json()["verdict"]) == (serial, lot, verdict)
        r = live.http.get(f"/v1/packs/{GTIN}/{seg(serial)}/bundle")
        assert r.status_code == 200 and r.json()["statement"]["pack"]["serial"] == serial, r.text
        r = live.http.get(f"/01/{GTIN}/10/{seg(lot)}/21/{seg(serial)}", headers={"accept": "application/json"})
        assert r.status_code == 200 and r.json()["verdict"] == verdict, r.text
    with AtharClient(live.base, Identity("maphar", w.keys["maphar"])) as api:
        assert api.batch(GTIN, lot)["lot"] == lot
        assert len(api.history(GTIN, lot)["entries"]) == 4
        assert api.epcis(GTIN, lot)["type"] == "EPCISDocument"
    # the same request with the slash between segments names no pack: it is not read as the slash inside one
    assert live.http.get(f"/v1/packs/{GTIN}/S/1").status_code == 404


def test_the_placeholder_character_is_not_a_slash(live: Live) -> None:
    w = live.world
    w.ledger.submit(w.as_("maphar").commission(GTIN, "PH1", EXPIRY, "Amoxicilline 500 mg", ["P/1"]))
    for path in (f"/v1/packs/{GTIN}/{seg('P' + SLASH + '1')}", f"/v1/packs/{GTIN}/{seg('P' + SLASH + '1/')}"):
        r = live.http.get(path)
        assert r.status_code == 422 and r.json()["code"] == "invalid_identifier", r.text
    r = live.http.get(f"/v1/packs/{GTIN}/{seg('P/1%')}")  # '%' is set 82 too; the problem names the path as sent
    assert r.status_code == 200 and r.json()["verdict"] == "UNKNOWN", r.text
    r = live.http.get(f"/v1/packs/{GTIN}/{seg('P/' + chr(0))}")
    assert r.status_code == 422 and r.json()["instance"] == f"/v1/packs/{GTIN}/P%2F\x00", r.text


@pytest.mark.parametrize("lot", ["A&B=C", "A%B", 'A"B', "A'B<>", "A?B", "A+B", "A%2FB", "A;B,C:D"])
def test_signed_reads_of_lots_that_need_percent_encoding(live: Live, lot: str) -> None:
    w = live.world
    w.ledger.submit(w.as_("maphar").commission(GTIN, lot, EXPIRY, "Amoxicilline 500 mg", [f"Q{len(lot)}"]))
    with AtharClient(live.base, Identity("maphar", w.keys["maphar"])) as api:
        assert api.batch(GTIN, lot)["lot"] == lot
        assert api.history(GTIN, lot)["entries"][0]["entry"]["event"]["lot"] == lot
