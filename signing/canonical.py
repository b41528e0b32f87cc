"""RFC 8785 (JSON Canonicalization Scheme) bytes, and the purpose tags that separate signature domains.

A signature in athar is always made over ``purpose_prefix(purpose) + canonical(value)``. The prefix
names the purpose (``athar/v1/event``, ``athar/v1/read-auth``...) and ends with a NUL byte, which cannot
occur in canonical JSON; so a signature made for one purpose never verifies as another.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from signing.errors import CanonicalEncodingError

PREFIX_NAMESPACE = "athar/v1/"


def canonical(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalEncodingError(f"value cannot be canonicalised (RFC 8785): {exc}") from exc


def parse_canonical(data: bytes) -> Any:
    """Parse JSON bytes and insist they are already in canonical form (no alternative encodings)."""
    try:
        # RFC 8785 writes whole-number doubles beyond 2^53 without a fraction; read them back as floats
        value = json.loads(data, parse_int=_parse_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CanonicalEncodingError(f"not valid JSON: {exc}") from exc
    if canonical(value) != data:
        raise CanonicalEncodingError("JSON is not in RFC 8785 canonical form")
    return value


def _parse_int(text: str) -> int | float:
    number = int(text)
    return number if abs(number) <= 2**53 - 1 else float(number)


def purpose_prefix(purpose: str) -> bytes:
    """The domain-separation prefix for a purpose: ``athar/v1/<purpose>`` followed by NUL."""
    if not purpose or any(c in purpose for c in "\x00\n") or not purpose.isascii():
        raise CanonicalEncodingError(f"invalid signature purpose {purpose!r}")
    return (PREFIX_NAMESPACE + purpose).encode("ascii") + b"\x00"


def signing_input(purpose: str, value: Any) -> bytes:
    """The exact bytes that are signed for ``value`` under ``purpose``."""
    return purpose_prefix(purpose) + canonical(value)
