"""Turn what a barcode scanner produces into a pack identity, and back.

A pack of medicine carries a GS1 DataMatrix holding a GS1 element string
(GS1 General Specifications section 7.8) and may carry a QR code holding a
GS1 Digital Link URI (GS1 Digital Link Standard: URI Syntax, 1.4). Both name
the same four things: the product (AI 01, GTIN-14), the batch (AI 10, lot),
its expiry (AI 17, YYMMDD) and the pack (AI 21, serial).

All GS1 parsing and encoding is delegated to ``biip``. This module only
normalises the many ways a scanner spells the same data before handing it
to ``biip``:

- an AIM symbology identifier prefix (``]d2``, ``]Q3``, ``]C1``, ``]e0``...),
  ISO/IEC 15424;
- the FNC1 group separator, transmitted as the byte ``0x1d``, or typed by a
  keyboard-wedge scanner as ``<GS>``, ``{GS}``, ``[GS]``, ``^]``, ``\\x1d``,
  ``\\u001d`` or the visible symbol U+241D;
- a leading FNC1 or trailing carriage return / line feed.

>>> parse_scanned_text("]d20109504000059101172812311012AB\\x1d21XY9").lot
'12AB'
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from biip import ParseError
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString, GS1ElementStrings
from biip.gs1_messages import GS1Message
from biip.gtin import Gtin

__all__ = [
    "GS",
    "PackCode",
    "ScanTextError",
    "Source",
    "parse_scanned_text",
    "to_digital_link",
    "to_element_string",
    "to_hri",
]

GS: Final = "\x1d"
"""ASCII 29, the group separator that stands for FNC1 inside a symbol."""

Source = Literal["gs1", "digital-link", "gtin"]

# Spellings of the group separator seen from keyboard-wedge scanners and in
# hand-typed test data. None of their characters can start or end a value in
# the GS1 AI encodable character set 82 in a way that is ambiguous, except
# ``<GS>`` (``<`` ``>`` ``G`` ``S`` are all in set 82): a lot literally
# containing ``<GS>`` cannot be told apart and is read as a separator.
_GS_SPELLINGS: Final = (
    "<GS>",
    "<gs>",
    "{GS}",
    "{gs}",
    "[GS]",
    "[gs]",
    "^]",
    "\\x1d",
    "\\x1D",
    "\\u001d",
    "\\u001D",
    "\u241d",
)

# AIM symbology identifiers (ISO/IEC 15424) whose data is a GS1 element string.
_GS1_SYMBOLOGIES: Final = frozenset({"]C1", "]d2", "]Q3", "]e0", "]J1", "]e1", "]e2"})
_AIM_PREFIX: Final = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
# Bare digits read as a GTIN: 13 or 14 digits always (EAN-13, ITF-14); 8 and
# 12 digits only when the AIM identifier says EAN/UPC (]E...), since e.g.
# "11120230" is also a valid-looking element string (AI 11).
_GTIN_ONLY: Final = re.compile(r"^(\d{13}|\d{14})$", re.ASCII)
_GTIN_ONLY_EAN: Final = re.compile(r"^(\d{8}|\d{12}|\d{13}|\d{14})$", re.ASCII)
_MAX_QUOTED: Final = 120
# biip's messages quote the input again, whole: the message as a whole is capped too, so it stays one line
_MAX_MESSAGE: Final = 300
_PATTERN_MISMATCH: Final = re.compile(r"^Failed to match '(?P<data>.*)' with GS1 AI \((?P<ai>\d+)\) pattern", re.S)
_QUOTED_LONG: Final = re.compile("'([^']{" + str(_MAX_QUOTED + 1) + ",})'", re.S)
# the GS1 date AIs (YYMMDD), named as a reader of the label would
_DATE_AIS: Final = {"11": "production date", "12": "due date", "13": "packaging date", "15": "best before date",
                    "16": "sell by date", "17": "expiry"}


class ScanTextError(ValueError):
    """Scanned text that is not a usable GS1 pack code.

    The message is a full sentence that quotes the input, e.g.
    ``"'(01)123' is not a GS1 code: ..."``.
    """


@dataclass(frozen=True)
class PackCode:
    """The identity of one pack as read from its barcode.

    ``gtin`` is always the 14-digit GTIN with a valid check digit. ``expiry``
    has GS1's day-00 rule and century window applied. ``source`` says which
    form the text was in; ``raw`` keeps the text exactly as scanned.
    """

    gtin: str
    lot: str | None
    expiry: dt.date | None
    serial: str | None
    source: Source
    raw: str


def _quote(text: str) -> str:
    if len(text) > _MAX_QUOTED:
        text = text[:_MAX_QUOTED] + "..."
    return repr(text)


def _error(raw: str, what: str, detail: str) -> ScanTextError:
    """``'<raw>' <what>: <detail>``, at most _MAX_MESSAGE characters."""
    msg = f"{_quote(raw)} {what}: {detail}"
    if len(msg) > _MAX_MESSAGE:
        msg = msg[:_MAX_MESSAGE - 3] + "..."
    return ScanTextError(msg)


def _explain(exc: ParseError) -> str:
    """biip's message in the label's terms: its regular expressions and repeated input are no help to a reader."""
    message = str(exc)
    if match := _PATTERN_MISMATCH.match(message):
        ai, value = match["ai"], match["data"][len(match["ai"]):]
        if ai in _DATE_AIS:  # fixed length: what follows the six digits is the next AI, not the date
            return f"{_DATE_AIS[ai]} {_quote(value[:6])} is not a valid date (YYMMDD)."
        return f"the value {_quote(value)} of AI ({ai}) does not have the form GS1 requires."
    return _QUOTED_LONG.sub(lambda m: _quote(m.group(1)), message)


def _normalise_separators(text: str) -> str:
    if GS in text:  # the scanner sends real separators: text spellings are data
        return text
    for spelling in _GS_SPELLINGS:
        text = text.replace(spelling, GS)
    return text


def _is_uri(text: str) -> bool:
    return "://" in text[:12] or text.lower().startswith(("http:", "https:", "mailto:"))


def _check_query_keys(uri: str) -> None:
    """Reject all-digit query keys that are not GS1 AIs (GS1 DL 1.4, 4.9), and an AI given twice with different
    values.

    biip 5.2 ignores the first silently and keeps the last of the second; GS1's reference parser refuses both.
    """
    try:
        query = urlsplit(uri).query
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for 'https://[::1'
        msg = f"it is not a valid URI ({exc})."
        raise ParseError(msg) from exc
    seen: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if not (key.isascii() and key.isdigit()):
            continue
        # biip keeps only the last of a repeated AI: a code that says two things is refused, not half-read
        if seen.setdefault(key, value) != value:
            msg = f"it gives AI ({key}) twice, with different values ({_quote(seen[key])} and {_quote(value)})."
            raise ParseError(msg)
        try:
            ai = GS1ApplicationIdentifier.extract(key)
        except ParseError:
            ai = None
        if ai is None or ai.ai != key:
            msg = f"numeric query parameter {key!r} is not a GS1 Application Identifier."
            raise ParseError(msg)


def _from_elements(raw: str, element_strings: GS1ElementStrings, source: Source) -> PackCode:
    values: dict[str, str] = {}
    for es in element_strings:
        if error := (es.gtin_error or es.sscc_error or es.gln_error):
            raise _error(raw, "is not a GS1 code", str(error))
        # the same AI twice with different values (two serials, two expiries; a Digital Link query contradicting
        # its path) names no one pack: which one a reader would take is arbitrary
        first = values.setdefault(es.ai.ai, es.value)
        if first != es.value:
            raise _error(raw, "is not a usable pack code",
                         f"it gives AI ({es.ai.ai}) twice, with different values ({_quote(first)} and "
                         f"{_quote(es.value)}).")
    gtin_es = element_strings.get(ai="01")
    if gtin_es is None or gtin_es.gtin is None:
        raise _error(raw, "is not a pack code", "it carries no GTIN (AI 01).")
    lot_es = element_strings.get(ai="10")
    serial_es = element_strings.get(ai="21")
    expiry_es = element_strings.get(ai="17")
    return PackCode(
        gtin=gtin_es.gtin.as_gtin_14(),
        lot=lot_es.value if lot_es else None,
        expiry=expiry_es.date if expiry_es else None,
        serial=serial_es.value if serial_es else None,
        source=source,
        raw=raw,
    )


def parse_scanned_text(text: str) -> PackCode:
    """Parse scanner output into a :class:`PackCode`.

    Accepts a GS1 element string (with or without an AIM symbology
    identifier, with any common spelling of the group separator), its
    bracketed human-readable form ``(01)...(17)...``, a GS1 Digital Link URI,
    or a bare GTIN-8/12/13/14 as read from an EAN/UPC symbol.

    Raises:
        ScanTextError: if the text is not one of these, carries no GTIN, or
            has a bad check digit, an invalid date or an unknown AI.
    """
    raw = text
    body = text.strip("\r\n\t ")
    symbology: str | None = None
    if match := _AIM_PREFIX.match(body):
        symbology = match.group(0)
        body = body[3:]
    unseparated = body
    body = _normalise_separators(body.strip(GS)).strip(GS)

    if not body:
        raise _error(raw, "is not a GS1 code", "it is empty.")
    try:
        if _is_uri(body):
            _check_query_keys(body)
            uri = GS1DigitalLinkURI.parse(body)
            return _from_elements(raw, uri.element_strings, "digital-link")
        if body.startswith("("):
            message = GS1Message.parse_hri(body)
            return _from_elements(raw, message.element_strings, "gs1")
        is_ean = symbology is not None and symbology.startswith("]E")
        if (is_ean and _GTIN_ONLY_EAN.match(unseparated)) or (
            symbology not in _GS1_SYMBOLOGIES and _GTIN_ONLY.match(unseparated)
        ):
            gtin = Gtin.parse(body)
            return PackCode(gtin.as_gtin_14(), None, None, None, "gtin", raw)
        message = GS1Message.parse(body)
        return _from_elements(raw, message.element_strings, "gs1")
    except ParseError as exc:
        raise _error(raw, "is not a GS1 code", _explain(exc)) from exc
    except ScanTextError:
        raise
    except ValueError as exc:  # biip leaves some of the standard library's errors through (urllib, date)
        raise _error(raw, "is not a GS1 code", str(exc)) from exc


def _element_strings(gtin: str, expiry: dt.date | None, lot: str | None, serial: str | None) -> GS1ElementStrings:
    """Build and validate the (01)(17)(10)(21) element strings with biip.

    Raises ValueError when a value is not encodable (bad GTIN, character
    outside set 82, too long) or the expiry cannot be written as YYMMDD that
    reads back as the same date under the GS1 century window.
    """
    parts: list[str] = []
    try:
        parts.append("01" + Gtin.parse(gtin).as_gtin_14())
        if expiry is not None:
            parts.append("17" + expiry.strftime("%y%m%d"))
        if lot is not None:
            parts.append("10" + lot)
        if serial is not None:
            parts.append("21" + serial)
        elements = GS1ElementStrings(GS1ElementString.parse(p) for p in parts)
    except ParseError as exc:
        msg = f"Cannot encode pack (gtin={gtin!r}, lot={lot!r}, serial={serial!r}): {exc}"
        raise ValueError(msg) from exc
    if expiry is not None:
        es = elements.get(ai="17")
        if es is None or es.date != expiry:
            msg = (
                f"Cannot encode expiry {expiry.isoformat()} as GS1 YYMMDD: it would read back "
                f"as {es.date if es else None} under the GS1 century window."
            )
            raise ValueError(msg)
    for value, name in ((lot, "lot"), (serial, "serial")):
        if value is not None and GS in value:
            msg = f"Cannot encode {name} {value!r}: it contains a group separator."
            raise ValueError(msg)
    return elements


def to_element_string(gtin: str, expiry: dt.date | None, lot: str | None, serial: str | None) -> str:
    """The unbracketed element string (01)(17)(10)(21), as a scanner reports it.

    FNC1 in first position is not included; a ``\\x1d`` follows the
    variable-length lot when another field follows it.

    >>> to_element_string("09504000059101", dt.date(2028, 12, 31), "L1", "S1")
    '01095040000591011728123110L1\\x1d21S1'
    """
    return GS1Message.from_element_strings(_element_strings(gtin, expiry, lot, serial)).value


def to_hri(gtin: str, expiry: dt.date | None, lot: str | None, serial: str | None) -> str:
    """The human-readable interpretation, e.g. ``(01)...(17)...(10)...(21)...``."""
    return GS1Message.from_element_strings(_element_strings(gtin, expiry, lot, serial)).as_hri()


def to_digital_link(
    base_url: str,
    gtin: str,
    lot: str | None,
    serial: str | None,
    expiry: dt.date | None,
) -> str:
    """A GS1 Digital Link URI ``<base_url>/01/<gtin>/10/<lot>/21/<serial>?17=<yymmdd>``.

    ``base_url`` may carry a path prefix (``https://resolver.example/id``).
    Lot and serial are percent-encoded by biip as GS1 Digital Link requires.

    >>> to_digital_link("https://id.example", "09504000059101", "A/1", "7", None)
    'https://id.example/01/09504000059101/10/A%2F1/21/7'
    """
    base = urlsplit(base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        msg = f"Base URL {base_url!r} must be an absolute http(s) URL."
        raise ValueError(msg)
    elements = _element_strings(gtin, expiry, lot, serial)
    built = urlsplit(GS1DigitalLinkURI.from_element_strings(elements).as_uri())
    path = base.path.rstrip("/") + built.path
    return urlunsplit((base.scheme, base.netloc, path, built.query, ""))
