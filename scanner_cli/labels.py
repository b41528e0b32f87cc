"""Printable pack labels: a GS1 DataMatrix, a Digital Link QR, and text.

The DataMatrix holds the element string (01)(17)(10)(21) in GS1 mode (FNC1 in
first position, so decoders report ``]d2``; GS separators after the
variable-length lot), as required for medicine packs. The QR holds the same
data as a GS1 Digital Link URI for patients' phones. Both are checked by
round-trip tests against zxing-cpp and ZBar.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Protocol

import qrcode  # type: ignore[import-untyped,unused-ignore]
import zxingcpp  # type: ignore[import-untyped,unused-ignore]
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from scanner_cli.scantext import to_digital_link, to_element_string

__all__ = [
    "LabelPack",
    "datamatrix_png",
    "label_filename",
    "label_image",
    "qr_png",
    "write_label_pngs",
    "write_label_sheet_pdf",
]

DM_MODULE_PX: Final = 8
QR_BOX_PX: Final = 6
_LABEL_HEIGHT: Final = 300
_PAD: Final = 16
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]+")


class LabelPack(Protocol):
    """Anything with a pack's four GS1 fields (e.g. ``scantext.PackCode``)."""

    @property
    def gtin(self) -> str: ...
    @property
    def expiry(self) -> dt.date | None: ...
    @property
    def lot(self) -> str | None: ...
    @property
    def serial(self) -> str | None: ...


def _bracketed(gtin: str, expiry: dt.date | None, lot: str | None, serial: str | None) -> str:
    """The element string with AIs in square brackets, zint's GS1 input syntax.

    Square brackets are outside GS1 character set 82, so unlike the
    parenthesised HRI they cannot collide with a lot or serial such as ``A(1)``.
    The values are validated by ``to_element_string`` first.
    """
    to_element_string(gtin, expiry, lot, serial)  # validates; raises ValueError
    parts = [f"[01]{gtin.zfill(14)}"]
    if expiry is not None:
        parts.append(f"[17]{expiry.strftime('%y%m%d')}")
    if lot is not None:
        parts.append(f"[10]{lot}")
    if serial is not None:
        parts.append(f"[21]{serial}")
    return "".join(parts)


def _zx_to_pil(zx_image: object) -> Image.Image:
    view = memoryview(zx_image)  # type: ignore[arg-type]
    height, width = view.shape[0], view.shape[1]  # type: ignore[index]
    return Image.frombytes("L", (width, height), view.tobytes())


def datamatrix_png(
    gtin: str,
    expiry: dt.date | None,
    lot: str | None,
    serial: str | None,
    *,
    module_px: int = DM_MODULE_PX,
) -> Image.Image:
    """A square GS1 DataMatrix (ECC 200, FNC1 first) for the pack, with quiet zone.

    Raises ValueError if a field cannot be encoded (see ``to_element_string``).
    """
    content = _bracketed(gtin, expiry, lot, serial)
    try:
        barcode = zxingcpp.create_barcode(content, zxingcpp.BarcodeFormat.DataMatrix, gs1=True, force_square=True)
    except Exception as exc:  # zxing-cpp raises a bare RuntimeError/ValueError
        msg = f"Cannot encode {content!r} as a GS1 DataMatrix: {exc}"
        raise ValueError(msg) from exc
    image = _zx_to_pil(barcode.to_image(scale=1, add_quiet_zones=True))
    size = (image.width * module_px, image.height * module_px)
    return image.resize(size, Image.Resampling.NEAREST)


