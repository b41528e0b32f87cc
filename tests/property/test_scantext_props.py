"""Property tests: every encoder output parses back, in every scanner spelling."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scanner_cli.scantext import (
    ScanTextError,
    parse_scanned_text,
    to_digital_link,
    to_element_string,
    to_hri,
)

# GS1 AI encodable character set 82 (GS1 General Specifications, figure 7.11-1).
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


def check_digit(body: str) -> str:
    """GS1 mod-10 check digit (weights 3,1,3... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


gtins = st.text("0123456789", min_size=13, max_size=13).map(lambda b: b + check_digit(b))
values = st.text(CSET82, min_size=1, max_size=20)
# Inside the GS1 century window for any current year 2026-2048.
dates = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2070, 12, 31))


@given(gtins, st.none() | dates, st.none() | values, st.none() | values)
def test_element_string_round_trip(gtin: str, expiry: dt.date | None, lot: str | None, serial: str | None) -> None:
    text = to_element_string(gtin, expiry, lot, serial)
    # Without a real GS byte, a literal "<GS>" is read as a keyboard-wedge separator.
    assume("\x1d" in text or "<GS>" not in text)
    code = parse_scanned_text(text)
    assert (code.gtin, code.expiry, code.lot, code.serial) == (gtin, expiry, lot, serial)
    assert code.source == "gs1"


@given(
    gtins,
    dates,
    values,
    values,
    st.sampled_from(["\x1d", "<GS>", "\\x1d", "{GS}", "^]"]),
    st.sampled_from(["", "]d2", "]Q3", "]C1", "]e0"]),
)
def test_separator_spellings_and_prefixes_agree(
    gtin: str, expiry: dt.date, lot: str, serial: str, separator: str, prefix: str
) -> None:
    assume("<GS>" not in lot + serial)  # a lot literally holding "<GS>" is ambiguous
    text = to_element_string(gtin, expiry, lot, serial)
    reference = parse_scanned_text(text)
    spelled = parse_scanned_text(prefix + text.replace("\x1d", separator))
    assert (spelled.gtin, spelled.expiry, spelled.lot, spelled.serial) == (
        reference.gtin,
        reference.expiry,
        reference.lot,
        reference.serial,
    )


@given(gtins, st.none() | dates, st.none() | values, st.none() | values)
def test_hri_round_trip(gtin: str, expiry: dt.date | None, lot: str | None, serial: str | None) -> None:
    # biip's HRI parser splits at "(", so values holding "(" only round-trip unbracketed.
    assume("(" not in (lot or "") + (serial or ""))
    code = parse_scanned_text(to_hri(gtin, expiry, lot, serial))
    assert (code.gtin, code.expiry, code.lot, code.serial) == (gtin, expiry, lot, serial)


@given(
    gtins,
    st.none() | dates,
    st.none() | values,
    st.none() | values,
    st.sampled_from(["https://id.example.org", "http://localhost:8000/res/"]),
)
def test_digital_link_round_trip(
    gtin: str, expiry: dt.date | None, lot: str | None, serial: str | None, base: str
) -> None:
    uri = to_digital_link(base, gtin, lot, serial, expiry)
    code = parse_scanned_text(uri)
    assert (code.gtin, code.expiry, code.lot, code.serial) == (gtin, expiry, lot, serial)
    assert code.source == "digital-link"


def _another(value: str) -> str:
    """A different value of the same length (lot and serial are at most 20 characters)."""
    return value[:-1] + ("Y" if value.endswith("X") else "X")


@given(gtins, dates, values, values, st.sampled_from(["10", "17", "21"]), st.booleans())
def test_an_ai_given_twice_must_agree(
    gtin: str, expiry: dt.date, lot: str, serial: str, ai: str, hri: bool
) -> None:
    """The same AI twice with the same value reads as once; with another value the code is refused."""
    assume("(" not in lot + serial)
    given_value = {"10": lot, "17": expiry.strftime("%y%m%d"), "21": serial}[ai]
    other = {"10": _another(lot), "17": (expiry + dt.timedelta(days=1)).strftime("%y%m%d"), "21": _another(serial)}[ai]
    base = to_hri(gtin, expiry, lot, serial)
    reference = parse_scanned_text(base)
    again = parse_scanned_text(f"{base}({ai}){given_value}")
    assert (again.gtin, again.expiry, again.lot, again.serial) == (
        reference.gtin, reference.expiry, reference.lot, reference.serial)
    with pytest.raises(ScanTextError, match=rf"AI \({ai}\) twice, with different values"):
        parse_scanned_text(f"{base}({ai}){other}" if hri else f"({ai}){other}{base}")


@given(gtins, dates, values, st.sampled_from(["10", "17", "21"]), st.booleans())
def test_a_digital_link_query_may_not_contradict_itself_or_its_path(
    gtin: str, expiry: dt.date, value: str, ai: str, in_path: bool
) -> None:
    first = expiry.strftime("%y%m%d") if ai == "17" else value
    second = (expiry + dt.timedelta(days=1)).strftime("%y%m%d") if ai == "17" else _another(value)
    if in_path and ai != "17":  # lot and serial live in the path, the query contradicts it
        uri = to_digital_link("https://id.example.org", gtin, first if ai == "10" else None,
                              first if ai == "21" else "S1", None) + f"?{ai}={quote(second, safe='')}"
    else:
        uri = (to_digital_link("https://id.example.org", gtin, None, "S1", None)
               + f"?{ai}={quote(first, safe='')}&{ai}={quote(second, safe='')}")
    with pytest.raises(ScanTextError, match=rf"AI \({ai}\) twice, with different values"):
        parse_scanned_text(uri)


@given(st.text(max_size=2000))
def test_any_text_gives_a_pack_or_one_short_error_line(text: str) -> None:
    try:
        parse_scanned_text(text)
    except ScanTextError as exc:
        message = str(exc)
        assert len(message) <= 300 and "\n" not in message
