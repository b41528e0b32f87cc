"""ledger.checkpoint: C2SP signed notes, tlog-checkpoint bodies and tlog-cosignatures."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ledger.checkpoint import (
    EM_DASH,
    Checkpoint,
    CheckpointError,
    cosign,
    cosignature_key_id,
    cosignature_message,
    key_id,
    open_checkpoint,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    split_note,
    verifier_key,
    verify_cosignature,
    verify_note,
)
from signing import KeyPair

# Known answer from golang.org/x/mod/sumdb/note (package documentation and note_test.go): the
# signer key PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01 || seed)>, its verifier key, and the
# exact signed note (Ed25519 is deterministic, so signing must reproduce it byte for byte).
GO_SKEY_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
GO_NOTE = f"{GO_TEXT}\n{EM_DASH} PeterNeumann {GO_SIG}\n"

ORIGIN = "athar.example/log"
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture(scope="module")
def log_key() -> KeyPair:
    return KeyPair.from_seed(bytes(range(32)))


@pytest.fixture(scope="module")
def vkey(log_key: KeyPair) -> str:
    return verifier_key(ORIGIN, log_key.public)


@pytest.fixture(scope="module")
def note(log_key: KeyPair) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, 1234, ROOT), ORIGIN, log_key)


def _go_key() -> KeyPair:
    raw = base64.b64decode(GO_SKEY_B64)
    assert raw[0] == 0x01
    return KeyPair.from_seed(raw[1:])


# --- known answers -------------------------------------------------------------------------------


def test_go_note_known_answer() -> None:
    pair = _go_key()
    assert verifier_key("PeterNeumann", pair.public) == GO_VKEY
    assert key_id("PeterNeumann", pair.public).hex() == "c74f20a3"
    assert sign_note(GO_TEXT, "PeterNeumann", pair) == GO_NOTE
    assert verify_note(GO_NOTE, GO_VKEY) == GO_TEXT
    name, kid, public = parse_verifier_key(GO_VKEY)
    assert (name, kid.hex(), public) == ("PeterNeumann", "c74f20a3", pair.public)


def test_go_verifier_key_manglings_are_rejected() -> None:
    # From note_test.go TestNewVerifier: wrong key length and unknown algorithm, hash adjusted.
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(CheckpointError):
            parse_verifier_key(bad)
    b = GO_VKEY
    for i in range(len(b)):
        mangled = b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :]
        with pytest.raises(CheckpointError):
            parse_verifier_key(mangled)


def test_cosignature_key_id_uses_type_0x04(log_key: KeyPair) -> None:
    want = hashlib.sha256(b"w.example/1\n\x04" + log_key.public.raw).digest()[:4]
    assert cosignature_key_id("w.example/1", log_key.public) == want
    assert key_id("w.example/1", log_key.public) != want


# --- checkpoint body -----------------------------------------------------------------------------


def test_body_format_and_round_trip() -> None:
    cp = Checkpoint(ORIGIN, 1234, ROOT, ("ext one", "ext2"))
    assert cp.body() == f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\next one\next2\n"
    assert Checkpoint.parse_body(cp.body()) == cp
    assert Checkpoint.parse_body(Checkpoint(ORIGIN, 0, ROOT).body()).size == 0


def test_spec_example_body_parses() -> None:
    cp = Checkpoint.parse_body("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
    assert (cp.origin, cp.size, len(cp.root)) == ("example.com/behind-the-sofa", 20852163, 32)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (f"{ORIGIN}\n012\n{base64.b64encode(ROOT).decode()}\n", "leading zeros"),
        (f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n", "decimal"),
        (f"{ORIGIN}\n+1\n{base64.b64encode(ROOT).decode()}\n", "decimal"),
        (f"{ORIGIN}\n１\n{base64.b64encode(ROOT).decode()}\n", "decimal"),
        (f"{ORIGIN}\n {base64.b64encode(ROOT).decode()}\n", "at least 3"),
        (f"{ORIGIN}\n{2**64}\n{base64.b64encode(ROOT).decode()}\n", "64 bits"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode().rstrip('=')}\n", "base64"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()[:-2]}!=\n", "base64"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}", "newline"),
        (f"\n1\n{base64.b64encode(ROOT).decode()}\n", "origin"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n\next\n", "extension line 1 is empty"),
        (f"{ORIGIN}\r\n1\n{base64.b64encode(ROOT).decode()}\n", "control character"),
    ],
)
def test_malformed_bodies(text: str, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        Checkpoint.parse_body(text)
    assert info.value.code == "bad_checkpoint"


def test_invalid_checkpoint_values() -> None:
    with pytest.raises(CheckpointError):
        Checkpoint("", 1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint(ORIGIN, -1, ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint(ORIGIN, 1, ROOT[:16])
    with pytest.raises(CheckpointError):
        Checkpoint(ORIGIN, 1, ROOT, ("",))
    with pytest.raises(CheckpointError):
        Checkpoint("a\nb", 1, ROOT)


# --- signed checkpoints ------------------------------------------------------------------------------


def test_sign_and_open_round_trip(note: str, vkey: str) -> None:
    assert note.startswith(f"{ORIGIN}\n1234\n")
    assert note.endswith("\n") and f"\n\n{EM_DASH} {ORIGIN} " in note
    assert open_checkpoint(note, vkey) == Checkpoint(ORIGIN, 1234, ROOT)
    assert open_checkpoint(note, parse_verifier_key(vkey)) == Checkpoint(ORIGIN, 1234, ROOT)


def test_wrong_key_is_rejected(note: str) -> None:
    other = KeyPair.from_seed(bytes(32))
    with pytest.raises(CheckpointError, match="not signed by"):
        open_checkpoint(note, verifier_key(ORIGIN, other.public))
    with pytest.raises(CheckpointError, match="not signed by"):
        open_checkpoint(note, verifier_key("someone.else/log", other.public))


def test_unknown_signatures_are_ignored(note: str, vkey: str) -> None:
    other = KeyPair.from_seed(bytes(32))
    extra = sign_note(Checkpoint(ORIGIN, 1234, ROOT).body(), "other.example/key", other)
    combined = note + extra.split("\n\n", 1)[1]
    assert open_checkpoint(combined, vkey).size == 1234
    # A line with our name but another key ID is someone else's key: ignored, not an error.
    foreign = base64.b64encode(bytes(4 + 64)).decode()
    name_clash = note + f"{EM_DASH} {ORIGIN} {foreign}\n"
    assert open_checkpoint(name_clash, vkey).size == 1234


def test_bad_signature_by_the_key_rejects_the_note(note: str, vkey: str) -> None:
    text, sigs = split_note(note)
    forged = sigs[0]._replace(signature=bytes(64))
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(text + "\n" + forged.line(), vkey)
    short = sigs[0]._replace(signature=sigs[0].signature[:10])
    with pytest.raises(CheckpointError, match="want 64"):
        open_checkpoint(text + "\n" + short.line(), vkey)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda n: n.replace("\n1234\n", "\n1235\n", 1),
        lambda n: n.replace(ORIGIN + "\n", "athar.example/other\n", 1),
        lambda n: n.replace(base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode(), 1),
        lambda n: "x" + n,
    ],
    ids=["size", "origin", "root", "prefix"],
)
def test_tampered_checkpoint_fails(note: str, vkey: str, tamper: object) -> None:
    assert callable(tamper)
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(tamper(note), vkey)


def test_malformed_notes(note: str, vkey: str, log_key: KeyPair) -> None:
    text, sig_block = note.split("\n\n")
    cases = {
        "no trailing newline": note[:-1],
        "missing blank line": text + "\n" + sig_block,
        "no signatures": text + "\n\n",
        "no em dash": text + "\n\n" + sig_block.replace(EM_DASH, "-"),
        "bad base64": text + "\n\n" + sig_block.replace(" ", " !", 2).replace("— !", "— "),
        "extra field": text + "\n\n" + sig_block.rstrip("\n") + " extra\n",
        "control char": note.replace("1234", "12\x0734"),
        "leading zero size": sign_note(f"{ORIGIN}\n01234\n{base64.b64encode(ROOT).decode()}\n", ORIGIN, log_key),
        "short root": sign_note(f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:8]).decode()}\n", ORIGIN, log_key),
        "bad root base64": sign_note(f"{ORIGIN}\n1\nnot*base64\n", ORIGIN, log_key),
    }
    for label, bad in cases.items():
        with pytest.raises(CheckpointError):
            open_checkpoint(bad, vkey)
            pytest.fail(label)


def test_sign_note_rejects_bad_text(log_key: KeyPair) -> None:
    with pytest.raises(CheckpointError, match="newline"):
        sign_note("no newline", "k", log_key)
    with pytest.raises(CheckpointError, match="empty lines"):
        sign_note("a\n\nb\n", "k", log_key)
    with pytest.raises(CheckpointError, match="spaces"):
        sign_note("a\n", "bad name", log_key)
    with pytest.raises(CheckpointError, match=r"'\+'"):
        sign_note("a\n", "bad+name", log_key)


def test_verifier_key_round_trip(log_key: KeyPair) -> None:
    text = verifier_key(ORIGIN, log_key.public)
    assert "+" in text.split("+", 2)[2], "this key's base64 contains '+': parsing must split only twice"
    name, kid, public = parse_verifier_key(text)
    assert (name, public) == (ORIGIN, log_key.public)
    assert kid == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + log_key.public.raw).digest()[:4]
    encoded = base64.b64encode(bytes([1]) + log_key.public.raw).decode()
    assert text == f"{ORIGIN}+{kid.hex()}+{encoded}"


# --- cosignatures ------------------------------------------------------------------------------------

WITNESS = "witness.example/w1"
TS = 1679315147


@pytest.fixture(scope="module")
def witness() -> KeyPair:
    return KeyPair.from_seed(b"\x07" * 32)


def test_cosignature_round_trip(note: str, vkey: str, witness: KeyPair) -> None:
    cosigned = cosign(note, WITNESS, witness, TS)
    assert cosigned.startswith(note)
    assert verify_cosignature(cosigned, WITNESS, witness.public) == TS
    # The log signature still verifies: the cosignature is just one more (unknown) signature.
    assert open_checkpoint(cosigned, vkey).size == 1234
    _, sigs = split_note(cosigned)
    line = sigs[-1]
    assert line.name == WITNESS and line.key_id == cosignature_key_id(WITNESS, witness.public)
    assert line.signature[:8] == TS.to_bytes(8, "big") and len(line.signature) == 72
    text, _ = split_note(note)
    witness.public.verify_raw(cosignature_message(text, TS), line.signature[8:])
    assert cosignature_message(text, TS).startswith(f"cosignature/v1\ntime {TS}\n{ORIGIN}\n".encode())


def test_cosignature_failures(note: str, witness: KeyPair) -> None:
    cosigned = cosign(note, WITNESS, witness, TS)
    with pytest.raises(CheckpointError, match="not cosigned"):
        verify_cosignature(note, WITNESS, witness.public)
    with pytest.raises(CheckpointError, match="not cosigned"):
        verify_cosignature(cosigned, WITNESS, KeyPair.from_seed(b"\x08" * 32).public)
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_cosignature(cosigned.replace("\n1234\n", "\n1235\n", 1), WITNESS, witness.public)
    # A changed timestamp breaks the signature (the time is part of the signed message).
    text, sigs = split_note(cosigned)
    moved = sigs[-1]._replace(signature=(TS + 1).to_bytes(8, "big") + sigs[-1].signature[8:])
    rebuilt = text + "\n" + "".join(s.line() for s in sigs[:-1]) + moved.line()
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_cosignature(rebuilt, WITNESS, witness.public)
    with pytest.raises(CheckpointError, match="out of range"):
        cosign(note, WITNESS, witness, -1)
    with pytest.raises(CheckpointError, match="out of range"):
        cosign(note, WITNESS, witness, 2**63)


def test_cosign_requires_a_checkpoint(witness: KeyPair) -> None:
    with pytest.raises(CheckpointError):
        cosign(GO_NOTE, WITNESS, witness, TS)
