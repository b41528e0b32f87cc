"""scanner_cli.labels: GS1 DataMatrix and Digital Link QR round trips, files, PDF."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import zxingcpp  # type: ignore[import-untyped,unused-ignore]
from PIL import Image

from scanner_cli.labels import (
    datamatrix_png,
    label_filename,
    label_image,
    qr_png,
    write_label_pngs,
    write_label_sheet_pdf,
)
from scanner_cli.scantext import PackCode, parse_scanned_text, to_digital_link

EXPIRY = dt.date(2028, 12, 31)
PACKS = [
    ("09504000059101", EXPIRY, "L(1)/a", "S-001"),
    ("08903819987659", dt.date(2031, 6, 30), "BNav4Cam2", "S1ND6MPPFCGG6B869XES"),
    ("04006381333931", None, None, "7"),
    ("09504000059101", EXPIRY, "%&'*+,-.:;<=>?_\"!", "../../etc/passwd"),
]


def _fields(code: PackCode) -> tuple[str, dt.date | None, str | None, str | None]:
    return (code.gtin, code.expiry, code.lot, code.serial)


@pytest.mark.parametrize("pack", PACKS)
def test_datamatrix_round_trip_is_gs1(pack: tuple[str, dt.date | None, str | None, str]) -> None:
    image = datamatrix_png(*pack)
    results = zxingcpp.read_barcodes(image, text_mode=zxingcpp.TextMode.Plain)
    assert len(results) == 1
    result = results[0]
    assert result.symbology_identifier == "]d2"
    assert result.content_type == zxingcpp.ContentType.GS1
    if pack[2] is not None:
        assert "\x1d" in result.text  # GS after the variable-length lot
    assert _fields(parse_scanned_text("]d2" + result.text)) == pack


@pytest.mark.parametrize("pack", PACKS)
def test_qr_round_trip_with_zxing_and_zbar(pack: tuple[str, dt.date | None, str | None, str]) -> None:
    from pyzbar import pyzbar  # type: ignore[import-untyped,unused-ignore]

    gtin, expiry, lot, serial = pack
    uri = to_digital_link("https://id.example.org/p", gtin, lot, serial, expiry)
    image = qr_png(uri)
    zx = zxingcpp.read_barcodes(image, text_mode=zxingcpp.TextMode.Plain)
    zb = pyzbar.decode(image)
    assert [r.text for r in zx] == [uri]
    assert [r.data.decode() for r in zb] == [uri]
    assert _fields(parse_scanned_text(uri)) == pack


def test_label_image_holds_both_codes() -> None:
    label = label_image(*PACKS[0], base_url="https://id.example.org", product_name="Amoxicillin 500 mg")
    results = zxingcpp.read_barcodes(label, text_mode=zxingcpp.TextMode.Plain)
    assert sorted(r.format.name for r in results) == ["DataMatrix", "QRCode"]
    for r in results:
        assert _fields(parse_scanned_text(r.symbology_identifier + r.text)) == PACKS[0]


def test_unencodable_pack_raises() -> None:
    with pytest.raises(ValueError, match="Cannot encode"):
        datamatrix_png("09504000059101", EXPIRY, "lot with space", "S")


def test_write_label_pngs_cannot_escape_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "labels"
    packs = [
        PackCode("09504000059101", "L1", EXPIRY, "../../etc/x", "gs1", ""),
        PackCode("09504000059101", "L1", EXPIRY, "/abs/../x", "gs1", ""),
        PackCode("09504000059101", "L1", EXPIRY, "..", "gs1", ""),
        PackCode("09504000059101", "L1", EXPIRY, "a_b", "gs1", ""),
        PackCode("09504000059101", "L1", EXPIRY, "a/b", "gs1", ""),
    ]
    paths = write_label_pngs(packs, out, "https://id.example.org")
    assert len(set(paths)) == len(packs)
    for path in paths:
        assert path.parent == out.resolve()
        assert path.name.endswith(".png") and "/" not in path.name and not path.name.startswith(".")
        assert Image.open(path).size[0] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert not (tmp_path / "etc").exists()
    assert label_filename(packs[0]).startswith("09504000059101_etc_x_")


def test_label_sheet_pdf(tmp_path: Path) -> None:
    packs = [PackCode("09504000059101", "L1", EXPIRY, f"S{i:03}", "gs1", "") for i in range(25)]
    path = write_label_sheet_pdf(packs, tmp_path / "sheet.pdf", "https://id.example.org", "Product")
    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    assert data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") + data.count(b"/Type /Page>") >= 2
