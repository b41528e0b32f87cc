"""Find and decode barcodes in an image: photo or scan in, symbols out.

zxing-cpp reads first, over all its formats, with its own robustness options
on (rotation, downscaling, inverted symbols). When it finds nothing, pyzbar
(ZBar) gets a try at QR and 1-D codes, then zxing-cpp retries on a bounded
series of preprocessed variants (upscaled, sharpened, median-filtered,
contrast-stretched, binarised...) until one yields a symbol or the time
budget runs out. Symbols found by several passes are reported once.

Errors::

    ValueError
    └── DecodeError   the file is missing, not an image, truncated, or too large

An image that decodes but holds no readable code gives an empty list.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zxingcpp  # type: ignore[import-untyped,unused-ignore]
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_PIXELS",
    "DecodeError",
    "Point",
    "Symbol",
    "decode_image",
]

MAX_PIXELS: Final = 100_000_000
"""Images larger than this (width x height) are refused before decoding."""

_WORK_MAX_SIDE: Final = 2400
"""Huge photos are scaled down to this longest side before the thorough passes."""

_QUICK_SIDE: Final = 1600
"""Long side of the first, quick decode of a large JPEG."""

PACK_FORMATS: Final = ("DataMatrix", "QRCode")
"""What the quick first pass looks for: the GS1 DataMatrix and the Digital Link QR of a serialized pack.
Other formats (a 1D EAN-13 alone, say) are found by the thorough passes that follow."""

_SMALL_SIDE: Final = 1000
"""Images whose longest side is below this are also tried upscaled."""

DEFAULT_TIME_BUDGET: Final = 3.0
"""Seconds after which the fallback passes stop (the first pass always runs)."""

# AIM symbology identifiers that announce GS1 data (ISO/IEC 15424, GS1 GenSpec 5.1.2).
_GS1_AIM: Final = frozenset({"]C1", "]d2", "]Q3", "]e0", "]J1", "]d8"})
_ZBAR_FORMATS: Final = {
    "QRCODE": "QRCode",
    "EAN13": "EAN13",
    "EAN8": "EAN8",
    "UPCA": "UPCA",
    "UPCE": "UPCE",
    "CODE128": "Code128",
    "CODE39": "Code39",
    "CODE93": "Code93",
    "I25": "ITF",
    "DATABAR": "DataBar",
    "DATABAR_EXP": "DataBarExpanded",
    "CODABAR": "Codabar",
    "PDF417": "PDF417",
}

Point = tuple[int, int]


class DecodeError(ValueError):
    """The input cannot be decoded as an image at all (not: "no code found")."""


@dataclass(frozen=True)
class Symbol:
    """One barcode found in an image.

    ``text`` is the decoded content as a scanner would transmit it: for GS1
    symbols the element string with ``\\x1d`` between fields and without the
    symbology identifier, which is given separately in ``symbology_identifier``
    (``]d2`` for GS1 DataMatrix, ``]Q3`` GS1 QR, ``]Q1`` plain QR, ``""`` when
    the decoder does not report it). ``position`` holds the four corners
    (top-left, top-right, bottom-right, bottom-left) in the input image's
    pixel coordinates, when known.
    """

    format: str
    text: str
    symbology_identifier: str
    is_gs1: bool
    decoder: str
    position: tuple[Point, Point, Point, Point] | None


def _describe(source: str | Path | Image.Image) -> str:
    return repr(str(source)) if not isinstance(source, Image.Image) else "the image"


def _check_size(image: Image.Image, name: str) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        msg = f"Refusing to decode {name}: {width}x{height} pixels is more than {MAX_PIXELS // 1_000_000} megapixels."
        raise DecodeError(msg)
    if width == 0 or height == 0:
        msg = f"Cannot decode {name}: it is empty ({width}x{height} pixels)."
        raise DecodeError(msg)


def _load(source: str | Path | Image.Image, draft_side: int | None = None) -> Image.Image:
    """Open, size-check, then load the image as 8-bit greyscale.

    With ``draft_side``, a large JPEG is decoded at a reduced scale (libjpeg's DCT scaling: 1/2, 1/4, 1/8)
    to about that many pixels on its long side: a 12-megapixel photo then decodes in a tenth of the time.
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        _check_size(source, name)
        image = source
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source)  # reads the header only
        except Image.DecompressionBombError as exc:
            msg = f"Refusing to decode {name}: {exc}"
            raise DecodeError(msg) from exc
        except FileNotFoundError as exc:
            msg = f"Cannot read {name}: no such file."
            raise DecodeError(msg) from exc
        except UnidentifiedImageError as exc:
            msg = f"Cannot read {name}: it is not an image in a format Pillow knows (PNG, JPEG, WebP...)."
            raise DecodeError(msg) from exc
        except OSError as exc:
            msg = f"Cannot read {name}: {exc.strerror or exc}."
            raise DecodeError(msg) from exc
        _check_size(image, name)
        if image.format == "JPEG":
            # decoded straight to greyscale: libjpeg then skips the colour conversion (a camera frame decodes
            # in half the time); and reduced, for a large photo
            size = image.size
            if draft_side and max(size) > 2 * draft_side:
                ratio = draft_side / max(size)
                size = (max(1, int(image.width * ratio)), max(1, int(image.height * ratio)))
            image.draft("L", size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            if image is source:  # the caller's image: turned upright on a copy
                image = ImageOps.exif_transpose(image) or image
            else:  # turned upright in place, if its EXIF says so (a copy otherwise costs a frame's worth)
                ImageOps.exif_transpose(image, in_place=True)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Transparent background -> white, as it would be printed.
                rgba = image.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, "white")
                image = Image.alpha_composite(canvas, rgba)
            return image.convert("L")
    except (OSError, ValueError, SyntaxError) as exc:
        msg = f"Cannot read {name}: the image data is damaged or truncated ({exc})."
        raise DecodeError(msg) from exc


