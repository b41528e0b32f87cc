"""Hostile or odd input to the real ``athar`` command: whatever the user, a file or the server says, the command
answers one readable line on stderr and a documented exit code, never a traceback, and shows text verbatim."""

from __future__ import annotations

import datetime as dt
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import ledger.bundle
from ledger.verdict import Verdict
from scanner_cli.client import AtharClient
from scanner_cli.identity import pinned_trust, resolve_identity
from scanner_cli.labels import qr_png
from scanner_cli.scantext import parse_scanned_text
from scanner_cli.verify import online_verdict
from tests.integration.cli.conftest import REPO, Cli, Result, Server
from tests.reference import REFERENCE_DIR as REFERENCE
from tests.support import GTIN

pytestmark = pytest.mark.slow
GS = "<GS>"


@pytest.fixture(scope="module")
def cli(served: tuple[Server, Cli]) -> Cli:
    return served[1]


def one_line(r: Result) -> str:
    """The single error line of a failed command (no traceback, nothing else on stderr)."""
    assert "Traceback" not in r.err, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    return lines[0]


def element(serial: str, lot: str, expiry: str = "280630") -> str:
    return f"]d201{GTIN}17{expiry}10{lot}{GS}21{serial}"


@pytest.mark.parametrize("text", ["[/]", "[bold red]x[/bold red]", "see [/] here :pill:"])
def test_scanned_text_is_shown_verbatim(cli: Cli, text: str) -> None:
    r = cli("scan", "--text", text)
    assert r.code == 2
    assert repr(text) in one_line(r)


def test_qr_code_holding_markup(cli: Cli, tmp_path: Path) -> None:
    image = tmp_path / "qr.png"
    qr_png("see [/] here").save(image)
    r = cli("scan", str(image))
    assert r.code == 2
    assert "'see [/] here'" in one_line(r)


