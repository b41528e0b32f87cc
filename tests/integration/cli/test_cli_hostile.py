"""Hostile or odd input to the real ``athar`` command: whatever the user, a file or the server says, the command
answers one readable line on stderr and a documented exit code, never a traceback, and shows text verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner_cli.labels import qr_png
from tests.integration.cli.conftest import Cli, Result, Server
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