def _original_size(source: str | Path | Image.Image, loaded: Image.Image) -> tuple[int, int]:
    """The full-resolution size (the loaded image may be a reduced decode), oriented like the loaded one."""
    if isinstance(source, Image.Image):
        return source.size
    with Image.open(source) as header:
        w, h = header.size
    return (w, h) if (loaded.width >= loaded.height) == (w >= h) else (h, w)


def _zxing_formats(formats: Iterable[str] | None) -> object:
    if formats is None:
        return None
    names = list(formats)
    try:
        return zxingcpp.barcode_formats_from_str(",".join(names))
    except ValueError as exc:
        msg = f"Unknown barcode format in {names!r}: {exc}"
        raise ValueError(msg) from exc


def _scaled_position(barcode: object, scale: float) -> tuple[Point, Point, Point, Point]:
    pos = barcode.position  # type: ignore[attr-defined]

    def pt(p: object) -> Point:
        return (round(p.x / scale), round(p.y / scale))  # type: ignore[attr-defined]

    return (pt(pos.top_left), pt(pos.top_right), pt(pos.bottom_right), pt(pos.bottom_left))


def _read_zxing(image: Image.Image, zx_formats: object, scale: float, binarizer: object | None = None,
                *, thorough: bool = True) -> list[Symbol]:
    kwargs: dict[str, Any] = {
        "try_rotate": thorough,
        "try_downscale": True,
        "try_invert": thorough,
        "text_mode": zxingcpp.TextMode.Plain,
    }
    if zx_formats is not None:
        kwargs["formats"] = zx_formats
    if binarizer is not None:
        kwargs["binarizer"] = binarizer
    found: list[Symbol] = []
    for barcode in zxingcpp.read_barcodes(image, **kwargs):
        aim = str(barcode.symbology_identifier)
        found.append(
            Symbol(
                format=str(barcode.format.name),
                text=str(barcode.text),
                symbology_identifier=aim,
                is_gs1=barcode.content_type == zxingcpp.ContentType.GS1 or aim in _GS1_AIM,
                decoder="zxing-cpp",
                position=_scaled_position(barcode, scale),
            )
        )
    return found


def _read_zbar(image: Image.Image, wanted: set[str] | None, scale: float) -> list[Symbol]:
    try:
        from pyzbar import pyzbar  # type: ignore[import-untyped,unused-ignore]
    except (ImportError, OSError):  # libzbar0 missing: zxing-cpp alone is fine
        return []
    found: list[Symbol] = []
    for result in pyzbar.decode(image):
        fmt = _ZBAR_FORMATS.get(result.type, result.type)
        if wanted is not None and fmt not in wanted:
            continue
        poly = [(round(p.x / scale), round(p.y / scale)) for p in result.polygon]
        position = (poly[0], poly[1], poly[2], poly[3]) if len(poly) == 4 else None
        found.append(
            Symbol(
                format=fmt,
                text=result.data.decode("utf-8", errors="replace"),
                symbology_identifier="",
                is_gs1=False,
                decoder="zbar",
                position=position,
            )
        )
    return found


