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
    if type(value) is str and value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        # a printable ASCII string without quote or backslash is written as it is (chain names, key ids: parts
        # of every log entry the sequencer writes and every audit checks)
        return b'"%s"' % value.encode("ascii")
    if _plain(value):
        # For strings of the Basic Multilingual Plane, integers within ±(2^53-1), booleans and null, the
        # standard library's sorted, compact output is byte for byte RFC 8785 (a property test checks it)
        # and four times faster than the general encoder, which handles everything else.
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalEncodingError(f"value cannot be canonicalised (RFC 8785): {exc}") from exc


_MAX_SAFE = 2**53 - 1


def _plain_text(text: str) -> bool:
    # Non-BMP characters sort differently under UTF-16 (RFC 8785 §3.2.3); surrogates need escaping.
    return text.isascii() or all(c < "\ud800" or "\ue000" <= c <= "\uffff" for c in text)


def _plain(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if not _plain_text(v):
                return False
        elif v is None or v is True or v is False:
            continue
        elif type(v) is int:
            if not -_MAX_SAFE <= v <= _MAX_SAFE:
                return False
        elif type(v) is dict:
            for k in v:
                if type(k) is not str or not _plain_text(k):
                    return False
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
        else:
            return False  # floats, tuples and anything else take the general path
    return True


def parse_canonical(data: bytes) -> Any:
    """Parse JSON bytes and insist they are already in canonical form (no alternative encodings)."""
    value = parse_json(data)
    if canonical(value) != data:
        raise CanonicalEncodingError("JSON is not in RFC 8785 canonical form")
    return value


def parse_json(data: bytes) -> Any:
    """Parse JSON bytes the way ``parse_canonical`` does, without checking their form (for bytes already
    checked)."""
    try:
        return _DECODER.decode(data.decode("utf-8"))
    except ValueError as exc:  # bad UTF-8, bad JSON, an integer too long to convert
        raise CanonicalEncodingError(f"not valid JSON: {exc}") from exc


def _parse_int(text: str) -> int | float:
    number = int(text)
    return number if abs(number) <= 2**53 - 1 else float(number)


# RFC 8785 writes whole-number doubles beyond 2^53 without a fraction; read them back as floats. One decoder
# for all: json.loads builds a new one per call when given a hook.
_DECODER = json.JSONDecoder(parse_int=_parse_int)


def purpose_prefix(purpose: str) -> bytes:
    """The domain-separation prefix for a purpose: ``athar/v1/<purpose>`` followed by NUL."""
    if not purpose or any(c in purpose for c in "\x00\n") or not purpose.isascii():
        raise CanonicalEncodingError(f"invalid signature purpose {purpose!r}")
    return (PREFIX_NAMESPACE + purpose).encode("ascii") + b"\x00"


def signing_input(purpose: str, value: Any) -> bytes:
    """The exact bytes that are signed for ``value`` under ``purpose``."""
    return purpose_prefix(purpose) + canonical(value)
