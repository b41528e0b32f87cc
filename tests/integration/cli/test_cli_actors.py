"""`athar actors`: the regulator registers an actor and rotates and revokes its keys with the root key, against a
real server; the new actor's keys then work, or stop working, for custody commands."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from signing import KeyPair
from tests.integration.cli.conftest import Cli, Server
from tests.support import GTIN

pytestmark = pytest.mark.slow


def _size(server: Server) -> int:
    return int(httpx.get(server.url + "/v1/log/checkpoint").text.splitlines()[1])


def _new_key(cli: Cli, path: Path, actor: str) -> str:
    r = cli("keys", "new", "--out", str(path), "--actor", actor, "--json", data_dir=False)
    assert r.code == 0, r.err
    return str(r.json()["key_id"])


def test_register_rotate_revoke(served: tuple[Server, Cli], tmp_path: Path) -> None:
    _server, cli = served
    first = _new_key(cli, tmp_path / "first.key", "ph-tanger-02")
    r = cli("actors", "register", "ph-tanger-02", "--name", "Pharmacie du Détroit", "--role", "pharmacy",
            "--region", "Tanger-Tétouan-Al Hoceïma", "--city", "Tanger", "--gln", "6110000000017",
            "--public-key", str(tmp_path / "first.pub"), "--json")
    assert r.code == 0, r.err
    assert r.json()["receipt_verified"] is True and r.json()["receipt"]["chain"] == "actor/ph-tanger-02"
    shown = cli("actors", "show", "ph-tanger-02", "--json", data_dir=False).json()
    assert (shown["role"], shown["city"], shown["gln"]) == ("pharmacy", "Tanger", "6110000000017")
    assert [(k["key_id"], k["status"]) for k in shown["keys"]] == [(first, "active")]
    listed = cli("actors", "list", "--json", data_dir=False).json()
    assert "ph-tanger-02" in {a["id"] for a in listed}
    # the base64 form, as 'keys new' printed it; base64 holds '/' and '+', which are no path
    seed = next(bytes([i]) * 32 for i in range(256) if "/" in KeyPair.from_seed(bytes([i]) * 32).public.b64)
    slashed = KeyPair.from_seed(seed).public
    r = cli("actors", "register", "hosp-agadir-01", "--name", "CHU Agadir", "--role", "hospital", "--region",
            "Souss-Massa", "--public-key", slashed.b64)
    assert r.code == 0, r.err
    keys = cli("actors", "show", "hosp-agadir-01", "--json", data_dir=False).json()["keys"]
    assert [k["key_id"] for k in keys] == [slashed.key_id]

    # the registered key acts: it receives a shipment addressed to it
    cli.commission("TNG1", ["TNG-1", "TNG-2", "TNG-3"])
    cli.deliver("TNG1", ["TNG-1", "TNG-2", "TNG-3"], "maphar", "dist-north")
    r = cli("ship", "--gtin", GTIN, "--lot", "TNG1", "--to", "ph-tanger-02", "--serials", "TNG-1,TNG-2,TNG-3",
            "--json", actor="dist-north")
    assert r.code == 0, r.err
    assert cli("receive", r.json()["shipment"], "--key", str(tmp_path / "first.key"), data_dir=False).code == 0

    # rotated: the old key is refused, the new one dispenses
    second = _new_key(cli, tmp_path / "second.key", "ph-tanger-02")
    r = cli("actors", "rotate-key", "ph-tanger-02", "--public-key", str(tmp_path / "second.pub"))
    assert r.code == 0, r.err
    old = cli("dispense", "--gtin", GTIN, "--serial", "TNG-1", "--key", str(tmp_path / "first.key"), data_dir=False)
    assert old.code == 4 and len(old.err.strip().splitlines()) == 1, old.err
    new = cli("dispense", "--gtin", GTIN, "--serial", "TNG-1", "--key", str(tmp_path / "second.key"),
              data_dir=False)
    assert new.code == 0, new.err

    # revoked (a stolen laptop): the key signs nothing more
    r = cli("actors", "revoke-key", "ph-tanger-02", "--key-id", second, "--reason", "laptop stolen")
    assert r.code == 0, r.err
    stolen = cli("dispense", "--gtin", GTIN, "--serial", "TNG-2", "--key", str(tmp_path / "second.key"),
                 data_dir=False)
    assert stolen.code == 4, stolen.err
    keys = cli("actors", "show", "ph-tanger-02", "--json", data_dir=False).json()["keys"]
    assert [(k["key_id"], k["status"]) for k in keys] == [(first, "rotated"), (second, "revoked")]
    text = cli("actors", "show", "ph-tanger-02", data_dir=False)
    assert first in text.out and second in text.out  # whole, to be copied into --key-id


def test_refusals_append_nothing(served: tuple[Server, Cli], tmp_path: Path) -> None:
    server, cli = served
    _new_key(cli, tmp_path / "p.key", "ph-oujda-03")
    pub = str(tmp_path / "p.pub")
    base = ["actors", "register", "ph-oujda-03", "--name", "Pharmacie Oujda", "--region", "Oriental"]
    before = _size(server)
    cases = [
        ([*base, "--role", "chemist", "--public-key", pub], 2, "--role must be one of"),
        ([*base, "--role", "pharmacy", "--public-key", str(tmp_path / "p.key")], 2, "is a private key file"),
        ([*base, "--role", "pharmacy", "--public-key", "not-a-key"], 2, "--public-key"),
        ([*base, "--role", "pharmacy", "--public-key", pub, "--gln", "123"], 2, "GLN"),
        (["actors", "register", "PH", "--name", "X", "--region", "R", "--role", "pharmacy", "--public-key", pub],
         2, "actor id"),
        # an actor's own key is not the root key: the server refuses it
        ([*base, "--role", "pharmacy", "--public-key", pub, "--key", str(tmp_path / "p.key")], 4, "root key"),
        (["actors", "register", "ph-rabat", "--name", "X", "--region", "R", "--role", "pharmacy", "--public-key",
          pub], 3, "already registered"),
        ([*base, "--role", "pharmacy", "--public-key", pub, "--gln", "6113000000026"], 2, "check digit"),
        ([*base, "--role", "pharmacy", "--public-key", str(tmp_path / "missing.pub")], 2, "does not exist"),
        ([*base, "--role", "pharmacy", "--public-key", pub, "--name", "Pharmacie\nstatus revoked"], 2, "one line"),
        # errors about the actor or key named are refusals (3), not errors of the root key that signed (4)
        (["actors", "revoke-key", "ph-rabat", "--key-id", "ed25519:00", "--reason", "x"], 2, "not a key id"),
        (["actors", "revoke-key", "ph-rabat", "--key-id", "ed25519:" + "0" * 32, "--reason", "x"], 3,
         "not a key of"),
        (["actors", "revoke-key", "nobody-here", "--key-id", "ed25519:" + "0" * 32, "--reason", "x"], 3,
         "not registered"),
        (["actors", "rotate-key", "nobody-here", "--public-key", pub], 3, "not registered"),
    ]
    for argv, code, words in cases:
        r = cli(*argv)
        assert (r.code, r.out) == (code, ""), (argv, r.code, r.err)
        assert words in r.err and len(r.err.strip().splitlines()) == 1, (argv, r.err)
    # no root key in this data directory: a usage error naming the option
    r = cli(*base, "--role", "pharmacy", "--public-key", pub, "--data-dir", str(tmp_path / "empty"), data_dir=False)
    assert r.code == 2 and "--key" in r.err, r.err
    assert _size(server) == before
    assert cli("actors", "show", "ph-oujda-03", data_dir=False).code == 3


def test_a_receipt_that_fails_verification_still_says_the_event_was_recorded(served: tuple[Server, Cli],
                                                                             tmp_path: Path) -> None:
    """Pinned to another ledger's key, the receipt fails (exit 20), but the server did record the event: the line
    says so, lest the regulator send it again elsewhere."""
    _, cli = served
    _new_key(cli, tmp_path / "w.key", "ph-wrong-01")
    other = tmp_path / "other-ledger.key"
    assert cli("keys", "new", "--out", str(other), data_dir=False).code == 0
    r = cli("actors", "register", "ph-wrong-01", "--name", "Pharmacie X", "--role", "pharmacy", "--region", "Souss",
            "--public-key", str(tmp_path / "w.pub"), "--ledger-key", str(tmp_path / "other-ledger.pub"))
    assert r.code == 20 and len(r.err.strip().splitlines()) == 1, r.err
    assert "says it recorded event" in r.err and "not signed by the pinned ledger key" in r.err
    assert cli("actors", "show", "ph-wrong-01", data_dir=False).code == 0
