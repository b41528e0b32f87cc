"""Properties of RFC 8785 canonical JSON and of signatures over it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.entry import EVENT_PURPOSE, Entry, SignedEvent
from signing import BadSignatureError, KeyPair, canonical, signing_input
from signing.canonical import parse_canonical
from signing.errors import CanonicalEncodingError

SAFE_INT = 2**53 - 1
KEY = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(range(1, 33)))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-SAFE_INT, max_value=SAFE_INT),
    # Finite floats below 2**53 in magnitude; integral doubles beyond 2**53 have their own test below.
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: abs(f) < 2.0**53),
    st.text(),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=25,
)
no_float_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-SAFE_INT, max_value=SAFE_INT), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=25,
)
bodies = st.dictionaries(st.text(min_size=1, max_size=10), json_values, min_size=1, max_size=6)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Any, b: Any) -> bool:
    """JSON-number equality: JCS writes 1.0 as 1 and -0.0 as 0, which Python's == already equates."""
    return bool(a == b)


@FAST
@given(json_values)
def test_canonical_is_idempotent_through_json_loads(value: Any) -> None:
    once = canonical(value)
    assert canonical(json.loads(once)) == once


@FAST
@given(json_values)
def test_parse_canonical_inverts_canonical(value: Any) -> None:
    data = canonical(value)
    parsed = parse_canonical(data)
    assert same(parsed, value)
    assert canonical(parsed) == data


@FAST
@given(no_float_values)
def test_parse_canonical_inverts_canonical_exactly_without_floats(value: Any) -> None:
    parsed = parse_canonical(canonical(value))
    assert parsed == value
    assert json.dumps(parsed, sort_keys=True) == json.dumps(value, sort_keys=True)


@FAST
@given(json_values)
def test_canonical_is_valid_utf8_json_without_insignificant_whitespace(value: Any) -> None:
    data = canonical(value)
    text = data.decode("utf-8")
    assert json.loads(text) == value
    # re-serialising compactly with sorted keys never yields different bytes for the parsed value
    assert canonical(json.loads(text)) == data


@FAST
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=6))
def test_key_order_of_the_input_does_not_matter(value: dict[str, int]) -> None:
    reversed_value = dict(reversed(list(value.items())))
    assert canonical(value) == canonical(reversed_value)


@FAST
@given(bodies)
def test_sign_verify_round_trip(body: dict[str, Any]) -> None:
    signed = SignedEvent.create(body, KEY)
    KEY.public.verify(EVENT_PURPOSE, body, signed.signature)
    # the JSON wire form round-trips to the same signed event
    again = SignedEvent.from_json(json.loads(json.dumps(signed.to_json())))
    assert again.same_as(signed)
    KEY.public.verify(EVENT_PURPOSE, dict(again.body), again.signature)


@FAST
@given(bodies)
def test_other_key_or_purpose_never_verifies(body: dict[str, Any]) -> None:
    sig = KEY.sign(EVENT_PURPOSE, body)
    for key, purpose in ((OTHER, EVENT_PURPOSE), (KEY, "read-auth")):
        try:
            key.public.verify(purpose, body, sig)
        except BadSignatureError:
            continue
        raise AssertionError("signature verified for the wrong key or purpose")


@settings(max_examples=100, deadline=None)
@given(bodies, st.data())
def test_any_flipped_byte_of_the_signed_bytes_fails(body: dict[str, Any], data: st.DataObject) -> None:
    message = signing_input(EVENT_PURPOSE, body)
    sig = KEY.sign(EVENT_PURPOSE, body)
    KEY.public.verify_raw(message, sig)
    where = data.draw(st.integers(0, len(message) - 1), label="byte")
    flip = data.draw(st.integers(1, 255), label="xor")
    tampered = bytearray(message)
    tampered[where] ^= flip
    try:
        KEY.public.verify_raw(bytes(tampered), sig)
    except BadSignatureError:
        return
    raise AssertionError(f"flipping byte {where} of the signed bytes still verified")


@settings(max_examples=100, deadline=None)
@given(bodies, st.data())
def test_any_flipped_byte_of_the_signature_fails(body: dict[str, Any], data: st.DataObject) -> None:
    sig = bytearray(KEY.sign(EVENT_PURPOSE, body))
    sig[data.draw(st.integers(0, 63))] ^= data.draw(st.integers(1, 255))
    try:
        KEY.public.verify(EVENT_PURPOSE, body, bytes(sig))
    except BadSignatureError:
        return
    raise AssertionError("a flipped signature byte still verified")


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=2.0**53, max_value=1e300).filter(lambda f: f.is_integer()))
@example(2.0**53)
@example(1e16)
def test_integral_doubles_beyond_2_53_round_trip(value: float) -> None:
    data = canonical(value)
    assert parse_canonical(data) == value