def qr_png(digital_link_uri: str, *, box_px: int = QR_BOX_PX) -> Image.Image:
    """A QR code (error correction M, 4-module quiet zone) holding the URI."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_px, border=4)
    qr.add_data(digital_link_uri)
    qr.make(fit=True)
    image: Image.Image = qr.make_image(fill_color="black", back_color="white").get_image()
    return image.convert("L")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def label_image(
    gtin: str,
    expiry: dt.date | None,
    lot: str | None,
    serial: str | None,
    base_url: str,
    product_name: str | None = None,
) -> Image.Image:
    """One pack label: DataMatrix, QR, and GTIN / LOT / EXP / SN lines."""
    gtin14 = gtin.zfill(14)
    dm = datamatrix_png(gtin14, expiry, lot, serial)
    qr = qr_png(to_digital_link(base_url, gtin14, lot, serial, expiry))
    side = _LABEL_HEIGHT - 2 * _PAD
    dm = dm.resize((side, side * dm.height // dm.width), Image.Resampling.NEAREST)
    qr = qr.resize((side, side), Image.Resampling.NEAREST)

    lines = [
        f"GTIN {gtin14}",
        f"LOT  {lot or '-'}",
        f"EXP  {expiry.isoformat() if expiry else '-'}",
        f"SN   {serial or '-'}",
    ]
    font = _font(26)
    title_font = _font(30)
    text_width = max(420, *(int(font.getlength(line)) + 2 * _PAD for line in lines))
    width = _PAD + dm.width + _PAD + qr.width + 2 * _PAD + text_width
    label = Image.new("L", (width, _LABEL_HEIGHT), 255)
    label.paste(dm, (_PAD, _PAD))
    label.paste(qr, (2 * _PAD + dm.width, _PAD))
    draw = ImageDraw.Draw(label)
    x = 4 * _PAD + dm.width + qr.width
    y = _PAD + 8
    if product_name:
        draw.text((x, y), product_name[:40], fill=0, font=title_font)
        y += 50
    for line in lines:
        draw.text((x, y), line, fill=0, font=font)
        y += 44
    draw.rectangle((0, 0, width - 1, _LABEL_HEIGHT - 1), outline=0, width=2)
    return label


def _safe_part(value: str, limit: int = 32) -> str:
    return _UNSAFE.sub("_", value).strip("_")[:limit] or "x"


def label_filename(pack: LabelPack) -> str:
    """A file name for a pack's label that is safe on any file system.

    Only ``[A-Za-z0-9_-]`` survive from the GTIN and serial; a short hash of
    the exact fields keeps distinct packs (``a/b`` vs ``a_b``) apart.
    """
    ident = "\x1f".join([pack.gtin, pack.lot or "", pack.serial or "", pack.expiry.isoformat() if pack.expiry else ""])
    digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
    return f"{_safe_part(pack.gtin)}_{_safe_part(pack.serial or 'noserial')}_{digest}.png"


def write_label_pngs(packs: Iterable[LabelPack], out_dir: Path, base_url: str) -> list[Path]:
    """Write one PNG label per pack into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir.resolve()
    written: list[Path] = []
    for pack in packs:
        path = (root / label_filename(pack)).resolve()
        if path.parent != root:  # defence in depth; label_filename has no separators
            msg = f"Refusing to write label {path} outside {root}."
            raise ValueError(msg)
        image = label_image(pack.gtin, pack.expiry, pack.lot, pack.serial, base_url)
        image.save(path, format="PNG", dpi=(300, 300))
        written.append(path)
    return written


def write_label_sheet_pdf(
    packs: Sequence[LabelPack] | Iterable[LabelPack],
    path: Path,
    base_url: str,
    product_name: str | None = None,
) -> Path:
    """Write an A4 PDF sheet of labels, two columns, as many rows as fit."""
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_title("athar pack labels")
    margin, gap, columns = 10.0, 4.0, 2
    cell_w = (210.0 - 2 * margin - (columns - 1) * gap) / columns
    x = y = 0.0
    index = 0
    for pack in packs:
        image = label_image(pack.gtin, pack.expiry, pack.lot, pack.serial, base_url, product_name)
        cell_h = cell_w * image.height / image.width
        rows = max(1, int((297.0 - 2 * margin + gap) // (cell_h + gap)))
        slot = index % (columns * rows)
        if slot == 0:
            pdf.add_page()
        x = margin + (slot % columns) * (cell_w + gap)
        y = margin + (slot // columns) * (cell_h + gap)
        pdf.image(image.convert("RGB"), x=x, y=y, w=cell_w, h=cell_h)
        index += 1
    if index == 0:
        pdf.add_page()
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path
