"""Identifiers the ledger accepts, validated with biip (GS1 General Specifications) rather than by hand.

- GTIN (AI 01): 8, 12, 13 or 14 digits with a valid mod-10 check digit (GS1 GS §7.9.1); stored as GTIN-14.
- Lot (AI 10) and serial (AI 21): 1-20 characters of GS1 AI encodable character set 82 (GS1 GS §7.11).
- Expiry (AI 17): a calendar date; stored ISO (YYYY-MM-DD). The YYMMDD form with day 00 means the last
  day of the month (GS1 GS §7.12), which biip resolves.
- GLN (AI 414, an actor's location): 13 digits with a valid mod-10 check digit (GS1 GS §7.9.1).
- Actor ids: lowercase ``[a-z0-9][a-z0-9.-]{2,63}``; they appear in URLs and audit reports.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from enum import StrEnum

from biip import ParseError
from biip.gln import Gln
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_messages import GS1Message
from biip.gtin import Gtin

from ledger.errors import InvalidIdentifier

_ACTOR_ID = re.compile(r"[a-z0-9][a-z0-9.-]{2,63}")
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_LOT_PATTERN = re.compile(GS1ApplicationIdentifier.extract("10").pattern)
_SERIAL_PATTERN = re.compile(GS1ApplicationIdentifier.extract("21").pattern)


class Role(StrEnum):
    MANUFACTURER = "manufacturer"
    DISTRIBUTOR = "distributor"
    PHARMACY = "pharmacy"
    HOSPITAL = "hospital"
    REGULATOR = "regulator"
    INSPECTOR = "inspector"


#: roles that hold stock
CUSTODIANS = frozenset({Role.MANUFACTURER, Role.DISTRIBUTOR, Role.PHARMACY, Role.HOSPITAL})
#: roles that dispense to patients (decommission)
DISPENSERS = frozenset({Role.PHARMACY, Role.HOSPITAL})


class Channel(StrEnum):
    """Supply channel: stock bought by public tender must not surface in private pharmacies."""

    PUBLIC = "public"
    PRIVATE = "private"


def gtin14(value: str) -> str:
    """Validate a GTIN (check digit included) and return it as 14 digits."""
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) or len(value) not in (8, 12, 13, 14):
        raise InvalidIdentifier(f"GTIN {value!r} must be 8, 12, 13 or 14 digits", field="gtin")
    return _valid_gtin14(value)


@functools.lru_cache(maxsize=65536)
def _valid_gtin14(value: str) -> str:
    # A country has tens of thousands of GTINs and every event names one: parse each once per process.
    # Exceptions are not cached, so invalid GTINs cost a parse every time (and cannot fill the cache).
    try:
        return Gtin.parse(value).as_gtin_14()
    except ParseError as exc:
        raise InvalidIdentifier(f"GTIN {value!r} is not valid: {exc}", field="gtin") from exc


def lot(value: str) -> str:
    if not isinstance(value, str) or not _LOT_PATTERN.fullmatch("10" + value):
        raise InvalidIdentifier(
            f"lot {value!r} must be 1-20 characters of the GS1 character set 82 (AI 10)", field="lot"
        )
    return value


def serial(value: str) -> str:
    if not isinstance(value, str) or not _SERIAL_PATTERN.fullmatch("21" + value):
        raise InvalidIdentifier(
            f"serial {value!r} must be 1-20 characters of the GS1 character set 82 (AI 21)", field="serial"
        )
    return value


def expiry(value: str) -> dt.date:
    """Parse an expiry given as ISO ``YYYY-MM-DD`` or GS1 ``YYMMDD`` (AI 17, day 00 = end of month)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{6}", value):
        try:
            date = GS1Message.parse("17" + value).element_strings[0].date
        except ParseError as exc:
            raise InvalidIdentifier(f"expiry {value!r} is not a valid GS1 date: {exc}", field="expiry") from exc
        assert date is not None
        return date
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else _bad(value)
    except ValueError as exc:
        raise InvalidIdentifier(f"expiry {value!r} is not a valid date (YYYY-MM-DD)", field="expiry") from exc


def _bad(value: object) -> dt.date:
    raise ValueError(value)


def gln(value: str) -> str:
    """Validate a GLN (check digit included): a GLN with a typing error would name someone else's premises."""
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) or len(value) != 13:
        raise InvalidIdentifier(f"GLN {value!r} must be 13 digits", field="gln")
    try:
        Gln.parse(value)
    except ParseError as exc:
        raise InvalidIdentifier(f"GLN {value!r} has a wrong check digit: {exc}", field="gln") from exc
    return value


def actor_id(value: str) -> str:
    if not isinstance(value, str) or not _ACTOR_ID.fullmatch(value):
        raise InvalidIdentifier(
            f"actor id {value!r} must be 3-64 characters: lowercase letters, digits, '.' and '-'",
            field="actor",
        )
    return value


def event_id(value: str) -> str:
    if not isinstance(value, str) or not _EVENT_ID.fullmatch(value):
        raise InvalidIdentifier(
            f"event id {value!r} must be 1-128 characters: letters, digits, '.', '_', ':' and '-'",
            field="id",
        )
    return value


def batch_chain(gtin: str, lot_: str) -> str:
    """The per-batch hash chain a batch's entries belong to."""
    return f"batch/{gtin}/{lot_}"


def actor_chain(actor: str) -> str:
    return f"actor/{actor}"
