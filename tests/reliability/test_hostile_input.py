"""Hostile input beyond tests/fuzz and tests/unit: oversized and streamed bodies, nesting bombs, 200,001 serials,
unicode tricks in GS1 fields, giant query strings and headers, path traversal in label file names. Every answer
is a clear 4xx problem (never a 5xx) and nothing is written."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from api.routes.events import parse_json
from api.settings import Settings
from ledger import errors as E
from tests.integration.server import running_server
from tests.reliability.harness import REPO, now_clock
from tests.support import GTIN, World, make_world

EXPIRY = dt.date.today() + dt.timedelta(days=700)


@dataclass
class Site:
    world: World
    http: httpx.Client

    def raw(self, body: bytes, **headers: str) -> httpx.Response:
        return self.http.post("/v1/events", content=body, headers={"content-type": "application/json", **headers})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    world = make_world(tmp / "home", url, clock=now_clock())
    world.commission("H1", 3)
    settings = Settings(data_dir=tmp / "home", database_url=url, overdue_check_seconds=0,
                        public_reports_per_minute=10_000)
    with running_server(settings) as base, httpx.Client(base_url=base, timeout=60) as http:
        yield Site(world, http)
    world.db.dispose()


def refused(r: httpx.Response, *statuses: int) -> dict[str, object]:
    assert r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    assert r.status_code in statuses, f"{r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["code"] and body["detail"]
    return dict(body)


def raw_status(site: Site, request: bytes) -> int:
    host, port = str(site.http.base_url.host), int(site.http.base_url.port or 80)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


def test_oversized_bodies(site: Site) -> None:
    size = site.world.ledger.size()
    limit = 16 * 1024 * 1024

    def chunks() -> Iterator[bytes]:  # no content-length: the server must count what it streams
        yield b'{"event": "'
        for _ in range(17):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    refused(site.http.post("/v1/events", content=chunks()), 413)
    for length in ("-1", "abc", "99999999999999999999"):  # httpx will not send these: a raw socket does
        assert raw_status(site, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: " + length.encode()
                          + b"\r\nConnection: close\r\n\r\n{}") in (400, 413), length
    refused(site.http.post("/v1/reports", content=b"x" * (limit + 1)), 413)
    refused(site.http.post("/v1/bundles", content=b"[" * (limit + 1)), 413)
    assert site.world.ledger.size() == size


def test_nesting_bombs_in_pydantic_bodies(site: Site) -> None:
    size = site.world.ledger.size()
    deep = b"[" * 100_000 + b"]" * 100_000
    refused(site.http.post("/v1/bundles", content=deep, headers={"content-type": "application/json"}), 400, 401, 422)
    refused(site.http.post("/v1/reports", content=deep, headers={"content-type": "application/json"}), 400, 422)
    refused(site.raw(b'{"event":' * 50 + b"1" + b"}" * 50), 422)
    assert site.world.ledger.size() == size


_BYPASS = b'{"x": "' + b"]" * 200_000 + b'", "event": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"


def test_nesting_bomb_hidden_behind_brackets_in_a_string(site: Site) -> None:
    size = site.world.ledger.size()
    refused(site.raw(_BYPASS), 422)
    assert site.world.ledger.size() == size


def test_nesting_bomb_in_parse_json_is_refused_before_parsing() -> None:
    with pytest.raises(E.InvalidEvent, match="nested"):
        parse_json(_BYPASS)


def test_brackets_inside_a_string_are_not_nesting() -> None:
    doc = parse_json(json.dumps({"event": {"reason": "{" * 40}}).encode())
    assert doc["event"]["reason"] == "{" * 40


def test_200001_serials(site: Site) -> None:
    w = site.world
    size = w.ledger.size()
    serials = [f"Z{i:07d}" for i in range(200_001)]
    signed = w.as_("maphar").commission(GTIN, "HUGE", EXPIRY, "X", serials)
    body = refused(site.raw(json.dumps(signed.to_json()).encode()), 422)
    assert "200000" in str(body["detail"])
    ship = w.as_("maphar").ship(GTIN, "H1", "dist-north", serials=serials)
    refused(site.raw(json.dumps(ship.to_json()).encode()), 422)
    refused(site.http.post("/v1/bundles", json={"batches": [f"{GTIN}/L{i}" for i in range(1001)]}), 401, 422)
    assert w.ledger.size() == size


TRICKS = {
    "RTL override": "AB\u202eC1",
    "NUL": "AB\x00C1",
    "Cyrillic A homoglyph": "\u0410BC1",
    "zero-width space": "AB\u200bC1",
    "fullwidth digits": "\uff11\uff12\uff13",
    "combining accent": "A\u0301BC",
    "space": "A BC",
    "too long": "A" * 21,
}


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_unicode_tricks_in_lots_and_serials_are_refused(site: Site, trick: str) -> None:
    w = site.world
    size = w.ledger.size()
    text = TRICKS[trick]
    for signed in (w.as_("maphar").commission(GTIN, text, EXPIRY, "X", ["OKSERIAL1"]),
                   w.as_("maphar").commission(GTIN, "OKLOT9", EXPIRY, "X", [text]),
                   w.as_("ph-rabat").dispense(GTIN, text)):
        refused(site.raw(json.dumps(signed.to_json()).encode()), 422)
    refused(site.http.get(f"/v1/packs/{GTIN}/{quote(text, safe='')}"), 422)
    refused(site.http.get(f"/v1/packs/{GTIN}/OK1", params={"lot": text}), 422)
    refused(site.http.post("/v1/reports", json={"gtin": GTIN, "serial": text, "category": "other"}), 422)
    gtin = "\uff10" + GTIN[1:] if trick == "fullwidth digits" else GTIN
    dl = site.http.get(f"/01/{quote(gtin)}/10/{quote(text, safe='')}/21/OK1", headers={"accept": "application/json"})
    assert dl.status_code < 500 and dl.status_code >= 400, dl.text
    assert w.ledger.size() == size


# Python's isdigit() and regex \d accept every script's digits; a GTIN spelled in them would look, on a screen, like
# another maker's real one (the same digits in Arabic-Indic form, with an ASCII check digit that still checks out).
DIGIT_TRICKS = {
    "Arabic-Indic": "".join(chr(0x0660 + int(c)) for c in GTIN[:-1]) + GTIN[-1],
    "fullwidth": "".join(chr(0xFF10 + int(c)) for c in GTIN),
    "Devanagari": "".join(chr(0x0966 + int(c)) for c in GTIN),
    "superscript two": GTIN[:-1].replace("2", "\u00b2") + GTIN[-1],
}


@pytest.mark.parametrize("trick", sorted(DIGIT_TRICKS))
def test_gtins_in_other_digits_than_ascii_are_refused(site: Site, trick: str) -> None:
    w = site.world
    size = w.ledger.size()
    gtin = DIGIT_TRICKS[trick]
    for signed in (w.as_("maphar").commission(gtin, "DIG1", EXPIRY, "X", ["DIGSERIAL1"]),
                   w.as_("ph-rabat").dispense(gtin, "DIGSERIAL1")):
        assert refused(site.raw(json.dumps(signed.to_json()).encode()), 422)["code"] == "invalid_identifier"
    refused(site.http.get(f"/v1/packs/{quote(gtin)}/OK1"), 422)
    refused(site.http.post("/v1/reports", json={"gtin": gtin, "category": "other"}), 422)
    dl = site.http.get(f"/01/{quote(gtin)}/21/OK1", headers={"accept": "application/json"})
    assert 400 <= dl.status_code < 500, dl.text
    assert w.ledger.size() == size


def test_giant_query_strings_and_headers(site: Site) -> None:
    size = site.world.ledger.size()
    r = site.http.get(f"/v1/packs/{GTIN}/H1S00000", params={"lot": "L" * 10_000})
    refused(r, 422)
    for n in (100_000, 1_000_000):  # beyond what httpx will send: a raw socket
        status = raw_status(site, f"GET /v1/packs/{GTIN}/H1S00000?lot={'L' * n} HTTP/1.1\r\nHost: x\r\n"
                                  "Connection: close\r\n\r\n".encode())
        assert status in (0, 400, 413, 414, 431), (n, status)  # 0: the HTTP layer closed the connection
    r = site.http.get("/v1/log/entries?" + "&".join(f"start={i}" for i in range(5000)) + "&end=1")
    assert 400 <= r.status_code < 500
    headers = {"Athar-Actor": "regulator", "Athar-Key-Id": "ed25519:" + "0" * 32, "Athar-Timestamp": "1e10",
               "Athar-Signature": "%%%"}
    refused(site.http.get("/v1/alerts", headers=headers), 401)
    refused(site.http.get("/v1/alerts", headers={**headers, "Athar-Timestamp": "9" * 5000}), 401)
    refused(site.http.get("/v1/alerts", headers={**headers, "Athar-Timestamp": "0", "Athar-Actor": "x" * 8000}), 401)
    assert site.world.ledger.size() == size


def test_label_serials_cannot_escape_the_output_directory(tmp_path: Path) -> None:
    """`athar label` takes serials from the command line; GS1 allows '/' and '.', so the file names must not."""
    out = tmp_path / "work" / "labels"
    serials = "../../escape,..,/abs/x,a/../../b,./.hidden,%2e%2e%2fenc"
    r = subprocess.run([sys.executable, "-m", "scanner_cli.main", "label", "--gtin", GTIN, "--lot", "L1",
                        "--expiry", EXPIRY.isoformat(), "--serials", serials, "--out", str(out), "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    written = [Path(p) for p in json.loads(r.stdout)["labels"]]
    assert len(written) == 6
    assert all(p.resolve().parent == out.resolve() and not p.name.startswith(".") for p in written)
    assert sorted(p.name for p in (tmp_path).rglob("*") if p.is_file()) == sorted(p.name for p in written)
    # an unreadable serial (not GS1) is a usage error naming it, with nothing written
    bad = subprocess.run([sys.executable, "-m", "scanner_cli.main", "label", "--gtin", GTIN, "--lot", "L1",
                          "--expiry", EXPIRY.isoformat(), "--serials", "OK1,AB\u202eC", "--out", str(tmp_path / "b")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and not (tmp_path / "b").exists(), (bad.returncode, bad.stderr)


def test_parse_json_refuses_what_json_allows() -> None:
    for raw in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1, "a": 2}', b"\xef\xbb\xbf{}",
                b'{"a": ' + b"9" * 5000 + b"}"):  # an integer Python refuses to convert (over 4,300 digits)
        with pytest.raises(E.InvalidEvent):
            parse_json(raw)


def test_a_huge_integer_is_a_problem_not_a_crash(site: Site) -> None:
    size = site.world.ledger.size()
    body = b'{"event": {"v": ' + b"9" * 5000 + b'}, "key_id": "k", "signature": "s"}'
    for path in ("/v1/events", "/v1/events?via=router"):
        refused(site.http.post(path, content=body, headers={"content-type": "application/json"}), 422)
    assert site.world.ledger.size() == size
