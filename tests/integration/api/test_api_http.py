"""The API through real HTTP (uvicorn on a real socket) on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time

import httpx
import nacl.signing
import pytest
import rfc8785

from ledger.request_signing import sign_request
from tests.integration.api.conftest import Live
from tests.support import GTIN

# ---- an independent RFC 9162 verifier: no athar code, only hashlib ---------------------------------------


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion_independently(leaf_hash: bytes, index: int, size: int, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2, step by step. Returns the root the proof leads to."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        assert sn != 0, "proof too long"
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    assert sn == 0, "proof too short"
    return r


def verify_consistency_independently(size1: int, size2: int, root1: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.4.2. Returns the second root the proof leads to (after checking the first)."""
    if size1 & (size1 - 1) == 0:
        proof = [root1, *proof]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        assert sn != 0
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    assert sn == 0 and fr == root1
    return sr


def check_note_signature(note: str, verifier_key: str) -> tuple[str, int, bytes]:
    """Parse a C2SP signed note and check its Ed25519 signature with PyNaCl directly."""
    name, key_hash_hex, key_b64 = verifier_key.strip().split("+", 2)
    raw_key = base64.b64decode(key_b64)
    assert raw_key[0] == 0x01
    text, _, sigs = note.partition("\n\n")
    text += "\n"
    assert hashlib.sha256(name.encode() + b"\n" + raw_key).digest()[:4].hex() == key_hash_hex
    for line in sigs.splitlines():
        dash, signer, b64 = line.split(" ")
        sig = base64.b64decode(b64)
        if dash == "\u2014" and signer == name and sig[:4].hex() == key_hash_hex:
            nacl.signing.VerifyKey(raw_key[1:]).verify(text.encode(), sig[4:])
            origin, size, root = text.splitlines()[:3]
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no signature by the ledger key")


def signed_get(live: Live, actor: str, path: str) -> httpx.Response:
    headers = sign_request(live.world.keys[actor], actor, "GET", path, int(time.time()))
    return live.http.get(path, headers=headers)


# ---- the lifecycle --------------------------------------------------------------------------------------------


def test_batch_lifecycle_over_http_with_independent_proof_checks(live: Live) -> None:
    w = live.world
    serials = [f"A{i:04d}" for i in range(6)]
    r = live.post_event(w.as_("maphar").commission(GTIN, "LOT-A", dt.date(2028, 5, 31), "Amoxicilline 1 g", serials))
    assert r.status_code == 201, r.text
    ship = w.as_("maphar").ship(GTIN, "LOT-A", "dist-north", serials=serials[:4])
    assert live.post_event(ship).status_code == 201
    assert live.post_event(w.as_("dist-north").receive(ship.event_id)).status_code == 201
    ship2 = w.as_("dist-north").ship(GTIN, "LOT-A", "ph-rabat", serials=serials[:2])
    assert live.post_event(ship2).status_code == 201
    assert live.post_event(w.as_("ph-rabat").receive(ship2.event_id)).status_code == 201
    receipt = live.post_event(w.as_("ph-rabat").dispense(GTIN, serials[0], lot="LOT-A")).json()

    vkey = live.http.get("/v1/log/public-key").text
    origin, size, root = check_note_signature(receipt["checkpoint"], vkey)
    assert origin == "athar.local/ledger"
    assert size == receipt["tree_size"] and root.hex() == receipt["root_hash"]
    leaf = bytes.fromhex(receipt["entry_hash"])
    path = [bytes.fromhex(h) for h in receipt["inclusion_proof"]]
    got = verify_inclusion_independently(leaf, receipt["index"], size, path)
    assert got == root

    # the served inclusion proof for an earlier entry against the latest checkpoint
    note = live.http.get("/v1/log/checkpoint").text
    _, size, root = check_note_signature(note, vkey)
    proof = live.http.get("/v1/log/proof/inclusion", params={"index": 3, "tree_size": size}).json()
    assert verify_inclusion_independently(bytes.fromhex(proof["leaf_hash"]), 3, size,
                                          [bytes.fromhex(h) for h in proof["hashes"]]) == root
    # the leaf hash is SHA-256(0x00 || canonical entry) of the entry the regulator reads
    entries = signed_get(live, "regulator", "/v1/log/entries?start=3&end=4").json()["entries"]
    assert hashlib.sha256(b"\x00" + rfc8785.dumps(entries[0]["entry"])).hexdigest() == proof["leaf_hash"]

    # consistency from an early checkpoint to the latest
    first = 5
    cons = live.http.get("/v1/log/proof/consistency", params={"first": first, "second": size}).json()
    assert verify_consistency_independently(first, size, bytes.fromhex(cons["first_root_hash"]),
                                            [bytes.fromhex(h) for h in cons["hashes"]]) == root

    batch = signed_get(live, "ph-rabat", f"/v1/batches/{GTIN}/LOT-A").json()
    assert batch["holdings"] == {"dist-north": 2, "maphar": 2, "ph-rabat": 1}
    assert batch["packs"]["dispensed"] == 1

    pack = live.http.get(f"/v1/packs/{GTIN}/{serials[0]}").json()
    assert pack["verdict"] == "ALREADY_DISPENSED"
    assert [s["type"] for s in pack["provenance"]] == ["commission", "ship", "ship", "dispense"]
    assert "quantity" not in json.dumps(pack)


