"""`athar audit watch` against real servers: an honest growing log passes, a forked one raises the alarm, and a
witness's cosignature is served with the checkpoint. `athar audit verify --url` audits through the API."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from api.settings import Settings
from ledger.checkpoint import verify_cosignature
from ledger.home import open_ledger
from signing import KeyPair
from signing.keys import write_private_key, write_public_key
from tests.integration.server import running_server
from tests.support import GTIN, make_world


def athar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner_cli.main", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_watch_accepts_growth_and_detects_a_fork(tmp_path: Path) -> None:
    home = tmp_path / "home"
    world = make_world(home, f"sqlite:///{home}/ledger.db")
    world.commission("W1", 3)
    witness = KeyPair.generate()
    write_public_key(home / "keys" / "witnesses" / "witness.ma.pub", witness.public)
    write_private_key(tmp_path / "witness.key", witness)
    write_private_key(tmp_path / "regulator.key", world.keys["regulator"])
    world.db.dispose()
    fork_home = tmp_path / "fork"
    shutil.copytree(home, fork_home)  # same keys, same history so far

    state = tmp_path / "trusted.checkpoint"
    common = ["--data-dir", str(home), "--state", str(state), "--once"]
    honest_settings = Settings(data_dir=home, overdue_check_seconds=0)
    with running_server(honest_settings) as honest:
        first = athar("audit", "watch", "--url", honest, *common)
        assert first.returncode == 0, first.stderr
        world.ledger.submit(world.as_("maphar").commission(GTIN, "W2", dt.date(2029, 1, 1), "X", ["W2S1"]))
        grown = athar("audit", "watch", "--url", honest, *common, "--witness-key", str(tmp_path / "witness.key"),
                      "--witness-name", "witness.ma")
        assert grown.returncode == 0, grown.stderr
        assert "extends" in grown.stdout and "cosigned checkpoint size" in grown.stdout
        # a witness the server does not know is told so, even though the served note carries witness.ma's line
        write_private_key(tmp_path / "stranger.key", KeyPair.generate())
        stranger = athar("audit", "watch", "--url", honest, *common, "--witness-key", str(tmp_path / "stranger.key"),
                         "--witness-name", "stranger.ma")
        assert stranger.returncode == 4 and len(stranger.stderr.strip().splitlines()) == 1, stranger.stderr
        served = httpx.get(honest + "/v1/log/checkpoint").text
        assert verify_cosignature(served, "witness.ma", witness.public) > 0
        remote = athar("audit", "verify", "--url", honest, "--data-dir", str(home), "--actor", "regulator",
                       "--key", str(tmp_path / "regulator.key"))
        assert remote.returncode == 0, remote.stderr
        assert "intact" in remote.stdout and "1 witness cosignatures verified" in remote.stdout
    # the local audit checks the stored cosignature with keys/witnesses/witness.ma.pub, or with --witness
    local = athar("audit", "verify", "--data-dir", str(home), "--json")
    assert local.returncode == 0, local.stderr
    assert '"cosignatures": 1' in local.stdout
    write_public_key(tmp_path / "impostor.pub", KeyPair.generate().public)
    wrong = athar("audit", "verify", "--data-dir", str(home), "--witness", f"witness.ma={tmp_path / 'impostor.pub'}")
    assert wrong.returncode == 20 and "cosignature of witness witness.ma" in wrong.stderr, wrong.stderr
    bad = athar("audit", "verify", "--data-dir", str(home), "--witness", "witness.ma")
    assert bad.returncode == 2 and "NAME=FILE" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    (home / "keys" / "witnesses" / "witness.ma.pub").unlink()
    unchecked = athar("audit", "verify", "--data-dir", str(home))
    assert unchecked.returncode == 0 and "1 cosignature(s) of witness witness.ma not checked" in unchecked.stdout

    # the fork: the copied ledger appends something else under the same keys
    fork_url = f"sqlite:///{fork_home}/ledger.db"  # the copied config.json still names the honest database
    fork, fork_db = open_ledger(fork_home, fork_url)
    fork.submit(world.as_("maphar").commission(GTIN, "EVIL", dt.date(2029, 1, 1), "X", ["E1"]))
    fork.submit(world.as_("maphar").commission(GTIN, "EVIL2", dt.date(2029, 1, 1), "X", ["E2"]))
    fork_db.dispose()
    with running_server(Settings(data_dir=fork_home, database_url=fork_url, overdue_check_seconds=0)) as forked:
        alarm = athar("audit", "watch", "--url", forked, *common)
    assert alarm.returncode == 20
    assert "ALARM" in alarm.stderr and ("fork" in alarm.stderr or "rewritten" in alarm.stderr)
    world.db.dispose()


def test_watch_raises_the_alarm_when_the_log_denies_a_checkpoint_it_signed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    world = make_world(home, f"sqlite:///{home}/ledger.db")
    world.commission("D1", 2)
    state = tmp_path / "trusted.checkpoint"
    common = ["--data-dir", str(home), "--state", str(state), "--once"]
    with running_server(Settings(data_dir=home, overdue_check_seconds=0)) as base:
        assert athar("audit", "watch", "--url", base, *common).returncode == 0
        trusted = world.ledger.size()
        world.ledger.submit(world.as_("maphar").commission(GTIN, "D2", dt.date(2029, 1, 1), "X", ["D2S1"]))
        with sqlite3.connect(home / "ledger.db") as db:  # the attacker: append-only triggers dropped, row deleted
            db.execute("DROP TRIGGER checkpoints_no_delete")
            db.execute("DELETE FROM checkpoints WHERE tree_size = ?", (trusted,))
        alarm = athar("audit", "watch", "--url", base, *common)
    assert alarm.returncode == 20, alarm.stderr
    assert "ALARM" in alarm.stderr and f"denies the checkpoint of tree size {trusted}" in alarm.stderr
    world.db.dispose()


def test_watch_refuses_a_bad_state_or_witness_key_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_world(home, f"sqlite:///{home}/ledger.db").db.dispose()
    garbage = tmp_path / "garbage.checkpoint"
    garbage.write_text("garbage")
    nowhere = "http://127.0.0.1:9"  # each is refused before the log is asked anything
    for args, says in [(["--state", str(tmp_path / "no-such-dir" / "x")], "does not exist"),
                       (["--state", str(garbage)], "does not hold a checkpoint"),
                       (["--witness-key", str(tmp_path / "none.key"), "--witness-name", "w"], "does not exist")]:
        r = athar("audit", "watch", "--url", nowhere, "--data-dir", str(home), "--once", *args)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_regulator_handles_alerts_from_the_command_line(tmp_path: Path) -> None:
    import contextlib
    import json

    from ledger import errors as E

    home = tmp_path / "home"
    world = make_world(home, f"sqlite:///{home}/ledger.db")
    serials = world.commission("AL1", 3)
    world.deliver("maphar", "ph-rabat", "AL1", serials[:1])
    world.deliver("maphar", "ph-fes", "AL1", serials[1:2])
    world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    with contextlib.suppress(E.DuplicateDispense):
        world.ledger.submit(world.as_("ph-fes").dispense(GTIN, serials[0]))
    write_private_key(tmp_path / "regulator.key", world.keys["regulator"])
    world.db.dispose()
    who = ["--data-dir", str(home), "--actor", "regulator", "--key", str(tmp_path / "regulator.key")]
    with running_server(Settings(data_dir=home, overdue_check_seconds=0)) as base:
        listed = athar("alerts", "list", "--url", base, *who, "--kind", "duplicate_dispense", "--json")
        assert listed.returncode == 0, listed.stderr
        alerts = json.loads(listed.stdout)
        assert len(alerts) == 1 and alerts[0]["suspect"] == "ph-fes" and "clone" in alerts[0]["cause"]
        closed = athar("alerts", "update", alerts[0]["id"], "--status", "closed", "--outcome", "false_alarm",
                       "--finding", "scanner fault at ph-fes", "--url", base, *who)
        assert closed.returncode == 0, closed.stderr
        stats = json.loads(athar("alerts", "stats", "--url", base, *who, "--json").stdout)
        assert stats["false_alert_rate"] == 1.0
        for n in range(3):  # three more alerts: a page of two, then the rest
            world.ledger.submit(world.as_("ph-rabat").report(GTIN, "other", serial=f"PAGE{n}"))
        first = athar("alerts", "list", "--url", base, *who, "--limit", "2")
        assert first.returncode == 0 and "more may follow: add --before" in first.stderr, first.stderr
        wide = subprocess.run([sys.executable, "-m", "scanner_cli.main", "alerts", "list", "--url", base, *who,
                               "--kind", "report", "--limit", "1"], capture_output=True, text=True, timeout=60,
                              check=False, env={**os.environ, "COLUMNS": "200"})
        (row,) = [line for line in wide.stdout.splitlines() if "PAGE" in line or "reported by" in line]
        cells = [c.strip() for c in row.split("│") if c.strip()]
        assert cells[2:5] == ["open", "—", "other reported by ph-rabat"], cells  # the reporter is no suspect
        page = json.loads(athar("alerts", "list", "--url", base, *who, "--limit", "2", "--json").stdout)
        rest = json.loads(athar("alerts", "list", "--url", base, *who, "--before", str(page[-1]["index"]),
                                "--gtin", GTIN, "--json").stdout)
        assert [a["serial"] for a in page] == ["PAGE2", "PAGE1"] and rest[0]["serial"] == "PAGE0"
        assert len(page) + len(rest) == 4
        pharmacy = athar("alerts", "list", "--url", base, "--data-dir", str(home), "--actor", "ph-rabat",
                         "--key", str(tmp_path / "regulator.key"))
        assert pharmacy.returncode == 4  # a key that is not ph-rabat's
