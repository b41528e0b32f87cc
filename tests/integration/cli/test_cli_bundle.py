"""Offline bundles through the CLI: export from a real server, then verify and scan with the server stopped;
every kind of tampering makes verification and scans fail with exit code 20."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger.checkpoint import Checkpoint, sign_checkpoint, split_note
from signing import KeyPair
from signing.keys import write_public_key
from tests.integration.cli.conftest import Cli, Server, build_world, free_port
from tests.support import GTIN

pytestmark = pytest.mark.slow
GS = "<GS>"


def element(serial: str, lot: str, expiry: str = "280630") -> str:
    return f"]d201{GTIN}17{expiry}10{lot}{GS}21{serial}"


@dataclass
class Offline:
    cli: Cli
    bundle: Path
    doc: dict[str, Any]
    packs: dict[str, Path]  # one-pack bundles by serial


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offline]:
    """Build custody through the CLI, export a bundle as the inspector, then stop the server for good."""
    root = tmp_path_factory.mktemp("bundle")
    data_dir = root / "home"
    build_world(data_dir)
    server = Server(data_dir)
    try:
        cli = Cli(data_dir, server.url)
        cli.commission("OFF1", ["OF1", "OF2", "OF3", "OF4"])
        cli.deliver("OFF1", ["OF1", "OF2"], "maphar", "ph-rabat")
        r = cli("dispense", "--gtin", GTIN, "--serial", "OF1", actor="ph-rabat")
        assert r.code == 0, r.err
        cli.commission("OFF2", ["OR1"])
        r = cli("recall", "--gtin", GTIN, "--lot", "OFF2", "--reason", "label error", actor="maphar")
        assert r.code == 0, r.err
        cli.commission("ELSEWHERE", ["EL1"])  # registered, but not exported

        out = root / "inspector.bundle.json"
        r = cli("bundle", "export", "--out", str(out), "--batch", f"{GTIN}/OFF1", "--batch", f"{GTIN}/OFF2",
                actor="inspector")
        assert r.code == 0, r.err
        assert "verified against the pinned keys" in r.out
        denied = cli("bundle", "export", "--out", str(root / "x.json"), "--region", "Oriental", actor="ph-rabat")
        assert denied.code == 4 and not (root / "x.json").exists()
        packs = {}
        for serial in ("OF1", "OF2", "OR1"):  # public: no identity
            packs[serial] = root / f"{serial}.pack.json"
            r = cli("bundle", "pack", GTIN, serial, "--out", str(packs[serial]), "--json")
            assert r.code == 0, r.err
            assert r.json()["verified"] and r.json()["bytes"] == packs[serial].stat().st_size < 4096
        r = cli("bundle", "pack", GTIN, "NEVER1", "--out", str(root / "never.json"))
        assert r.code != 0 and "was ever registered" in r.err and not (root / "never.json").exists()
    finally:
        server.stop()
    # from here on nothing listens: any network use would fail
    cli.url = f"http://127.0.0.1:{free_port()}"
    yield Offline(cli, out, json.loads(out.read_text()), packs)


def test_bundle_verify(offline: Offline) -> None:
    r = offline.cli("bundle", "verify", str(offline.bundle))
    assert r.code == 0, r.err
    assert "intact" in r.out and "tree size" in r.out and "chains" in r.out and "actors" in r.out
    info = offline.cli("bundle", "verify", str(offline.bundle), "--json").json()
    assert info["ok"] and info["batches"] == 2 and info["actors"] == 9 and info["entries"] == len(
        offline.doc["entries"])


OFFLINE_CASES = [  # code, verdict, words of the reason
    (element("OF2", "OFF1"), "AUTHENTIC", "genuine"),
    (element("OF1", "OFF1"), "ALREADY_DISPENSED", "already dispensed"),
    (element("OR1", "OFF2"), "RECALLED", "label error"),
    # a serial its batch never had, the batch being in the bundle: a false label, whatever else it is
    (element("OF9", "OFF1"), "UNKNOWN", "not among the packs of batch OFF1"),
    # not in the bundle: perhaps registered in a batch the bundle lacks, so no verdict offline
    (element("EL1", "ELSEWHERE"), "NOT_CHECKED", "not in this bundle"),
    (element("OF2", "OFF1", expiry="290101"), "MISMATCH", "expiry"),
]


def test_offline_scan(offline: Offline) -> None:
    r = offline.cli("scan", "--offline", str(offline.bundle), "--stdin", "--json",
                    input="".join(code + "\n" for code, _, _ in OFFLINE_CASES))
    assert r.code == 10, r.err  # the worst verdict: UNKNOWN (a pack outside the bundle has none)
    docs = r.json_lines()
    assert len(docs) == len(OFFLINE_CASES)
    for doc, (_, verdict, says) in zip(docs, OFFLINE_CASES, strict=True):
        assert doc["verdict"] == verdict and doc["mode"] == "offline" and says in doc["reason"], doc
        assert doc["checked"] is (verdict != "NOT_CHECKED"), doc  # a pack outside the bundle is not checked
        assert doc["not_checked"] is (verdict == "NOT_CHECKED"), doc
        if verdict not in ("NOT_CHECKED", "UNKNOWN"):
            assert doc["provenance"] and all(s["signature"] == "verified" for s in doc["provenance"])
    for code, exit_code in [(OFFLINE_CASES[0][0], 0), (OFFLINE_CASES[2][0], 13), (OFFLINE_CASES[5][0], 11),
                            (OFFLINE_CASES[3][0], 10), (OFFLINE_CASES[4][0], 6)]:
        assert offline.cli("scan", "--offline", str(offline.bundle), "--text", code).code == exit_code


def test_offline_scan_as_a_pharmacy_and_as_text(offline: Offline) -> None:
    r = offline.cli("scan", "--offline", str(offline.bundle), "--text", element("OF3", "OFF1"), actor="ph-rabat")
    assert r.code == 16 and "NOT_IN_CUSTODY" in r.out
    r = offline.cli("scan", "--offline", str(offline.bundle), "--text", element("OF2", "OFF1"), actor="ph-rabat")
    assert r.code == 0 and "AUTHENTIC" in r.out and "verified offline" in r.out and "commission" in r.out
    r = offline.cli("scan", "--offline", str(offline.bundle), "--stdin",
                    input=element("OF2", "OFF1") + "\n" + element("OR1", "OFF2") + "\n")
    assert r.code == 13 and [line.split()[0] for line in r.out.strip().splitlines()] == ["AUTHENTIC", "RECALLED"]
    # online needs the server, which is gone: exit 5
    assert offline.cli("scan", "--text", element("OF2", "OFF1")).code == 5


def _entries_of(doc: dict[str, Any], chain: str) -> list[int]:
    return [i for i, e in enumerate(doc["entries"]) if e["entry"]["chain"] == chain]


def _edit_field(doc: dict[str, Any]) -> None:
    i = _entries_of(doc, f"batch/{GTIN}/OFF2")[0]
    doc["entries"][i]["entry"]["event"]["product"] = "Something else"


def _drop_middle(doc: dict[str, Any]) -> None:
    chain = _entries_of(doc, f"batch/{GTIN}/OFF1")
    del doc["entries"][chain[1]]


def _drop_last(doc: dict[str, Any]) -> None:
    del doc["entries"][_entries_of(doc, f"batch/{GTIN}/OFF1")[-1]]  # the dispense of OF1


def _resign_checkpoint(doc: dict[str, Any]) -> None:
    text, _ = split_note(doc["checkpoint"])
    cp = Checkpoint.parse_body(text)
    doc["checkpoint"] = sign_checkpoint(cp, cp.origin, KeyPair.generate())


def _drop_recall(doc: dict[str, Any]) -> None:
    """Drop the recall itself: a whole-entry omission at the end of a chain."""
    del doc["entries"][_entries_of(doc, f"batch/{GTIN}/OFF2")[-1]]


@pytest.mark.parametrize(("tamper", "says"), [
    (_edit_field, "not in the signed tree"),
    (_drop_middle, "is broken before this entry"),
    (_drop_last, "does not end at the signed head"),
    (_resign_checkpoint, "not signed by the pinned ledger key"),
    (_drop_recall, "does not end at the signed head"),
    (lambda doc: doc["entries"][0].update(index=str(doc["entries"][0]["index"])), "its index is '"),
    (lambda doc: doc["entries"][0].update(proof=None), "its proof is not a list of hex hashes"),
    (lambda doc: doc["entries"].insert(0, "an entry"), "an entry is not a JSON object"),
], ids=["edit-field", "drop-entry", "drop-last-of-chain", "checkpoint-other-key", "drop-recall", "index-as-text",
        "proof-null", "entry-not-object"])
def test_tampered_bundle(offline: Offline, tmp_path: Path, tamper: Callable[[dict[str, Any]], None],
                         says: str) -> None:
    doc = copy.deepcopy(offline.doc)
    tamper(doc)
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(doc))
    r = offline.cli("bundle", "verify", str(bad))
    assert r.code == 20 and "TAMPERED" in r.err and len(r.err.strip().splitlines()) == 1
    assert says in r.err
    r = offline.cli("scan", "--offline", str(bad), "--text", element("OF2", "OFF1"), "--json")
    assert r.code == 20
    assert r.json_lines()[0]["verdict"] == "TAMPERED"


def test_wrong_pinned_ledger_key(offline: Offline, tmp_path: Path) -> None:
    other = tmp_path / "other-ledger.pub"
    write_public_key(other, KeyPair.generate().public)
    r = offline.cli("bundle", "verify", str(offline.bundle), "--ledger-key", str(other))
    assert r.code == 20 and "pinned ledger key" in r.err
    r = offline.cli("scan", "--offline", str(offline.bundle), "--ledger-key", str(other), "--text",
                    element("OF2", "OFF1"))
    assert r.code == 20 and "TAMPERED" in r.out


def test_unreadable_bundle(offline: Offline, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    r = offline.cli("bundle", "verify", str(junk))
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    r = offline.cli("scan", "--offline", str(tmp_path / "missing.json"), "--text", element("OF2", "OFF1"))
    assert r.code == 2 and "does not exist" in r.err
    huge = tmp_path / "huge.json"
    huge.write_text(re.sub(r'"index":\s*\d+', '"index": ' + "9" * 5000, offline.bundle.read_text(), count=1))
    r = offline.cli("bundle", "verify", str(huge))
    assert r.code == 2 and "a number of 5000 digits" in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_one_pack_bundles(offline: Offline) -> None:
    r = offline.cli("bundle", "verify", str(offline.packs["OF1"]))
    assert r.code == 0 and "one pack: OF1" in r.out and "the latest also by its actor" in r.out, r.out
    for serial, lot, verdict, exit_code in [("OF1", "OFF1", "ALREADY_DISPENSED", 12), ("OF2", "OFF1", "AUTHENTIC", 0),
                                            ("OR1", "OFF2", "RECALLED", 13)]:
        r = offline.cli("scan", "--offline", str(offline.packs[serial]), "--text", element(serial, lot), "--json")
        assert r.code == exit_code, r.err
        doc = r.json_lines()[0]
        assert doc["verdict"] == verdict and doc["mode"] == "offline" and "signed statement" in doc["verification"]
        assert doc["checked"] is True
        assert doc["provenance"][0]["type"] == "commission"
    # the dispense travels whole: its step is verified; the others are the ledger's signed word
    r = offline.cli("scan", "--offline", str(offline.packs["OF1"]), "--text", element("OF1", "OFF1"), "--json")
    assert [s["signature"] for s in r.json_lines()[0]["provenance"]] == [
        "signed by the ledger", "signed by the ledger", "verified"]
    # a pack this bundle is not for: no finding, exit 10 like a pack outside a batch bundle
    r = offline.cli("scan", "--offline", str(offline.packs["OF2"]), "--text", element("OF3", "OFF1"), "--json")
    assert r.code == 6 and "not this one" in r.json_lines()[0]["reason"] and not r.json_lines()[0]["checked"]
    # custody is not judged from a public bundle, and the scan says so (a batch bundle judges it)
    r = offline.cli("scan", "--offline", str(offline.packs["OF2"]), "--text", element("OF2", "OFF1"), "--json",
                    actor="ph-fes")
    assert r.code == 0 and "custody not checked" in r.json_lines()[0]["verification"]
    r = offline.cli("scan", "--offline", str(offline.packs["OF1"]), "--text", element("OF1", "OFF1"),
                    actor="ph-rabat")
    assert r.code == 12 and "double scan" in r.out


def test_tampered_one_pack_bundle(offline: Offline, tmp_path: Path) -> None:
    doc = json.loads(offline.packs["OF2"].read_text())
    doc["statement"]["pack"]["holder"] = "ph-fes"
    bad = tmp_path / "tampered.pack.json"
    bad.write_text(json.dumps(doc))
    r = offline.cli("bundle", "verify", str(bad))
    assert r.code == 20 and len(r.err.strip().splitlines()) == 1 and "statement is not signed" in r.err
    r = offline.cli("scan", "--offline", str(bad), "--text", element("OF2", "OFF1"), "--json")
    assert r.code == 20 and r.json_lines()[0]["verdict"] == "TAMPERED"


def test_offline_a_serial_the_bundle_lacks(offline: Offline) -> None:
    """EL1 is registered (in batch ELSEWHERE, not exported). A label claiming batch OFF1, which the bundle holds in
    full, for it is false either way (MISMATCH online): offline says so without claiming which. With no lot on the
    label the pack may be in any batch of the GTIN, and offline can only say it is not in the bundle, exit 6."""
    r = offline.cli("scan", "--offline", str(offline.bundle), "--text", element("EL1", "OFF1"), "--json")
    assert r.code == 10, r.err
    (doc,) = r.json_lines()
    assert doc["verdict"] == "UNKNOWN" and doc["checked"] is True, doc
    assert "not among the packs of batch OFF1" in doc["reason"] and "another batch's lot" in doc["reason"], doc
    r = offline.cli("scan", "--offline", str(offline.bundle), "--text", f"(01){GTIN}(21)EL1", "--json")
    assert r.code == 6, r.err
    (doc,) = r.json_lines()
    assert doc["verdict"] == "NOT_CHECKED" and doc["checked"] is False, doc
    assert f"serial EL1 is not among this bundle's packs of GTIN {GTIN}" in doc["reason"], doc
    assert "suspect falsified" not in doc["reason"]
    r = offline.cli("scan", "--offline", str(offline.bundle), "--text", f"(01){GTIN}(21)EL1")
    assert r.code == 6 and "NOT_CHECKED" in r.out


def test_offline_identity_is_resolved_as_online(offline: Offline, tmp_path: Path) -> None:
    code = element("OF3", "OFF1")
    for args, says in [(["--key", str(tmp_path / "nonexist.key")], "does not exist"),
                       (["--actor", "ph-nobody"], "ph-nobody.key does not exist")]:
        r = offline.cli("scan", "--offline", str(offline.bundle), "--text", code, *args)
        assert r.code == 2 and says in r.err and len(r.err.strip().splitlines()) == 1, r.err
    r = offline.cli("scan", "--offline", str(offline.bundle), "--text", code, "--json")
    assert r.code == 0 and "custody not checked (no identity given)" in r.json_lines()[0]["verification"]
    r = offline.cli("scan", "--offline", str(offline.bundle), "--text", code, "--json", actor="inspector")
    assert r.code == 0 and "custody not checked: inspector is not a dispensing" in r.json_lines()[0]["verification"]
    r = offline.cli("scan", "--offline", str(offline.bundle), "--text", code, "--json", actor="ph-rabat")
    assert r.code == 16 and "custody not checked" not in r.json_lines()[0]["verification"]