def _resize(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _variants(image: Image.Image) -> list[tuple[str, float, Callable[[], Image.Image]]]:
    """Preprocessed versions to retry on, most often useful first.

    Each entry is (name, scale relative to ``image``, factory); factories are
    lazy so that the time budget also bounds the preprocessing.
    """
    small = max(image.size) < _SMALL_SIDE
    out: list[tuple[str, float, Callable[[], Image.Image]]] = []
    if small:
        out.append(("upscale-2", 2.0, lambda: _resize(image, 2.0)))
    out += [
        ("sharpen", 1.0, lambda: image.filter(ImageFilter.SHARPEN)),
        ("median-3", 1.0, lambda: image.filter(ImageFilter.MedianFilter(3))),
        ("downscale-0.75", 0.75, lambda: _resize(image, 0.75)),
        ("autocontrast", 1.0, lambda: ImageOps.autocontrast(image, cutoff=1)),
    ]
    if small:
        out += [
            ("upscale-3", 3.0, lambda: _resize(image, 3.0)),
            ("upscale-2-blur", 2.0, lambda: _resize(image, 2.0).filter(ImageFilter.GaussianBlur(1))),
        ]
    out += [
        ("blur-1", 1.0, lambda: image.filter(ImageFilter.GaussianBlur(1))),
        ("blur-2", 1.0, lambda: image.filter(ImageFilter.GaussianBlur(2))),
        ("equalize", 1.0, lambda: ImageOps.equalize(image)),
        ("downscale-0.5", 0.5, lambda: _resize(image, 0.5)),
    ]
    return out


def _add(found: list[Symbol], new: Sequence[Symbol]) -> None:
    seen = {(s.format, s.text) for s in found}
    for symbol in new:
        if (symbol.format, symbol.text) not in seen:
            seen.add((symbol.format, symbol.text))
            found.append(symbol)


def decode_image(
    source: str | Path | Image.Image,
    *,
    formats: Iterable[str] | None = None,
    time_budget: float = DEFAULT_TIME_BUDGET,
) -> list[Symbol]:
    """Decode every barcode in an image file or PIL image.

    ``formats`` restricts the search to zxing-cpp format names
    (``"DataMatrix"``, ``"QRCode"``, ``"EAN13"``, ``"Code128"``...); None
    means all. Fallback passes stop once one of them finds a symbol or
    ``time_budget`` seconds have passed.

    Raises:
        DecodeError: if the file is missing, not an image, damaged, or over
            :data:`MAX_PIXELS`.
    """
    format_list = list(formats) if formats is not None else None
    zx_formats = _zxing_formats(format_list)
    wanted = set(format_list) if format_list is not None else None
    deadline = time.monotonic() + time_budget
    found: list[Symbol] = []

    # First, the way a scanner sees most packs: upright, dark on light, from a reduced decode of a big photo,
    # looking for the 2D codes a serialized pack carries (searching every 1D format too doubles the time).
    quick = _load(source, draft_side=_QUICK_SIDE)
    original = _original_size(source, quick)
    quick_formats = zx_formats if zx_formats is not None else _zxing_formats(PACK_FORMATS)
    _add(found, _read_zxing(quick, quick_formats, quick.width / original[0], thorough=False))
    if found:
        return found

    grey = _load(source) if quick.size != original else quick
    scale = 1.0
    if max(grey.size) > _WORK_MAX_SIDE:
        scale = _WORK_MAX_SIDE / max(grey.size)
        grey = _resize(grey, scale)

    _add(found, _read_zxing(grey, zx_formats, scale))
    if found:
        return found
    _add(found, _read_zbar(grey, wanted, scale))
    if found:
        return found
    for _name, factor, make in _variants(grey):
        if time.monotonic() > deadline:
            break
        _add(found, _read_zxing(make(), zx_formats, scale * factor))
        if found:
            return found
    if time.monotonic() <= deadline:
        _add(found, _read_zxing(grey, zx_formats, scale, zxingcpp.Binarizer.GlobalHistogram))
    return found