_fast_path_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**60), max_value=2**60),
              st.text(), st.text(alphabet=st.characters(max_codepoint=0x7F))),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(max_size=8), children, max_size=5)),
    max_leaves=30,
)


@given(_fast_path_values)
@settings(max_examples=500, deadline=None)
def test_fast_path_is_byte_for_byte_rfc8785(value: object) -> None:
    """canonical() takes a standard-library shortcut for plain values; it must equal the reference encoder."""
    assert_encoded_like_the_reference(value)


def assert_encoded_like_the_reference(value: object) -> None:
    """canonical(value) is what the reference RFC 8785 encoder writes, or refused where it refuses."""
    import rfc8785

    try:
        expected = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError):
        with pytest.raises(CanonicalEncodingError):
            canonical(value)
        return
    assert canonical(value) == expected


@given(body=bodies, chain=st.text(max_size=40), key_id=st.text(max_size=30),
       index=st.integers(min_value=0, max_value=SAFE_INT),
       prev=st.one_of(st.none(), st.binary(min_size=32, max_size=32)), signature=st.binary(min_size=64, max_size=64),
       received=st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_an_entry_leaf_assembled_around_the_body_bytes_is_the_canonical_entry(
        body: dict[str, Any], chain: str, key_id: str, index: int, prev: bytes | None, signature: bytes,
        received: dt.datetime) -> None:
    """The sequencer writes an entry's leaf around the body's canonical bytes (made once, for its signature)
    instead of encoding the whole entry: the bytes must be RFC 8785 of the entry, always."""
    signed = SignedEvent(body, key_id, signature)
    entry = Entry(index, received, chain, prev, signed)
    assert entry.leaf() == canonical(entry.to_json())
    # the audit's two parses (form checked here, or already by its helper process) give the same entry
    assert Entry.from_leaf(entry.leaf()) == entry == Entry.from_checked_leaf(entry.leaf())


@given(st.one_of(st.text(), st.text(alphabet=st.characters(max_codepoint=0x7F))))
@settings(max_examples=500, deadline=None)
@example("")
@example('a"b')
@example("a\\b")
@example("\x7f")
@example("\x1f")
def test_strings_take_the_shortest_path_and_still_equal_rfc8785(value: str) -> None:
    """Printable ASCII strings are written as they are; every other string must come out as the reference
    encoder writes it too (escapes, DEL, control characters, surrogates refused)."""
    assert_encoded_like_the_reference(value)


_RESPELLINGS = {
    "spaces": lambda doc: json.dumps(doc, sort_keys=True, ensure_ascii=False).encode(),
    "keys unsorted": lambda doc: json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":"),
                                            ensure_ascii=False).encode(),
    "escaped non-ASCII": lambda doc: json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(),
    "field added": lambda doc: canonical({**doc, "note": "x"}),
    "prev in capitals": lambda doc: canonical({**doc, "prev": doc["prev"].upper() if doc["prev"] else None}),
    "time without microseconds": lambda doc: canonical({**doc, "received": doc["received"][:19] + "Z"}),
    "version as text": lambda doc: canonical({**doc, "v": "1"}),
}


@given(body=bodies, chain=st.text(min_size=1, max_size=20), index=st.integers(min_value=0, max_value=SAFE_INT),
       prev=st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
       received=st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)),
       how=st.sampled_from(sorted(_RESPELLINGS)))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_stored_entry_in_any_other_spelling_is_refused(body: dict[str, Any], chain: str, index: int,
                                                         prev: bytes | None, received: dt.datetime,
                                                         how: str) -> None:
    """``Entry.from_leaf`` accepts only the bytes the sequencer writes: any other spelling of the same entry
    (which would have another leaf hash) is refused, or parses to an entry whose own leaf is those bytes."""
    from ledger.errors import IntegrityError

    entry = Entry(index, received, chain, prev, SignedEvent(body, KEY.key_id, bytes(64)))
    try:
        leaf = entry.leaf()
    except CanonicalEncodingError:
        return  # a body no signature could cover never becomes an entry
    respelled = _RESPELLINGS[how](json.loads(leaf))
    if respelled == leaf:
        assert Entry.from_leaf(respelled) == entry  # nothing to respell (e.g. ASCII only, no prev)
        return
    with pytest.raises(IntegrityError):
        Entry.from_leaf(respelled)