def test_replay_returns_the_original_receipt(live: Live) -> None:
    signed = live.world.as_("maphar").commission(GTIN, "LOT-R", dt.date(2028, 1, 31), "X", ["R1", "R2"])
    first = live.post_event(signed)
    again = live.post_event(signed)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["replayed"] is True
    assert again.json()["index"] == first.json()["index"]
    assert again.json()["entry_hash"] == first.json()["entry_hash"]


# ---- refusals -------------------------------------------------------------------------------------------------


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    # RFC 9457: a type's title is the same at every occurrence, the one its description gives
    registered = httpx.get(f"{r.request.url.scheme}://{r.request.url.netloc.decode()}/problems/{code}").json()
    assert body["title"] == registered["title"], (body, registered)
    return body


def test_every_custody_refusal_is_a_problem_naming_the_rule(live: Live) -> None:
    w = live.world
    serials = w.commission("LOT-X", 4)
    w.deliver("maphar", "dist-north", "LOT-X", serials[:3])
    w.deliver("dist-north", "ph-rabat", "LOT-X", serials[:2])
    size_before = w.ledger.size()
    cases = [
        (w.as_("ph-rabat").commission(GTIN, "LOT-Y", dt.date(2028, 1, 1), "X", ["Z1"]), 403, "role_not_allowed"),
        (w.as_("maphar").commission(GTIN, "LOT-X", dt.date(2028, 1, 1), "X", ["Z2"]), 409, "duplicate_batch"),
        (w.as_("maphar").commission(GTIN, "LOT-Z", dt.date(2028, 1, 1), "X", [serials[0]]), 409, "duplicate_serial"),
        (w.as_("dist-north").ship(GTIN, "LOT-X", "ph-fes", quantity=50), 409, "over_shipment"),
        (w.as_("dist-north").ship(GTIN, "LOT-X", "ph-fes", serials=[serials[3]]), 409, "not_holder"),
        (w.as_("ph-fes").dispense(GTIN, serials[2]), 409, "not_in_custody"),
        (w.as_("ph-rabat").dispense(GTIN, "NOPE"), 404, "unknown_pack"),
        (w.as_("ph-rabat").dispense(GTIN, serials[0], lot="LOT-Q"), 409, "mismatch"),
        (w.as_("dist-north").receive("no-such-shipment"), 404, "unknown_shipment"),
        (w.as_("maphar").ship(GTIN, "LOT-X", "nobody-here", quantity=1), 422, "unknown_actor"),
    ]
    for signed, status, code in cases:
        _problem(live.post_event(signed), status, code)
    # refusals that signal risk left alerts; nothing else changed
    alerts = signed_get(live, "regulator", "/v1/alerts").json()
    assert {"over_shipment", "not_in_custody", "unknown_pack", "mismatch"} <= {a["kind"] for a in alerts}
    assert w.ledger.size() == size_before + len(alerts)

    assert live.post_event(w.as_("ph-rabat").dispense(GTIN, serials[0])).status_code == 201
    body = _problem(live.post_event(w.as_("ph-rabat").dispense(GTIN, serials[0])), 409, "already_dispensed_by_you")
    assert "double scan" in str(body["detail"])
    w.deliver("dist-north", "ph-fes", "LOT-X", [serials[2]])
    _problem(live.post_event(w.as_("ph-fes").dispense(GTIN, serials[0])), 409, "duplicate_dispense")
    assert live.post_event(w.as_("regulator").recall(GTIN, "LOT-X", "contamination")).status_code == 201
    _problem(live.post_event(w.as_("ph-fes").dispense(GTIN, serials[2])), 409, "batch_recalled")


