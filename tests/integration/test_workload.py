"""``python -m bench.workload`` prepares a workload for someone else's load generator against a running server:
its supply chain is set up on that server, and every prepared submission and path is one the server accepts."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx

from api.settings import Settings
from bench.workload import prepare
from ledger.home import init_home
from tests.integration.server import running_server

ROOT = Path(__file__).resolve().parents[2]


def test_prepared_appends_and_lookups_are_accepted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_home(home, database_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    with running_server(Settings(data_dir=home)) as base:
        files = prepare(base, home, 200, tmp_path / "load", say=lambda _line: None)
        appends = files["appends"].read_bytes().splitlines()
        lookups = files["lookups"].read_text().splitlines()
        targets = [json.loads(line) for line in files["vegeta"].read_text().splitlines()]
        assert len(appends) == len(targets) == 200 and lookups
        assert [base64.b64decode(t["body"]) for t in targets] == appends
        assert {t["url"] for t in targets} == {base + "/v1/events"}
        with httpx.Client(base_url=base, timeout=30) as client:
            for body in appends[:40]:
                r = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
                assert r.status_code == 201, r.text
            r = client.post("/v1/events", content=appends[0], headers={"content-type": "application/json"})
            assert r.status_code == 200 and r.json()["replayed"]  # each prepared event appends once
            for path in lookups[:20]:
                r = client.get(path)
                assert r.status_code == 200 and r.json()["verdict"] in ("AUTHENTIC", "ALREADY_DISPENSED"), r.text


def test_clones_are_refused_once_their_dispenses_are_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_home(home, database_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    with running_server(Settings(data_dir=home)) as base:
        files = prepare(base, home, 60, tmp_path / "load", say=lambda _line: None, clones=True)
        clones = files["clones"].read_bytes().splitlines()
        assert len(clones) == sum(1 for line in files["appends"].read_bytes().splitlines()
                                  if json.loads(line)["event"]["type"] == "dispense")
        with httpx.Client(base_url=base, timeout=30) as client:
            for body in files["appends"].read_bytes().splitlines():
                r = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
                assert r.status_code == 201, r.text
            for body in clones[:10]:
                r = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
                assert r.status_code == 409 and r.json()["code"] == "duplicate_dispense", r.text


def test_a_data_directory_without_the_root_key_is_one_readable_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "bench.workload", "--data-dir", str(tmp_path / "nothing"),
                        "--url", "http://127.0.0.1:9", "--events", "10", "--out", str(tmp_path / "load")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "root private key" in r.stderr


def test_an_output_directory_it_cannot_write_stops_it_before_the_server_is_touched(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = subprocess.run([sys.executable, "-m", "bench.workload", "--data-dir", str(tmp_path / "nothing"),
                        "--url", "http://127.0.0.1:9", "--events", "10", "--out", str(blocker)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r
    assert r.stderr.startswith("error: cannot write the workload into") and len(r.stderr.strip().splitlines()) == 1
