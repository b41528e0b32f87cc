"""The athar CLI against a real server: keys, custody commands, labels and scans of real label images."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ledger.verdict import Verdict
from scanner_cli.client import AtharClient
from scanner_cli.identity import pinned_trust, resolve_identity
from scanner_cli.scantext import parse_scanned_text
from scanner_cli.verify import online_verdict
from signing import KeyPair
from signing.keys import write_public_key
from tests.integration.cli.conftest import EXPIRY, Cli, Server
from tests.support import GTIN

GTIN_B = "06118000000013"  # a second product (valid check digit)

pytestmark = pytest.mark.slow
GS = "<GS>"


@pytest.fixture(scope="module")
def cli(served: tuple[Server, Cli]) -> Cli:
    return served[1]


def element(serial: str, lot: str, expiry: str = "280630", gtin: str = GTIN) -> str:
    return f"]d201{gtin}17{expiry}10{lot}{GS}21{serial}"


def label_for(cli: Cli, out: Path, lot: str, serial: str, expiry: str = EXPIRY, gtin: str = GTIN) -> Path:
    r = cli("label", "--gtin", gtin, "--lot", lot, "--expiry", expiry, "--serials", serial, "--out", str(out),
            data_dir=False)
    assert r.code == 0, r.err
    (path,) = [p for p in out.glob("*.png") if f"_{serial}_" in p.name]
    return path


def test_keys_new_and_show(cli: Cli, tmp_path: Path) -> None:
    key = tmp_path / "me.key"
    r = cli("keys", "new", "--out", str(key), "--actor", "ph-new", data_dir=False)
    assert r.code == 0, r.err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "ed25519:" in r.out and "public key" in r.out
    shown = cli("keys", "show", str(key), "--json", data_dir=False)
    assert shown.code == 0, shown.err
    info = shown.json()
    assert info["actor"] == "ph-new" and info["private"] is True and info["key_id"] in r.out
    assert info["public_key"] in r.out and "seed" not in shown.out
    # the key file names its actor: --key alone is an identity (this one was never registered: exit 4)
    r = cli("receive", "someshipment", "--key", str(key), data_dir=False)
    assert r.code == 4 and "not registered" in r.err and len(r.err.strip().splitlines()) == 1
    again = cli("keys", "new", "--out", str(key), data_dir=False)
    assert again.code == 2 and "refusing to overwrite" in again.err and len(again.err.strip().splitlines()) == 1


def test_commission_ship_receive_dispense_and_refusals(cli: Cli, tmp_path: Path) -> None:
    serials_file = tmp_path / "serials.txt"
    serials_file.write_text("FLOWA1\nFLOWA2\n\nFLOWA3\n")
    r = cli("batch", "commission", "--gtin", GTIN, "--lot", "FLOW1", "--expiry", "280630", "--product",
            "Amoxicilline 500 mg", "--serials-file", str(serials_file), "--channel", "public", actor="maphar")
    assert r.code == 0, r.err
    assert "entry" in r.out and "tree size" in r.out and "receipt verified" in r.out

    shipped = cli("ship", "--gtin", GTIN, "--lot", "FLOW1", "--to", "ph-rabat", "--serials", "FLOWA1,FLOWA2",
                  "--channel", "public", "--json", actor="maphar")
    assert shipped.code == 0, shipped.err
    doc = shipped.json()
    shipment = doc["shipment"]
    assert doc["receipt_verified"] is True and doc["receipt"]["chain"] == f"batch/{GTIN}/FLOW1"

    # only the named recipient receives: a refusal is one line and exit 3
    wrong = cli("receive", shipment, actor="ph-fes")
    assert wrong.code == 3 and wrong.out == ""
    assert len(wrong.err.strip().splitlines()) == 1 and "ph-rabat" in wrong.err

    got = cli("receive", shipment, "--json", actor="ph-rabat")
    assert got.code == 0, got.err
    assert got.json()["receipt"]["index"] > doc["receipt"]["index"]
    assert cli("receive", shipment, actor="ph-rabat").code == 3  # already received

    # dispense from a scanned code (AIM prefix, <GS> separator)
    r = cli("dispense", element("FLOWA1", "FLOW1"), actor="ph-rabat")
    assert r.code == 0, r.err
    assert "dispensed" in r.out
    twice = cli("dispense", "--gtin", GTIN, "--serial", "FLOWA1", actor="ph-rabat")
    assert twice.code == 3 and len(twice.err.strip().splitlines()) == 1
    not_held = cli("dispense", "--gtin", GTIN, "--serial", "FLOWA2", actor="ph-fes")
    assert not_held.code == 3
    too_many = cli("ship", "--gtin", GTIN, "--lot", "FLOW1", "--to", "dist-north", "--quantity", "50",
                   actor="maphar")
    assert too_many.code == 3 and len(too_many.err.strip().splitlines()) == 1

    # a recipient may refuse a shipment
    r = cli("ship", "--gtin", GTIN, "--lot", "FLOW1", "--to", "ph-fes", "--serials", "FLOWA3", "--json",
            actor="maphar")
    assert r.code == 0, r.err
    refused = cli("refuse", r.json()["shipment"], "--reason", "not ordered", actor="ph-fes")
    assert refused.code == 0, refused.err


def test_usage_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    r = cli("batch", "commission", "--gtin", GTIN, "--lot", "U1", "--expiry", "2028-13-45", "--product", "x",
            "--serials", "A", actor="maphar")
    assert r.code == 2 and "expiry" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("ship", "--gtin", GTIN, "--lot", "U1", "--to", "ph-rabat", actor="maphar")
    assert r.code == 2 and "--quantity" in r.err
    r = cli("receive", "abc")  # no identity
    assert r.code == 2 and "identity" in r.err
    r = cli("receive", "abc", "--key", str(tmp_path / "missing.key"), "--actor", "maphar")
    assert r.code == 2 and "does not exist" in r.err


def test_labels_and_online_verdicts(cli: Cli, tmp_path: Path) -> None:
    serials = [f"SCAN{i}" for i in range(1, 5)]
    cli.commission("SCAN1", serials)
    cli.deliver("SCAN1", serials[:2], "maphar", "ph-rabat")

    out = tmp_path / "labels"
    pdf = tmp_path / "sheet.pdf"
    r = cli("label", "--batch", f"{GTIN}/SCAN1", "--out", str(out), "--pdf", str(pdf), actor="maphar")
    assert r.code == 0, r.err
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4 and pdf.read_bytes().startswith(b"%PDF")
    by_serial = {s: next(p for p in pngs if f"_{s}_" in p.name) for s in serials}

    # public (no identity): the API's verdict
    r = cli("scan", str(by_serial["SCAN1"]), "--json")
    assert r.code == 0, r.err
    (doc,) = r.json_lines()  # the DataMatrix and the QR of one label are one pack
    assert doc["verdict"] == "AUTHENTIC" and doc["code"]["serial"] == "SCAN1" and doc["product"]
    assert [s["type"] for s in doc["provenance"]][:2] == ["commission", "ship"]
    assert "confirmed by the pack's one-pack bundle" in doc["verification"]  # the data directory pins the keys
    assert doc["checked"] is True
    r = cli("scan", str(by_serial["SCAN1"]), "--json", data_dir=False)  # no keys named: the API's word only
    assert r.code == 0 and r.json_lines()[0]["checked"] is False, r.err

    # the holding pharmacy, with its identity: cross-checked against a locally verified bundle
    r = cli("scan", str(by_serial["SCAN1"]), actor="ph-rabat")
    assert r.code == 0, r.err
    assert "AUTHENTIC" in r.out and "confirmed by a bundle verified" in r.out and "verified" in r.out

    r = cli("dispense", "--gtin", GTIN, "--serial", "SCAN1", actor="ph-rabat")
    assert r.code == 0, r.err
    r = cli("scan", str(by_serial["SCAN1"]), actor="ph-rabat", )
    assert r.code == 12 and "ALREADY_DISPENSED" in r.out and "double scan" in r.out
    assert cli("scan", str(by_serial["SCAN1"])).code == 12

    # a pharmacy scanning a pack it never received: possible diversion
    r = cli("scan", str(by_serial["SCAN2"]), "--json", actor="ph-fes")
    assert r.code == 16, r.err
    assert r.json_lines()[0]["verdict"] == "NOT_IN_CUSTODY"
    r = cli("scan", str(by_serial["SCAN3"]), "--json", actor="ph-rabat")
    assert r.code == 16 and "bundle verified" in r.json_lines()[0]["verification"] and r.json_lines()[0]["checked"]

    # labels nobody registered, or printed with the wrong lot or expiry
    unknown = label_for(cli, tmp_path / "fake", "SCAN1", "NOSUCH9")
    r = cli("scan", str(unknown))
    assert r.code == 10 and "UNKNOWN" in r.out
    wrong_lot = label_for(cli, tmp_path / "lot", "OTHERLOT", "SCAN2")
    r = cli("scan", str(wrong_lot), "--json", actor="ph-rabat")
    assert r.code == 11 and r.json_lines()[0]["verdict"] == "MISMATCH"
    wrong_expiry = label_for(cli, tmp_path / "exp", "SCAN1", "SCAN2", expiry="2029-01-31")
    assert cli("scan", str(wrong_expiry)).code == 11

    # several images: one verdict each, the exit code is the worst
    r = cli("scan", str(by_serial["SCAN2"]), str(unknown), str(by_serial["SCAN1"]), "--json")
    assert [d["verdict"] for d in r.json_lines()] == ["AUTHENTIC", "UNKNOWN", "ALREADY_DISPENSED"]
    assert r.code == 10


def test_recalled_batch(cli: Cli) -> None:
    cli.commission("RECALL1", ["RC1", "RC2"])
    r = cli("recall", "--gtin", GTIN, "--lot", "RECALL1", "--reason", "sterility failure", actor="maphar")
    assert r.code == 0, r.err
    r = cli("scan", "--text", element("RC1", "RECALL1"), actor="maphar")
    assert r.code == 13 and "RECALLED" in r.out and "sterility failure" in r.out
    shipped = cli("ship", "--gtin", GTIN, "--lot", "RECALL1", "--to", "ph-rabat", "--quantity", "1", actor="maphar")
    assert shipped.code == 3 and "recalled" in shipped.err


def test_text_and_stdin(cli: Cli) -> None:
    cli.commission("TXT1", ["T1", "T2"], gtin=GTIN_B, actor="sothema")
    r = cli("scan", "--text", f"]d201{GTIN_B}172806301" + "0TXT1" + GS + "21T1")
    assert r.code == 0 and "AUTHENTIC" in r.out
    r = cli("scan", "--text", f"(01){GTIN_B}(17)280630(10)TXT1(21)T2", "--json")
    assert r.code == 0 and r.json_lines()[0]["verdict"] == "AUTHENTIC"
    r = cli("scan", "--text", f"https://id.example/01/{GTIN_B}/10/TXT1/21/T2?17=280630", "--json")
    assert r.code == 0 and r.json_lines()[0]["code"]["form"] == "digital-link"

    lines = [element("T1", "TXT1", gtin=GTIN_B), "not a code at all", "",
             element("T9", "TXT1", gtin=GTIN_B), f"01{GTIN_B}17280630" + "10TXT1\x1d21T2"]
    r = cli("scan", "--stdin", input="\n".join(lines) + "\n")
    assert r.code == 10, r.err
    verdicts = r.out.strip().splitlines()
    assert [v.split()[0] for v in verdicts] == ["AUTHENTIC", "UNKNOWN", "AUTHENTIC"]
    assert "line 2" in r.err and "not a GS1 code" in r.err

    r = cli("scan", "--stdin", "--json", input="garbage\n" + element("T1", "TXT1", gtin=GTIN_B) + "\n")
    assert r.code == 2  # every code authentic, but one line could not be read
    docs = r.json_lines()
    assert docs[0]["verdict"] is None and "line 1" in docs[0]["error"] and docs[1]["verdict"] == "AUTHENTIC"

    r = cli("scan", "--text", GTIN_B)  # a bare GTIN names no pack
    assert r.code == 2 and "serial" in r.err


def test_unreadable_images(cli: Cli, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (400, 300), 255).save(blank)
    r = cli("scan", str(blank))
    assert r.code == 2 and f"no barcode found in {blank}" in r.err
    assert len(r.err.strip().splitlines()) == 1
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello, I am not a picture\n")
    r = cli("scan", str(not_image))
    assert r.code == 2 and str(not_image) in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("scan", str(tmp_path / "missing.png"))
    assert r.code == 2 and "no such file" in r.err
    assert cli("scan").code == 2


def test_anonymous_and_signed_reports(cli: Cli) -> None:
    r = cli("report", "--gtin", GTIN, "--serial", "FAKE1", "--category", "suspected_falsified", "--json")
    assert r.code == 0, r.err
    assert r.json()["receipt"]["index"] >= 0
    r = cli("report", element("SCAN2", "SCAN1"), "--category", "damaged_pack", actor="ph-rabat")
    assert r.code == 0, r.err
    assert "receipt verified" in r.out


def test_online_tampering_is_detected(cli: Cli, tmp_path: Path) -> None:
    cli.commission("LIE1", ["LIE1A", "LIE1B"])
    cli.deliver("LIE1", ["LIE1A"], "maphar", "ph-rabat")
    assert cli("dispense", "--gtin", GTIN, "--serial", "LIE1A", actor="ph-rabat").code == 0
    code = element("LIE1A", "LIE1")

    # a bundle that does not verify with the pinned ledger key
    other = tmp_path / "other.pub"
    write_public_key(other, KeyPair.generate().public)
    r = cli("scan", "--text", code, "--ledger-key", str(other), "--json", actor="ph-rabat")
    assert r.code == 20
    assert r.json_lines()[0]["verdict"] == "TAMPERED" and "fails verification" in r.json_lines()[0]["reason"]

    # a server that lies about the verdict: the locally verified bundle disagrees
    real = httpx.Client(base_url=cli.url)

    def lying(request: httpx.Request) -> httpx.Response:
        answer = real.send(real.build_request(request.method, request.url.raw_path.decode(), content=request.content,
                                              headers={k: v for k, v in request.headers.items() if k != "host"}))
        if request.url.path.startswith("/v1/packs/"):
            return httpx.Response(200, json={**answer.json(), "verdict": "AUTHENTIC", "reason": "all good"})
        return httpx.Response(answer.status_code, content=answer.content, headers={"content-type": "application/json"})

    identity = resolve_identity(None, "ph-rabat", cli.data_dir)
    trust = pinned_trust(cli.data_dir, None, None)
    with AtharClient("http://lying.example", identity, transport=httpx.MockTransport(lying)) as api:
        result = online_verdict(api, parse_scanned_text(code.replace(GS, "\x1d")), identity, trust)
        # with no identity, the pack's one-pack bundle catches it
        public = online_verdict(api, parse_scanned_text(code.replace(GS, "\x1d")), None, trust)
    assert result.verdict is Verdict.TAMPERED
    assert "server says AUTHENTIC but the signed bundle says ALREADY_DISPENSED" in result.reason
    assert public.verdict is Verdict.TAMPERED
    assert "server says AUTHENTIC but the signed one-pack bundle says ALREADY_DISPENSED" in public.reason

    def hiding(request: httpx.Request) -> httpx.Response:
        """Lies about the verdict and says the pack has no bundle."""
        if request.url.path.endswith("/bundle"):
            return httpx.Response(404, json={"code": "unknown_pack", "detail": "never registered"})
        return lying(request)

    with AtharClient("http://hiding.example", None, transport=httpx.MockTransport(hiding)) as api:
        public = online_verdict(api, parse_scanned_text(code.replace(GS, "\x1d")), None, trust)
    real.close()
    assert public.verdict is Verdict.TAMPERED and "has no bundle of the pack" in public.reason