def test_missing_file_with_markup_in_its_name(cli: Cli, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing[/].png")
    r = cli("scan", missing)
    assert r.code == 2
    assert "missing[/].png" in one_line(r)


def test_server_problem_detail_with_markup(cli: Cli) -> None:
    cli.commission("MARKUP1", ["MK1"])
    cli.deliver("MARKUP1", ["MK1"], "maphar", "ph-rabat")
    r = cli("recall", "--gtin", GTIN, "--lot", "MARKUP1", "--reason", "contamination [/] x", actor="maphar")
    assert r.code == 0, r.err
    r = cli("dispense", "--gtin", GTIN, "--serial", "MK1", actor="ph-rabat")
    assert r.code == 3
    assert "contamination [/] x" in one_line(r)


def test_malformed_uri_on_stdin_is_one_error_and_the_batch_goes_on(cli: Cli) -> None:
    cli.commission("URI1", ["URI1A"])
    r = cli("scan", "--stdin", input=f"https://[::1\n{element('URI1A', 'URI1')}\n")
    assert r.code == 2  # an unreadable line, and an authentic pack
    assert "line 1: 'https://[::1' is not a GS1 code: it is not a valid URI" in one_line(r)
    assert "AUTHENTIC" in r.out and "URI1A" in r.out


@pytest.mark.parametrize("text", [
    f"(01){GTIN}(21)A(21)OTHER",
    f"(01){GTIN}(17)280131(21)A(17)290131",
    f"https://id.example.org/01/{GTIN}/21/A?21=OTHER",
    f"https://id.example.org/01/{GTIN}/21/A?17=280131&17=290131",
])
def test_a_code_giving_an_ai_twice_with_different_values_is_refused(cli: Cli, text: str) -> None:
    r = cli("scan", "--text", text)
    assert r.code == 2
    assert "twice, with different values" in one_line(r)


def test_bad_date_and_long_code_give_a_short_plain_line(cli: Cli) -> None:
    r = cli("scan", "--text", f"(01){GTIN}(17)281331(21)A")
    assert r.code == 2
    assert "expiry '281331' is not a valid date (YYMMDD)" in one_line(r) and "pattern" not in r.err
    photo = REFERENCE / "barcodes" / "qrcode" / "qrcode-2_high-res-1.jpg"
    if photo.exists():
        r = cli("scan", str(photo))
        assert r.code == 2
        assert len(one_line(r)) < 400


@pytest.mark.parametrize(("url", "reason"), [
    ("http://[::1", "is not a valid URL"),
    ("http://256.1.1.1:80", "is not a valid URL: Invalid IPv4 address"),
    ("http://", "names no host"),
    ("http://127.0.0.1:99999", "port 99999 is out of range"),
])
def test_malformed_url_is_a_usage_error(cli: Cli, url: str, reason: str) -> None:
    r = cli("scan", "--url", url, "--text", element("ANY1", "ANY"))
    assert r.code == 2
    line = one_line(r)
    assert repr(url) in line and reason in line


class _Canned(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's one canned response."""

    def do_GET(self) -> None:
        status, content_type, body = self.server.canned  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[Callable[[int, str, bytes], str]]:
    """A real HTTP server that is not athar: set what it answers, get its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def answer(status: int, content_type: str, body: bytes) -> str:
        server.canned = (status, content_type, body)  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()


HTML_404 = b"<!DOCTYPE html>\n<html>\n<head><title>404</title></head>\n<body>\n<h1>Not Found</h1>\n" \
           b"<p>Nothing here [/].</p>\n</body>\n</html>\n"


@pytest.mark.parametrize(("status", "content_type", "body", "said"), [
    (200, "text/html", b"<html><body>Directory listing</body></html>", "not JSON"),
    (200, "application/json", b"[1,2]", "a JSON list where an object was expected"),
    (200, "application/json", b'{"verdict":"AUTHENTIC","provenance":[{"index":"x"}]}', "index is 'x'"),
    (200, "application/json", b'{"verdict":"AUTHENTIC","expiry":"notadate"}', "expiry 'notadate' is not a date"),
    (200, "application/json", b'{"verdict":"AUTHENTIC","lot":["x"]}', "lot is list"),
    (404, "text/html", HTML_404, "HTTP 404 (text/html)"),
    (500, "text/plain", b"Internal Server Error", "HTTP 500 (text/plain)"),
])
def test_a_server_that_is_not_athar(cli: Cli, other_server: Callable[[int, str, bytes], str], status: int,
                                    content_type: str, body: bytes, said: str) -> None:
    url = other_server(status, content_type, body)
    r = cli("scan", "--url", url, "--text", element("ANY1", "ANY"), "--text", element("ANY2", "ANY"))
    assert r.code == 5
    line = one_line(r)
    assert "not an athar API answer" in line and said in line, line
    assert "<html" not in line.lower()


def test_a_base_url_with_one_segment_too_many(served: tuple[Server, Cli], cli: Cli) -> None:
    """'.../v1' reaches athar, whose every answer is then a well-formed 404 problem: still no athar API there."""
    r = cli("scan", "--url", served[0].url + "/v1", "--text", element("ANY1", "ANY"), "--text",
            element("ANY2", "ANY"))
    assert r.code == 5
    assert f"no athar API at {served[0].url}/v1" in one_line(r)


def test_a_reader_clock_past_the_expiry_day_is_not_a_lying_server(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server judges a pack on its expiry day AUTHENTIC; a reader whose clock is already past that day's end must
    not call that TAMPERED: the signed bundle is judged at its own time, as the server's verdict was. (The ledger
    takes no batch expiring today, so the expiry is tomorrow and the reader's clock a day ahead: the same case as a
    server at 23:57 and a reader 3 minutes ahead.)"""
    expiry = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    r = cli("batch", "commission", "--gtin", GTIN, "--lot", "SKEW1", "--expiry", expiry.isoformat(), "--product",
            "Amoxicilline 500 mg", "--serials", "SKEW1A", "--channel", "private", actor="maphar")
    assert r.code == 0, r.err
    cli.deliver("SKEW1", ["SKEW1A"], "maphar", "ph-rabat")
    skew = dt.datetime.combine(expiry + dt.timedelta(days=1), dt.time(0, 1), dt.UTC) - dt.datetime.now(dt.UTC)

    class Ahead(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Ahead:
            real = dt.datetime.now(tz) + skew
            return cls.fromisoformat(real.isoformat())

    monkeypatch.setattr(ledger.bundle, "dt", SimpleNamespace(**{**vars(dt), "datetime": Ahead}))
    identity = resolve_identity(None, "ph-rabat", cli.data_dir)
    trust = pinned_trust(cli.data_dir, None, None)
    code = parse_scanned_text(f"(01){GTIN}(17){expiry.strftime('%y%m%d')}(10)SKEW1(21)SKEW1A")
    with AtharClient(cli.url, identity) as api:
        result = online_verdict(api, code, identity, trust)
    assert result.verdict is Verdict.AUTHENTIC, result.reason
    assert result.checked


def test_stdin_bom_empty_input_and_closed_stdout(cli: Cli) -> None:
    cli.commission("BOM1", ["BOM1A"])
    r = cli("scan", "--stdin", input="\ufeff" + element("BOM1A", "BOM1") + "\n")
    assert r.code == 0 and "AUTHENTIC" in r.out, r.err
    for empty in ("", "\n  \n"):
        r = cli("scan", "--stdin", input=empty)
        assert r.code == 2 and "no codes on standard input" in one_line(r)
    argv = [sys.executable, "-m", "scanner_cli.main", "scan", "--json", "--text", element("BOM1A", "BOM1"),
            "--url", cli.url]
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, check=False,
                          env={**os.environ, "NO_COLOR": "1"}, pass_fds=(), close_fds=True,
                          preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2
    assert "standard output is closed" in one_line(Result(proc.returncode, "", proc.stderr))


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """A Ctrl-C while a command waits (here for codes on stdin) ends it with one line and the shell's 130, not
    a traceback, and not a silent exit that leaves the user guessing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATHAR_")}
    proc = subprocess.Popen([sys.executable, "-m", "scanner_cli.main", "scan", "--stdin", "--url",
                             "http://127.0.0.1:9", "--data-dir", str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        # once it waits on stdin (a Ctrl-C during start-up, while Python imports, is Python's own)
        wchan = Path(f"/proc/{proc.pid}/wchan")
        deadline = time.monotonic() + 60
        while "pipe" not in wchan.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.decode() == "error: interrupted\n"
    assert out == b""
