"""signing: key ids, key files, domain separation, RFC 8785 canonical bytes and Ed25519 strictness."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
from pathlib import Path

import pytest

from signing import (
    BadSignatureError,
    KeyFileError,
    KeyFormatError,
    KeyPair,
    PublicKey,
    SigningError,
    b64decode,
    b64encode,
    canonical,
    key_id,
    purpose_prefix,
    signing_input,
)
from signing import ed25519 as raw
from signing.canonical import parse_canonical
from signing.errors import CanonicalEncodingError
from signing.keys import read_private_key, read_public_key, write_private_key, write_public_key

# RFC 8032 §7.1, TEST 1 (empty message) and TEST 2 (one byte 0x72).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24"
    "655141438e7a100b")
RFC8032_SEED2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC8032_PUBLIC2 = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC8032_SIG2 = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aee"
    "b00d291612bb0c00")
# The order of the Ed25519 base point (RFC 8032 §5.1).
L = 2**252 + 27742317777372353535851937790883648493


# ---- key ids ------------------------------------------------------------------------------------------


def test_key_id_is_prefix_and_first_16_bytes_of_sha256() -> None:
    assert key_id(RFC8032_PUBLIC) == "ed25519:" + hashlib.sha256(RFC8032_PUBLIC).digest()[:16].hex()
    assert len(key_id(RFC8032_PUBLIC)) == len("ed25519:") + 32


def test_key_pair_from_rfc8032_seed_has_the_published_public_key_and_id() -> None:
    pair = KeyPair.from_seed(RFC8032_SEED)
    assert pair.public.raw == RFC8032_PUBLIC
    assert pair.key_id == pair.public.key_id == key_id(RFC8032_PUBLIC)
    assert PublicKey.from_b64(pair.public.b64) == pair.public


def test_distinct_keys_have_distinct_ids() -> None:
    ids = {KeyPair.generate().key_id for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_key_id_and_public_key_refuse_wrong_sizes(size: int) -> None:
    with pytest.raises(KeyFormatError):
        key_id(b"\x01" * size)
    with pytest.raises(KeyFormatError):
        PublicKey(b"\x01" * size)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_seed_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(KeyFormatError):
        KeyPair.from_seed(b"\x02" * size)
    with pytest.raises(KeyFormatError):
        raw.sign(b"\x02" * size, b"m")


def test_b64_round_trip_and_refusal() -> None:
    assert b64decode(b64encode(b"\x00\xffabc")) == b"\x00\xffabc"
    for bad in ("not base64!", "YWJ", "é"):
        with pytest.raises(KeyFormatError):
            b64decode(bad)


# ---- Ed25519 ------------------------------------------------------------------------------------------


def test_rfc8032_known_answer_signatures() -> None:
    assert KeyPair.from_seed(RFC8032_SEED).sign_raw(b"") == RFC8032_SIG_EMPTY
    assert KeyPair.from_seed(RFC8032_SEED2).sign_raw(b"\x72") == RFC8032_SIG2
    raw.verify(RFC8032_PUBLIC, b"", RFC8032_SIG_EMPTY)
    raw.verify(RFC8032_PUBLIC2, b"\x72", RFC8032_SIG2)
    with pytest.raises(BadSignatureError):
        raw.verify(RFC8032_PUBLIC, b"\x72", RFC8032_SIG_EMPTY)
    with pytest.raises(BadSignatureError):
        raw.verify(RFC8032_PUBLIC2, b"\x72", RFC8032_SIG_EMPTY)


@pytest.mark.parametrize("bit", [0, 7, 100, 255, 256, 300, 500, 511])
def test_any_flipped_signature_bit_fails(bit: int) -> None:
    sig = bytearray(RFC8032_SIG2)
    sig[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(BadSignatureError):
        raw.verify(RFC8032_PUBLIC2, b"\x72", bytes(sig))


def test_malleated_signature_s_plus_l_is_rejected() -> None:
    """S and S + L verify the same equation; a strict verifier refuses the non-canonical S."""
    r, s = RFC8032_SIG2[:32], int.from_bytes(RFC8032_SIG2[32:], "little")
    assert s < L
    malleated = r + (s + L).to_bytes(32, "little")
    with pytest.raises(BadSignatureError):
        raw.verify(RFC8032_PUBLIC2, b"\x72", malleated)


def test_small_order_key_with_trivial_signature_is_rejected() -> None:
    """A = identity, R = identity, S = 0 satisfies the lax equation for every message."""
    identity = (1).to_bytes(32, "little")
    with pytest.raises(BadSignatureError):
        raw.verify(identity, b"any message", identity + bytes(32))


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_signature_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(BadSignatureError):
        raw.verify(RFC8032_PUBLIC, b"", RFC8032_SIG_EMPTY[:size] if size < 64 else RFC8032_SIG_EMPTY + bytes(size - 64))


def test_public_key_of_wrong_size_is_refused_by_verify() -> None:
    with pytest.raises(KeyFormatError):
        raw.verify(RFC8032_PUBLIC[:31], b"", RFC8032_SIG_EMPTY)


def test_verify_with_another_key_fails() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    sig = a.sign("event", {"x": 1})
    a.public.verify("event", {"x": 1}, sig)
    with pytest.raises(BadSignatureError):
        b.public.verify("event", {"x": 1}, sig)


# ---- domain separation ---------------------------------------------------------------------------------


def test_purpose_prefix_bytes() -> None:
    assert purpose_prefix("event") == b"athar/v1/event\x00"
    assert signing_input("read-auth", {"b": 1, "a": 2}) == b'athar/v1/read-auth\x00{"a":2,"b":1}'


@pytest.mark.parametrize("purpose", ["", "ev\x00ent", "ev\nent", "événement"])
def test_invalid_purposes_are_refused(purpose: str) -> None:
    with pytest.raises(CanonicalEncodingError):
        purpose_prefix(purpose)


def test_signature_for_one_purpose_never_verifies_for_another() -> None:
    pair = KeyPair.generate()
    value = {"id": "e1", "type": "dispense"}
    sig = pair.sign("event", value)
    pair.public.verify("event", value, sig)
    for other in ("read-auth", "event2", "checkpoint"):
        with pytest.raises(BadSignatureError):
            pair.public.verify(other, value, sig)
    # nor as a raw signature over the bare canonical bytes
    with pytest.raises(BadSignatureError):
        pair.public.verify_raw(canonical(value), sig)


def test_signature_covers_the_canonical_form_not_the_key_order() -> None:
    pair = KeyPair.generate()
    sig = pair.sign("event", {"a": 1, "b": [1, 2]})
    pair.public.verify("event", {"b": [1, 2], "a": 1}, sig)
    with pytest.raises(BadSignatureError):
        pair.public.verify("event", {"a": 1, "b": [2, 1]}, sig)


# ---- key files -----------------------------------------------------------------------------------------


def test_private_key_file_round_trip_mode_0600(tmp_path: Path) -> None:
    pair = KeyPair.generate()
    path = tmp_path / "sub" / "actor.key"
    write_private_key(path, pair, label="test")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = read_private_key(path)
    assert again.seed == pair.seed and again.key_id == pair.key_id
    doc = json.loads(path.read_text())
    assert doc["key_id"] == pair.key_id and doc["type"] == "athar-private-key"


def test_private_key_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_key(tmp_path / "k.key", KeyPair.generate())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k.key").st_mode) == 0o600


def test_private_key_file_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = KeyPair.generate()
    write_private_key(path, first)
    with pytest.raises(KeyFileError):
        write_private_key(path, KeyPair.generate())
    assert read_private_key(path).key_id == first.key_id
    # an explicit overwrite replaces it, and tightens the mode of a pre-existing loose file
    os.chmod(path, 0o644)
    second = KeyPair.generate()
    write_private_key(path, second, overwrite=True)
    assert read_private_key(path).key_id == second.key_id
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_repr_hides_the_seed() -> None:
    pair = KeyPair.from_seed(RFC8032_SEED)
    for text in (repr(pair), str(pair), f"{pair!r}", repr([pair])):
        assert RFC8032_SEED.hex() not in text
        assert base64.b64encode(RFC8032_SEED).decode() not in text
        assert str(RFC8032_SEED) not in text
        assert pair.key_id in text


def test_public_key_file_round_trip(tmp_path: Path) -> None:
    pair = KeyPair.generate()
    write_public_key(tmp_path / "k.pub", pair.public, label="x")
    assert read_public_key(tmp_path / "k.pub") == pair.public
    assert "seed" not in json.loads((tmp_path / "k.pub").read_text())


def _write(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


@pytest.mark.parametrize("content", [
    "", "not json", "[1, 2]", "null", '"a string"',
    json.dumps({"type": "athar-public-key", "algorithm": "ed25519", "public_key": "AAAA"}),
    json.dumps({"type": "athar-private-key", "algorithm": "rsa", "seed": base64.b64encode(bytes(32)).decode()}),
    json.dumps({"type": "athar-private-key", "algorithm": "ed25519",
                "seed": base64.b64encode(RFC8032_SEED).decode(), "key_id": "ed25519:" + "00" * 16}),
])
def test_bad_private_key_files_give_key_file_error(tmp_path: Path, content: str) -> None:
    with pytest.raises(KeyFileError):
        read_private_key(_write(tmp_path / "bad.key", content))


def test_missing_or_directory_key_file_gives_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        read_private_key(tmp_path / "missing.key")
    with pytest.raises(KeyFileError):
        read_public_key(tmp_path / "missing.pub")
    with pytest.raises(KeyFileError):
        read_private_key(tmp_path)


@pytest.mark.parametrize("seed", ["!!!", base64.b64encode(bytes(16)).decode(), ""])
def test_malformed_seed_in_key_file_is_a_signing_error(tmp_path: Path, seed: str) -> None:
    doc = {"type": "athar-private-key", "algorithm": "ed25519", "seed": seed}
    with pytest.raises(SigningError):
        read_private_key(_write(tmp_path / "bad.key", json.dumps(doc)))


@pytest.mark.parametrize("content", ["", "{}", json.dumps({"algorithm": "rsa", "public_key": "AAAA"}), "[]"])
def test_bad_public_key_files_give_key_file_error(tmp_path: Path, content: str) -> None:
    with pytest.raises(KeyFileError):
        read_public_key(_write(tmp_path / "bad.pub", content))


def test_invalid_utf8_key_file_gives_key_file_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.key"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(KeyFileError):
        read_private_key(path)


# ---- RFC 8785 canonical bytes ------------------------------------------------------------------------

# cyberphone/json-canonicalization testdata/input/*.json -> testdata/output/*.json (the RFC author's vectors)
JCS_VECTORS = {
    "arrays-like structures": (
        '{\n  "1": {"f": {"f": "hi","F": 5} ,"\\n": 56.0},\n  "10": { },\n  "": "empty",\n  "a": { },\n'
        '  "111": [ { } ],\n  "A": { }\n}',
        b'{"":"empty","1":{"\\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{}],"A":{},"a":{}}',
    ),
    "values": (
        '{\n  "numbers": [1E30, 4.50, 333333333.33333329, 2e-3, 0.000000000000000000000000001],\n'
        '  "escaping": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        '  "literals": [null, true, false]\n}',
        '{"escaping":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/","literals":[null,true,false],'
        '"numbers":[1e+30,4.5,333333333.3333333,0.002,1e-27]}'.encode(),
    ),
    "weird (RFC 8785 §3.2.3 sorting)": (
        '{\n  "\\u20ac": "Euro Sign",\n  "1": "One",\n  "\\u0080": "Control\\u007f",\n'
        '  "\\ud83d\\ude02": "Smiley",\n  "\\u00f6": "Latin Small Letter O With Diaeresis",\n'
        '  "\\ufb33": "Hebrew Letter Dalet With Dagesh",\n  "</script>": "Browser Challenge"\n}\n',
        '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
        '"ö":"Latin Small Letter O With Diaeresis","€":"Euro Sign","😂":"Smiley",'
        '"\ufb33":"Hebrew Letter Dalet With Dagesh"}'.encode(),
    ),
    "french (no locale collation)": (
        '{\n  "peach": "This sorting order",\n  "péché": "is wrong according to French",\n'
        '  "pêche": "but canonicalization MUST",\n  "sin":   "ingnore locale"\n}\n',
        '{"peach":"This sorting order","péché":"is wrong according to French",'
        '"pêche":"but canonicalization MUST","sin":"ingnore locale"}'.encode(),
    ),
    "unicode (no normalisation)": (
        '{\n  "Unnormalized Unicode":"\\u1e0d\\u0307"\n}\n',
        '{"Unnormalized Unicode":"\u1e0d\u0307"}'.encode(),
    ),
    "simple string": (
        '"this is a test string 1235"',
        bytes.fromhex("22 74 68 69 73 20 69 73 20 61 20 74 65 73 74 20 73 74 72 69 6E 67 20 31 32 33 35 22"),
    ),
}


@pytest.mark.parametrize("name", sorted(JCS_VECTORS))
def test_jcs_reference_vectors(name: str) -> None:
    source, expected = JCS_VECTORS[name]
    assert canonical(json.loads(source)) == expected
    # the expected output is itself canonical, and parses back
    assert canonical(parse_canonical(expected)) == expected


# RFC 8785 Appendix B: IEEE-754 binary64 bit patterns and their canonical serialisation.
NUMBER_VECTORS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), NUMBER_VECTORS)
def test_rfc8785_appendix_b_numbers(bits: str, text: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical(value) == text.encode()
    assert canonical([value]) == f"[{text}]".encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_cannot_be_canonicalised(value: float) -> None:
    with pytest.raises(CanonicalEncodingError):
        canonical({"x": value})


def test_integers_beyond_the_ijson_range_are_refused() -> None:
    assert canonical(2**53 - 1) == b"9007199254740991"
    with pytest.raises(CanonicalEncodingError):
        canonical(2**53 + 1)


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+1F600 is the surrogate pair D83D DE00, which sorts before U+E000 in UTF-16 but after it by code point.
    assert canonical({"\ue000": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ue000":1}'.encode()
    assert canonical({"b": 1, "a": 2, "B": 3, "aa": 4}) == b'{"B":3,"a":2,"aa":4,"b":1}'


def test_string_escapes() -> None:
    expected = b'"\\u0000\\u001f\\b\\t\\n\\f\\r\\"\\\\/\x7f\xc3\xa9"'
    assert canonical("\u0000\u001f\b\t\n\f\r\"\\/\u007f\u00e9") == expected


def test_lone_surrogate_cannot_be_canonicalised() -> None:
    with pytest.raises(CanonicalEncodingError):
        canonical("\ud800")


def test_non_json_values_are_refused() -> None:
    for value in ({1: "int key"}, {"x": object()}, b"bytes", {"s": {1, 2}}):
        with pytest.raises(CanonicalEncodingError):
            canonical(value)


@pytest.mark.parametrize("data", [
    b'{"b":1,"a":2}',  # keys out of order
    b'{"a":1,"a":1}',  # duplicate key
    b'{"a": 1}',  # whitespace
    b" 1", b"1 ", b"1\n",
    b"1.0", b"1E+30", b"1e30", b"-0", b"0.10", b"01",
    b'"\\u00e9"',  # escaped where canonical form is literal
    b'"\\/"',
    b'"\\u001F"',  # upper-case hex escape
    b"NaN", b"Infinity",
    b"\xff", b'"\xc3"',  # not UTF-8
    b"9007199254740993",
    b"", b"{", b"[1,]",
])
def test_parse_canonical_refuses_non_canonical_json(data: bytes) -> None:
    with pytest.raises(CanonicalEncodingError):
        parse_canonical(data)


@pytest.mark.parametrize("data", [b"{}", b"[]", b"null", b'{"a":[1,"x",true,null,{"b":1e+21}]}', b"-5e-324",
                                  b'"\\u001f"'])
def test_parse_canonical_accepts_canonical_json(data: bytes) -> None:
    assert canonical(parse_canonical(data)) == data


def test_signing_with_more_keys_than_are_kept_expanded_stays_correct() -> None:
    """Signing keys are expanded from their seeds once and kept (a few hundred): more keys than that, each used
    twice in turn, still sign with their own key."""
    seeds = [bytes([i % 256, i // 256]) * 16 for i in range(600)]
    for _ in range(2):
        for seed in seeds:
            message = b"checkpoint " + seed
            raw.verify(raw.public_key_from_seed(seed), message, raw.sign(seed, message))
