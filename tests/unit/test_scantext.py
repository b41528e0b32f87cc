"""Known answers for scanner_cli.scantext from shared/reference/gs1/element-strings.json."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from scanner_cli.scantext import (
    PackCode,
    ScanTextError,
    parse_scanned_text,
    to_digital_link,
    to_element_string,
    to_hri,
)
from tests.reference import REFERENCE_DIR

CASES_FILE = REFERENCE_DIR / "gs1" / "element-strings.json"
pytestmark = pytest.mark.skipif(not CASES_FILE.exists(), reason="reference data missing")


def _cases(kind: str) -> list[dict[str, Any]]:
    if not CASES_FILE.exists():
        return []
    data = json.loads(CASES_FILE.read_text(encoding="utf-8"))
    cases: list[dict[str, Any]] = data["elementStrings"] + data["digitalLinkUris"]
    if kind == "pack":
        return [c for c in cases if c["valid"] and "gtin" in c["expected"]]
    if kind == "nogtin":
        return [c for c in cases if c["valid"] and "gtin" not in c["expected"]]
    return [c for c in cases if not c["valid"]]


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["id"] for c in cases]


def _date(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


@pytest.mark.parametrize("case", _cases("pack"), ids=_ids(_cases("pack")))
def test_valid_case_parses_to_expected_fields(case: dict[str, Any]) -> None:
    code = parse_scanned_text(case["input"])
    expected = case["expected"]
    assert code.gtin == expected["gtin"]
    assert code.lot == expected.get("lot")
    assert code.serial == expected.get("serial")
    assert code.expiry == _date(expected.get("expiry"))
    assert code.raw == case["input"]
    assert code.source == ("digital-link" if case["id"].startswith("dl") else "gs1")


@pytest.mark.parametrize("case", _cases("pack"), ids=_ids(_cases("pack")))
def test_valid_case_hri_and_symbology_prefix_give_same_pack(case: dict[str, Any]) -> None:
    base = parse_scanned_text(case["input"])
    if "hri" in case:
        assert _fields(parse_scanned_text(case["hri"])) == _fields(base)
    if "symbologyIdentifier" in case and not case["input"].startswith("]"):
        prefixed = case["symbologyIdentifier"] + case["input"]
        assert _fields(parse_scanned_text(prefixed)) == _fields(base)


def _fields(code: PackCode) -> tuple[str, str | None, dt.date | None, str | None]:
    return (code.gtin, code.lot, code.expiry, code.serial)


@pytest.mark.parametrize("case", _cases("nogtin"), ids=_ids(_cases("nogtin")))
def test_valid_gs1_without_gtin_is_not_a_pack(case: dict[str, Any]) -> None:
    with pytest.raises(ScanTextError, match="GTIN"):
        parse_scanned_text(case["input"])


@pytest.mark.parametrize("case", _cases("bad"), ids=_ids(_cases("bad")))
def test_invalid_case_raises(case: dict[str, Any]) -> None:
    with pytest.raises(ScanTextError) as info:
        parse_scanned_text(case["input"])
    message = str(info.value)
    assert message.startswith(repr(case["input"]))
    assert message.endswith((".", ")", "'"))
    biip_message = case["expectedError"].get("message")
    implementations = case["expectedError"].get("messagesByImplementation") or {}
    if biip_message and "jodal/biip 5.2.0" not in implementations and "GTIN (AI 01)" not in message:
        assert biip_message in message


def test_error_message_quotes_input() -> None:
    with pytest.raises(ScanTextError, match=r"^'\(01\)123' is not a GS1 code: "):
        parse_scanned_text("(01)123")
    with pytest.raises(ScanTextError, match="empty"):
        parse_scanned_text("]d2\r\n")
    with pytest.raises(ScanTextError, match="check digit"):
        parse_scanned_text("4006381333932")


SAMPLE = "0109504000059101172812311012AB\x1d21XY9"
EXPECTED = ("09504000059101", "12AB", dt.date(2028, 12, 31), "XY9")


@pytest.mark.parametrize("prefix", ["", "]d2", "]Q3", "]C1", "]e0", "\x1d"])
@pytest.mark.parametrize("separator", ["\x1d", "<GS>", "\\x1d", "{GS}", "^]", "[GS]", "\u241d"])
def test_separator_and_prefix_spellings(prefix: str, separator: str) -> None:
    text = prefix + SAMPLE.replace("\x1d", separator) + "\r\n"
    code = parse_scanned_text(text)
    assert _fields(code) == EXPECTED
    assert code.source == "gs1"


def test_bare_gtin_and_ean_prefix() -> None:
    assert parse_scanned_text("4006381333931") == PackCode("04006381333931", None, None, None, "gtin", "4006381333931")
    assert parse_scanned_text("]E04006381333931").gtin == "04006381333931"
    assert parse_scanned_text("09504000059101").source == "gtin"
    assert parse_scanned_text("]E496385074").gtin == "00000096385074"


def test_day_00_means_end_of_month() -> None:
    assert parse_scanned_text("010950400005910117280200").expiry == dt.date(2028, 2, 29)


def test_digital_link_with_prefix_and_encoding() -> None:
    code = parse_scanned_text("]Q1https://r.example/id/01/9504000059101/10/A%2F1/21/%26x?17=300100")
    assert _fields(code) == ("09504000059101", "A/1", dt.date(2030, 1, 31), "&x")


def test_encoders_known_answers() -> None:
    expiry = dt.date(2028, 12, 31)
    assert to_element_string("09504000059101", expiry, "12AB", "XY9") == SAMPLE
    assert to_element_string("9504000059101", None, None, "S") == "010950400005910121S"
    assert to_element_string("09504000059101", expiry, "L", None) == "01095040000591011728123110L"
    assert to_hri("09504000059101", expiry, "12AB", "XY9") == "(01)09504000059101(17)281231(10)12AB(21)XY9"
    assert to_digital_link("https://id.example.org/p/", "09504000059101", "A/1", "%x", expiry) == (
        "https://id.example.org/p/01/09504000059101/10/A%2F1/21/%25x?17=281231"
    )
    assert to_digital_link("http://localhost:8000", "09504000059101", None, None, None) == (
        "http://localhost:8000/01/09504000059101"
    )


@pytest.mark.parametrize(
    ("gtin", "expiry", "lot", "serial"),
    [
        ("09504000059102", None, None, None),  # check digit
        ("09504000059101", None, "a" * 21, None),  # lot too long
        ("09504000059101", None, "é", None),  # outside set 82
        ("09504000059101", None, None, "a b"),  # space outside set 82
        ("09504000059101", dt.date(2099, 1, 1), None, None),  # outside century window
    ],
)
def test_encoders_reject_unencodable(gtin: str, expiry: dt.date | None, lot: str | None, serial: str | None) -> None:
    with pytest.raises(ValueError, match="Cannot encode"):
        to_element_string(gtin, expiry, lot, serial)


def test_digital_link_rejects_bad_base_url() -> None:
    with pytest.raises(ValueError, match="absolute http"):
        to_digital_link("id.example.org", "09504000059101", None, None, None)


@pytest.mark.parametrize("text", ["https://[::1", "https://[::1/01/09504000059101/21/A", "http://[::1/x"])
def test_malformed_uri_is_a_scan_text_error(text: str) -> None:
    with pytest.raises(ScanTextError, match=r"is not a GS1 code: it is not a valid URI"):
        parse_scanned_text(text)


@pytest.mark.parametrize(("text", "reason"), [
    ("(01)09504000059101(17)281331(21)A", "expiry '281331' is not a valid date (YYMMDD)."),
    ("0109504000059101172813312" + "1A", "expiry '281331' is not a valid date (YYMMDD)."),
    ("(01)09504000059101(11)289931(21)A", "production date '289931' is not a valid date (YYMMDD)."),
    ("(01)0950400005910(21)A", "the value '0950400005910' of AI (01) does not have the form GS1 requires."),
])
def test_pattern_errors_are_said_in_the_labels_terms(text: str, reason: str) -> None:
    with pytest.raises(ScanTextError) as info:
        parse_scanned_text(text)
    assert str(info.value) == f"{text!r} is not a GS1 code: {reason}"
    assert "pattern" not in str(info.value)


def test_long_input_gives_a_short_message() -> None:
    """biip repeats the whole input in its message: the message as a whole is capped."""
    reference = REFERENCE_DIR / "barcodes" / "qrcode" / "qrcode-2_high-res-1.txt"
    text = "]Q1" + (reference.read_text(encoding="utf-8") if reference.exists() else "QR code text. " * 150)
    assert len(text) > 1000
    with pytest.raises(ScanTextError) as info:
        parse_scanned_text(text)
    assert len(str(info.value)) <= 300