def test_bad_input_is_a_4xx_problem_and_changes_nothing(live: Live) -> None:
    w = live.world
    size = w.ledger.size()
    good = w.as_("maphar").commission(GTIN, "LOT-B", dt.date(2028, 1, 31), "X", ["B1"]).to_json()
    bad_sig = dict(good, signature=base64.b64encode(b"\x00" * 64).decode())
    other_key = dict(good, key_id=w.keys["sothema"].key_id)
    wrong_type = json.loads(json.dumps(good))
    wrong_type["event"]["quantity"] = "one"
    bad_gtin = json.loads(json.dumps(good))
    bad_gtin["event"]["gtin"] = "06111234567890"
    cases = [
        (b"{not json", 422, "invalid_event"),
        (b'"a string"', 422, "invalid_event"),
        (json.dumps(bad_sig).encode(), 401, "signature_invalid"),
        (json.dumps(other_key).encode(), 401, "signer_mismatch"),
        (json.dumps(dict(good, key_id="ed25519:00")).encode(), 401, "unknown_key"),
        (json.dumps(wrong_type).encode(), 422, "invalid_event"),
        (json.dumps(bad_gtin).encode(), 422, "invalid_identifier"),
        (json.dumps({"event": good["event"]}).encode(), 422, "invalid_event"),
        (b"\xff\xfe", 422, "invalid_event"),
        (b"[" * 10000 + b"]" * 10000, 422, "invalid_event"),
    ]
    for raw, status, code in cases:
        _problem(live.http.post("/v1/events", content=raw, headers={"content-type": "application/json"}),
                 status, code)
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        for path in ("/v1/events", "/v1/events?via=router"):  # the fast path and the router's route
            _problem(live.http.post(path, content=json.dumps(good), headers={"content-type": media}), 415,
                     "unsupported_media_type")
    big = b'{"event": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    _problem(live.http.post("/v1/events", content=big), 413, "body_too_large")
    _problem(live.http.get("/v1/packs/123/ABC"), 422, "invalid_identifier")
    _problem(live.http.get("/v1/log/proof/inclusion", params={"index": 5, "tree_size": 2}), 422, "invalid_query")
    _problem(live.http.get("/v1/log/proof/inclusion", params={"index": "x", "tree_size": 2}), 422, "invalid_request")
    _problem(live.http.get("/v1/log/proof/inclusion", params={"index": 0, "tree_size": 10**9}), 404, "not_found")
    _problem(live.http.get("/v1/log/proof/consistency", params={"first": 1, "second": 10**9}), 404, "not_found")
    _problem(live.http.get("/v1/actors/nobody"), 404, "not_found")
    _problem(live.http.delete("/v1/events"), 405, "method_not_allowed")
    assert w.ledger.size() == size
    for media in ("application/json; charset=utf-8", "application/ld+json", None):  # undeclared: read as JSON
        r = live.http.post("/v1/events", content=json.dumps(good), headers={"content-type": media} if media else {})
        assert r.status_code in (200, 201), (media, r.text)
    assert w.ledger.size() == size + 1


# ---- access control ------------------------------------------------------------------------------------------


def test_reads_follow_roles(live: Live) -> None:
    w = live.world
    serials = w.commission("LOT-C", 3)
    w.deliver("maphar", "dist-north", "LOT-C", serials[:2])
    path = f"/v1/batches/{GTIN}/LOT-C/history"
    assert live.http.get(path).status_code == 401
    assert signed_get(live, "ph-fes", path).status_code == 403  # never handled the batch
    for who in ("maphar", "dist-north", "regulator", "inspector"):
        r = signed_get(live, who, path)
        assert r.status_code == 200, (who, r.text)
    assert signed_get(live, "ph-rabat", "/v1/log/entries?start=0&end=5").status_code == 403
    assert signed_get(live, "inspector", "/v1/log/entries?start=0&end=5").status_code == 200
    assert signed_get(live, "maphar", "/v1/alerts").status_code == 403
    # a signature for another path, an old timestamp, or another actor's key is refused
    headers = sign_request(w.keys["regulator"], "regulator", "GET", "/v1/alerts", int(time.time()))
    assert live.http.get("/v1/log/entries?start=0&end=1", headers=headers).status_code == 401
    stale = sign_request(w.keys["regulator"], "regulator", "GET", "/v1/alerts", int(time.time()) - 3600)
    assert live.http.get("/v1/alerts", headers=stale).status_code == 401
    forged = sign_request(w.keys["ph-rabat"], "regulator", "GET", "/v1/alerts", int(time.time()))
    assert live.http.get("/v1/alerts", headers=forged).status_code == 401


def test_pharmacy_scan_checks_custody(live: Live) -> None:
    w = live.world
    serials = w.commission("LOT-D", 2)
    w.deliver("maphar", "dist-north", "LOT-D", serials)
    w.deliver("dist-north", "ph-rabat", "LOT-D", serials[:1])
    assert signed_get(live, "ph-rabat", f"/v1/packs/{GTIN}/{serials[0]}").json()["verdict"] == "AUTHENTIC"
    assert signed_get(live, "ph-fes", f"/v1/packs/{GTIN}/{serials[0]}").json()["verdict"] == "NOT_IN_CUSTODY"
    assert live.http.get(f"/v1/packs/{GTIN}/{serials[0]}").json()["verdict"] == "AUTHENTIC"
    assert live.http.get(f"/v1/packs/{GTIN}/{serials[0]}", params={"expiry": "300101"}).json()["verdict"] == "MISMATCH"


def test_epcis_export_validates_against_the_official_schema(live: Live) -> None:
    import jsonschema

    from tests.reference import reference_path

    schema = json.loads(reference_path("epcis", "schema", "EPCIS-JSON-Schema.json").read_text())
    w = live.world
    serials = w.commission("LOT-E", 3)
    w.deliver("maphar", "dist-north", "LOT-E", serials)
    w.ledger.submit(w.as_("dist-north").ship(GTIN, "LOT-E", "ph-rabat", quantity=2))
    r = signed_get(live, "regulator", f"/v1/batches/{GTIN}/LOT-E/epcis")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/ld+json")
    doc = r.json()
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)
    assert [e["bizStep"] for e in doc["epcisBody"]["eventList"]] == ["commissioning", "shipping", "receiving",
                                                                     "shipping"]


def test_digital_link_page_and_json(live: Live) -> None:
    w = live.world
    serials = w.commission("LOT-F", 1, expiry=dt.date(2028, 2, 29))
    link = f"/01/{GTIN}/10/LOT-F/21/{serials[0]}?17=280229"
    html = live.http.get(link, headers={"accept": "text/html"})
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert "AUTHENTIC" in html.text and "أصلي" in html.text and "authentique" in html.text
    js = live.http.get(link, headers={"accept": "application/json"}).json()
    assert js["verdict"] == "AUTHENTIC"
    assert live.http.get(f"/01/{GTIN}/10/LOT-F/21/{serials[0]}?17=280228",
                         headers={"accept": "application/json"}).json()["verdict"] == "MISMATCH"
    assert live.http.get(f"/01/{GTIN}/10/LOT-F/21/FAKE1", headers={"accept": "application/json"}).json()[
        "verdict"] == "UNKNOWN"


def test_public_reports_are_read_as_strictly_as_events(live: Live) -> None:
    size = live.world.ledger.size()
    refused = [
        b'{"gtin": "%s", "category": "diversion", "category": "other"}' % GTIN.encode(),  # the last would win
        json.dumps({"gtin": GTIN, "category": "other", "sreial": "X1"}).encode(),  # misspelt: not silently dropped
        json.dumps({"gtin": GTIN, "category": "other", "expiry": 1_800_000_000}).encode(),  # not a Unix time
        json.dumps({"gtin": GTIN, "category": "other", "serial": ""}).encode(),
        json.dumps({"gtin": GTIN, "category": "other", "expiry": "281399"}).encode(),
    ]
    for body in refused:
        r = live.http.post("/v1/reports", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", (body, r.text)
    assert live.world.ledger.size() == size
    r = live.http.post("/v1/reports", json={"gtin": GTIN, "category": "other", "expiry": "280600", "lot": "L1"})
    assert r.status_code == 201, r.text  # GS1 YYMMDD as printed on the pack, day 00: the month's end


def test_alerts_page_by_log_index(live: Live) -> None:
    w = live.world
    for n in range(7):
        path = "/v1/reports"
        headers = sign_request(w.keys["ph-rabat"], "ph-rabat", "POST", path, int(time.time()))
        assert live.http.post(path, json={"gtin": GTIN, "serial": f"PG{n}", "category": "other"},
                              headers=headers).status_code == 201
    everything = signed_get(live, "regulator", "/v1/alerts").json()
    pages, before = [], None
    for _ in range(5):  # bounded: a server that ignored ``before`` would serve the first page for ever
        page = signed_get(live, "regulator", "/v1/alerts?limit=3" + (f"&before={before}" if before else "")).json()
        if not page:
            break
        pages.append(page)
        before = page[-1]["index"]
    assert [len(p) for p in pages] == [3, 3, 1] and [a for p in pages for a in p] == everything
    assert [a["serial"] for a in everything] == [f"PG{n}" for n in reversed(range(7))]
    short = signed_get(live, "regulator", f"/v1/alerts?gtin={GTIN[1:]}").json()  # a GTIN-13 names the same
    assert short == everything
    assert signed_get(live, "regulator", "/v1/alerts?gtin=123").status_code == 422


def test_public_reports_keep_personal_data_off_the_log_and_are_rate_limited(live: Live) -> None:
    w = live.world
    details = "Fatima Z., 06 12 34 56 78, bought at a market stall"
    r = live.http.post("/v1/reports", json={"gtin": GTIN, "serial": "FAKE9", "category": "suspected_falsified",
                                            "details": details})
    assert r.status_code == 201, r.text
    entry = signed_get(live, "regulator", f"/v1/log/entries?start={r.json()['index']}&end={r.json()['index'] + 1}")
    text = json.dumps(entry.json())
    assert "Fatima" not in text and "details_hash" in text
    assert any(a["kind"] == "report" for a in signed_get(live, "regulator", "/v1/alerts").json())
    codes = [live.http.post("/v1/reports", json={"gtin": GTIN, "category": "other"}).status_code for _ in range(4)]
    assert codes == [201, 201, 429, 429]  # three a minute from one address (the fixture's setting)
    assert w.ledger.size() > 0


def test_openapi_is_complete(live: Live) -> None:
    spec = live.http.get("/openapi.json").json()
    for path in ["/v1/events", "/v1/log/checkpoint", "/v1/log/public-key", "/v1/log/entries",
                 "/v1/log/proof/inclusion", "/v1/log/proof/consistency", "/v1/actors", "/v1/actors/{actor_id}",
                 "/v1/batches/{gtin}/{lot}", "/v1/batches/{gtin}/{lot}/history", "/v1/batches/{gtin}/{lot}/epcis",
                 "/v1/packs/{gtin}/{serial}", "/01/{gtin}/10/{lot}/21/{serial}", "/v1/reports", "/v1/bundles"]:
        assert path in spec["paths"], path
    assert "Problem" in spec["components"]["schemas"]
    assert live.http.get("/docs").status_code == 200


@pytest.mark.parametrize("code", ["over_shipment", "duplicate_dispense"])
def test_problem_types_are_documented(live: Live, code: str) -> None:
    r = live.http.get(f"/problems/{code}")
    assert r.status_code == 200 and r.json()["status"] == 409




def test_an_actor_scanning_an_unknown_pack_raises_one_alert(live: Live) -> None:
    w = live.world
    w.commission("LOT-U", 1)
    path = f"/v1/packs/{GTIN}/NEVERSEEN1"
    assert live.http.get(path).json()["verdict"] == "UNKNOWN"  # a patient's scan files nothing
    assert not [a for a in signed_get(live, "regulator", "/v1/alerts").json() if a["kind"] == "unknown_pack_scan"]
    for _ in range(2):
        assert signed_get(live, "ph-rabat", path).json()["verdict"] == "UNKNOWN"
    alerts = [a for a in signed_get(live, "regulator", "/v1/alerts?kind=unknown_pack_scan").json()]
    assert len(alerts) == 1 and alerts[0]["suspect"] == "ph-rabat" and alerts[0]["serial"] == "NEVERSEEN1"


def assert_answered_like_the_router(live: Live, paths: list[str]) -> None:
    """Each GET answers as the same request sent through FastAPI's router (an extra query parameter takes it
    there): status, content type and JSON, problems included."""
    for path in paths:
        fast = live.http.get(path)
        routed = live.http.get(path + ("&" if "?" in path else "?") + "via=router")
        assert (fast.status_code, fast.headers["content-type"]) == (routed.status_code,
                                                                     routed.headers["content-type"]), path
        assert fast.json() == routed.json(), path


def test_public_scans_answer_like_the_routed_endpoint(live: Live) -> None:
    """The public scan is served ahead of FastAPI's router (``api.fast_paths``); an extra query parameter sends
    the same request through the router. Both must answer alike, verdicts and problems."""
    w = live.world
    serials = [f"FP{i:03d}" for i in range(4)]
    assert live.post_event(w.as_("maphar").commission(GTIN, "LOT-FP", dt.date(2028, 5, 31), "Amoxicilline 1 g",
                                                      serials)).status_code == 201
    ship = w.as_("maphar").ship(GTIN, "LOT-FP", "ph-rabat", serials=serials[:2])
    assert live.post_event(ship).status_code == 201
    assert live.post_event(w.as_("ph-rabat").receive(ship.event_id)).status_code == 201
    assert live.post_event(w.as_("ph-rabat").dispense(GTIN, serials[0])).status_code == 201
    cases = [f"/v1/packs/{GTIN}/{serials[0]}", f"/v1/packs/{GTIN}/{serials[1]}?lot=LOT-FP&expiry=280531",
             f"/v1/packs/{GTIN}/{serials[1]}?expiry=300101", f"/v1/packs/{GTIN}/{serials[2]}?lot=",
             f"/v1/packs/{GTIN}/NEVERSEEN", "/v1/packs/123/ABC", f"/v1/packs/{GTIN}/{serials[3]}?expiry=31-12",
             f"/v1/packs/{GTIN}/bad%20serial"]
    assert_answered_like_the_router(live, cases)
    assert live.http.get(cases[0]).json()["verdict"] == "ALREADY_DISPENSED"
    assert live.http.get(cases[2]).json()["verdict"] == "MISMATCH"


def test_proofs_answer_like_the_routed_endpoint(live: Live) -> None:
    """Inclusion and consistency proofs in their plain form are served ahead of FastAPI's router; an extra query
    parameter sends the same request through the router. Both must answer alike, proofs and problems."""
    w = live.world
    assert live.post_event(w.as_("maphar").commission(GTIN, "LOT-PF", dt.date(2028, 5, 31), "Amoxicilline 1 g",
                                                      ["PF1", "PF2"])).status_code == 201
    size = w.ledger.size()
    cases = [f"/v1/log/proof/inclusion?index=1&tree_size={size}", f"/v1/log/proof/inclusion?tree_size={size}&index=0",
             f"/v1/log/proof/inclusion?index=00{size - 1}&tree_size={size}",
             f"/v1/log/proof/consistency?first=1&second={size}",
             f"/v1/log/proof/consistency?first={size}&second={size}",
             f"/v1/log/proof/inclusion?index={size}&tree_size={size}",  # 422: index out of range
             f"/v1/log/proof/inclusion?index=0&tree_size={size + 5}",  # 404: no such checkpoint
             "/v1/log/proof/consistency?first=0&second=1", f"/v1/log/proof/consistency?first={size}&second=1",
             f"/v1/log/proof/inclusion?index=0&tree_size={2**62 + 1}", "/v1/log/proof/inclusion?index=-1&tree_size=2",
             "/v1/log/proof/inclusion?index=1", "/v1/log/proof/inclusion?index=%EF%BC%91&tree_size=2"]
    assert_answered_like_the_router(live, cases)
    from api.fast_paths import PublicProofs

    def served_ahead(path: str) -> bool:
        route, _, query = path.partition("?")
        scope = {"type": "http", "method": "GET", "path": route, "query_string": query.encode(), "headers": []}
        return PublicProofs.plain(scope) is not None

    assert [served_ahead(p) for p in cases] == [True] * 9 + [False] * 4  # the router answers the odd forms
    proof = live.http.get(cases[0]).json()
    assert proof["leaf_index"] == 1 and proof["tree_size"] == size
    assert [live.http.get(p).status_code for p in cases[5:9]] == [422, 404, 422, 422]


def test_event_submissions_answer_like_the_routed_endpoint(live: Live) -> None:
    """POST /v1/events is served ahead of FastAPI's router (``api.fast_paths``); a query string sends it through
    the router. Both must answer alike: receipts, replays and problems."""
    w = live.world
    serials = [f"FE{i:03d}" for i in range(4)]
    commission = w.as_("maphar").commission(GTIN, "LOT-FE", dt.date(2028, 5, 31), "Amoxicilline 1 g", serials)
    assert live.post_event(commission).status_code == 201
    body = json.dumps(commission.to_json()).encode()
    headers = {"content-type": "application/json"}
    fast = live.http.post("/v1/events", content=body, headers=headers)
    routed = live.http.post("/v1/events?via=router", content=body, headers=headers)
    assert fast.status_code == routed.status_code == 200 and fast.json() == routed.json()  # replays

    ship_a = w.as_("maphar").ship(GTIN, "LOT-FE", "ph-rabat", serials=serials[:1])
    ship_b = w.as_("maphar").ship(GTIN, "LOT-FE", "ph-rabat", serials=serials[1:2])
    a = live.http.post("/v1/events", content=json.dumps(ship_a.to_json()).encode(), headers=headers)
    b = live.http.post("/v1/events?via=router", content=json.dumps(ship_b.to_json()).encode(), headers=headers)
    assert a.status_code == b.status_code == 201 and set(a.json()) == set(b.json())
    assert b.json()["index"] == a.json()["index"] + 1

    bad = [b"{", b"", b'{"event": {}, "key_id": "x", "signature": "y", "extra": 1}',
           json.dumps(w.as_("ph-fes").dispense(GTIN, serials[2]).to_json()).encode()]  # not in its custody
    for raw in bad:
        fast, routed = (live.http.post(path, content=raw, headers=headers)
                        for path in ("/v1/events", "/v1/events?via=router"))
        assert (fast.status_code, fast.headers["content-type"]) == (routed.status_code,
                                                                     routed.headers["content-type"]), raw
        f, r = fast.json(), routed.json()
        f.pop("instance", None), r.pop("instance", None)
        assert f == r and f["status"] >= 400, raw


def test_a_page_of_entries_is_cut_by_its_bytes(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commission lists every serial of its batch (a request may carry 16 MB): a page of 1000 such entries
    would be gigabytes, built in the server's memory. The server sends fewer (at least one) when their leaves
    pass ``MAX_ENTRIES_BYTES``; reading on from start plus the number returned gives every entry once."""
    import ledger.queries

    w = live.world
    for lot in ("BIG-1", "BIG-2", "BIG-3"):
        w.commission(lot, 300)  # about 7 kB each, among entries of under 1 kB
    size = w.ledger.size()
    whole = signed_get(live, "regulator", f"/v1/log/entries?start=0&end={size}").json()["entries"]
    assert [e["index"] for e in whole] == list(range(size))
    limit = 4_000
    monkeypatch.setattr(ledger.queries, "MAX_ENTRIES_BYTES", limit)
    start, pages = 0, []
    while start < size:
        page = signed_get(live, "regulator", f"/v1/log/entries?start={start}&end={size}").json()["entries"]
        assert page and page[0]["index"] == start
        pages.append(page)
        start += len(page)
    assert [e for page in pages for e in page] == whole
    for page in pages:
        leaves = [len(rfc8785.dumps(e["entry"])) for e in page]
        assert len(page) == 1 or sum(leaves) <= limit, leaves
    assert any(len(page) == 1 and len(rfc8785.dumps(page[0]["entry"])) > limit for page in pages)
    assert len(pages) > 3
