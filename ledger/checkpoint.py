"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, plus witness cosignatures.

Formats (text in, text out; no I/O):

- c2sp.org/signed-note: the note text (ending in a newline), a blank line, then one or more
  signature lines ``— <key name> <base64(4-byte key ID || signature)>``. Ed25519 key ID =
  SHA-256(name || 0x0A || 0x01 || public key)[:4]; verifier keys are
  ``<name>+<8 hex key ID>+<base64(0x01 || public key)>`` (golang.org/x/mod/sumdb/note).
- c2sp.org/tlog-checkpoint: note text = origin, tree size (decimal, no leading zeros), base64 root
  hash, then optional non-empty extension lines.
- c2sp.org/tlog-cosignature (Ed25519, type 0x04): the witness signs
  ``cosignature/v1\\ntime <unix seconds>\\n`` + the checkpoint text; the signature is
  base64(key ID || u64 big-endian timestamp || Ed25519 signature).

Verifiers ignore signatures from unknown keys (signed-note §Signatures) and reject a note whose
signature by the expected key fails, or that carries none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple

from signing import BadSignatureError, KeyPair, PublicKey

EM_DASH = "\u2014"
SIG_PREFIX = EM_DASH + " "
ALG_ED25519 = 0x01
"""signed-note §Signature types: Ed25519 note signatures."""
ALG_COSIGNATURE_V1 = 0x04
"""signed-note §Signature types: timestamped Ed25519 witness cosignatures (tlog-cosignature)."""
KEY_ID_SIZE = 4
ED25519_SIG_SIZE = 64
HASH_SIZE = 32
MAX_SIGNATURES = 100
"""signed-note: verifiers SHOULD cap the number of signatures, and MUST accept at least 16."""
COSIGNATURE_HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1

_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_HEX8_RE = re.compile(r"[0-9a-f]{8}")


class CheckpointError(Exception):
    """A checkpoint or signed note is malformed, unsigned by the expected key, or badly signed."""

    code = "bad_checkpoint"


# --- helpers ------------------------------------------------------------------------------------


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): valid alphabet, padding, and canonical form."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise CheckpointError(f"{what} {text!r} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"{what} {text!r} is not canonical base64")
    return raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_key_name(name: str) -> None:
    """signed-note: key names are non-empty and contain no Unicode spaces and no '+'."""
    if not name:
        raise CheckpointError("key name must not be empty")
    if "+" in name or any(ch.isspace() for ch in name) or any(ord(ch) < 0x20 for ch in name):
        raise CheckpointError(f"key name {name!r} must not contain spaces, '+' or control characters")


def key_id(name: str, public_key: PublicKey, algorithm: int = ALG_ED25519) -> bytes:
    """signed-note: key ID = SHA-256(key name || 0x0A || signature type || public key)[:4]."""
    check_key_name(name)
    return hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public_key.raw).digest()[:KEY_ID_SIZE]


_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")  # control characters other than the newline


def _check_note_chars(text: str, what: str) -> None:
    # one regular-expression search, not a loop over characters: every group signs a checkpoint and checks it
    found = _CONTROL.search(text)
    if found is not None:
        raise CheckpointError(f"{what} contains control character U+{ord(found.group()):04X}")


# --- checkpoint body ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint note body: log origin, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError(f"checkpoint origin {self.origin!r} must be one non-empty line")
        _check_note_chars(self.origin, "checkpoint origin")
        if self.size < 0:
            raise CheckpointError(f"checkpoint tree size must be >= 0, got {self.size}")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash has {len(self.root)} bytes, want {HASH_SIZE}")
        for line in self.extensions:
            if not line or "\n" in line:
                raise CheckpointError(f"checkpoint extension line {line!r} must be one non-empty line")
            _check_note_chars(line, "checkpoint extension line")

    def body(self) -> str:
        """The note text: ``<origin>\\n<size>\\n<base64 root>\\n`` and extension lines."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text strictly (tlog-checkpoint §Note text)."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text must end with a newline")
        _check_note_chars(text, "checkpoint text")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"checkpoint text has {len(lines)} lines, want at least 3")
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise CheckpointError("checkpoint origin line is empty")
        if not _SIZE_RE.fullmatch(size_text):
            raise CheckpointError(
                f"checkpoint tree size {size_text!r} is not a decimal number without leading zeros"
            )
        size = int(size_text)
        if size >= 2**64:
            raise CheckpointError(f"checkpoint tree size {size} does not fit in 64 bits")
        root = _b64decode(root_text, "checkpoint root hash")
        if len(root) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash has {len(root)} bytes, want {HASH_SIZE}")
        for i, line in enumerate(extensions):
            if not line:
                raise CheckpointError(f"checkpoint extension line {i + 1} is empty")
        return cls(origin, size, root, tuple(extensions))


# --- signed notes ---------------------------------------------------------------------------------


class NoteSignature(NamedTuple):
    """One signature line: key name, 4-byte key ID, and the signature bytes that follow it."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{SIG_PREFIX}{self.name} {_b64(self.key_id + self.signature)}\n"


class VerifierKey(NamedTuple):
    """A parsed ``<name>+<key ID hex>+<base64(0x01 || public key)>`` verifier key."""

    name: str
    key_id: bytes
    public_key: PublicKey


def split_note(note: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines, checking the format strictly."""
    if len(note.encode("utf-8", errors="surrogatepass")) > 1 << 20:
        raise CheckpointError("signed note is larger than 1 MiB")
    _check_note_chars(note, "signed note")
    if not note.endswith("\n"):
        raise CheckpointError("signed note must end with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckpointError("signed note has no blank line between the text and the signatures")
    text, sig_block = note[: cut + 1], note[cut + 2 :]
    if not sig_block:
        raise CheckpointError("signed note has no signature lines")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"signed note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    sigs: list[NoteSignature] = []
    for n, line in enumerate(lines, 1):
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError(f"signature line {n} does not start with an em dash and a space: {line!r}")
        parts = line[len(SIG_PREFIX) :].split(" ")
        if len(parts) != 2:
            raise CheckpointError(f"signature line {n} is not '— <name> <base64 signature>': {line!r}")
        name, b64sig = parts
        check_key_name(name)
        raw = _b64decode(b64sig, f"signature on line {n}")
        if len(raw) <= KEY_ID_SIZE:
            raise CheckpointError(f"signature on line {n} has {len(raw)} bytes, want more than {KEY_ID_SIZE}")
        sigs.append(NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:]))
    return text, sigs


def sign_note(text: str, key_name: str, keypair: KeyPair) -> str:
    """Sign a note text with an Ed25519 key: the text, a blank line, and the signature line."""
    if not text.endswith("\n"):
        raise CheckpointError("note text must end with a newline")
    if "\n\n" in text or text.startswith("\n"):
        raise CheckpointError("note text must not contain empty lines")
    _check_note_chars(text, "note text")
    kid = key_id(key_name, keypair.public)
    sig = keypair.sign_raw(text.encode())
    return text + "\n" + NoteSignature(key_name, kid, sig).line()


def verifier_key(name: str, public_key: PublicKey) -> str:
    """The verifier key string ``<name>+<key ID hex>+<base64(0x01 || public key)>``."""
    return f"{name}+{key_id(name, public_key).hex()}+{_b64(bytes([ALG_ED25519]) + public_key.raw)}"


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse and check a verifier key: its key ID must match its name and key."""
    parts = text.split("+", 2)  # the base64 key may itself contain '+'
    if len(parts) != 3:
        raise CheckpointError(f"verifier key {text!r} is not '<name>+<key id>+<base64 key>'")
    name, hex_id, b64key = parts
    check_key_name(name)
    if not _HEX8_RE.fullmatch(hex_id):
        raise CheckpointError(f"verifier key ID {hex_id!r} is not 8 lowercase hex digits")
    raw = _b64decode(b64key, "verifier public key")
    if len(raw) != 1 + 32:
        raise CheckpointError(f"verifier public key has {len(raw)} bytes, want 33 (type byte and key)")
    if raw[0] != ALG_ED25519:
        raise CheckpointError(f"verifier key type 0x{raw[0]:02x} is not Ed25519 (0x01)")
    public = PublicKey(raw[1:])
    expected = key_id(name, public)
    if expected.hex() != hex_id:
        raise CheckpointError(f"verifier key ID {hex_id} does not match its name and key (want {expected.hex()})")
    return VerifierKey(name, expected, public)


def verify_note(note: str, verifier: str | VerifierKey) -> str:
    """Return the note text after checking its signature by ``verifier``; ignore other keys."""
    key = parse_verifier_key(verifier) if isinstance(verifier, str) else verifier
    text, sigs = split_note(note)
    found = False
    for sig in sigs:
        if sig.name != key.name or sig.key_id != key.key_id:
            continue  # signed-note: ignore signatures from unknown keys
        if len(sig.signature) != ED25519_SIG_SIZE:
            raise CheckpointError(
                f"signature by {key.name} has {len(sig.signature)} bytes, want {ED25519_SIG_SIZE}"
            )
        try:
            key.public_key.verify_raw(text.encode(), sig.signature)
        except BadSignatureError as exc:
            raise CheckpointError(f"signature by {key.name} ({key.key_id.hex()}) does not verify") from exc
        found = True
    if not found:
        raise CheckpointError(f"note is not signed by {key.name} ({key.key_id.hex()})")
    return text


# --- checkpoints ---------------------------------------------------------------------------------


def sign_checkpoint(cp: Checkpoint, key_name: str, keypair: KeyPair) -> str:
    """The signed note text of a checkpoint (the key name SHOULD be the origin)."""
    return sign_note(cp.body(), key_name, keypair)


def open_checkpoint(note: str, verifier: str | VerifierKey) -> Checkpoint:
    """Verify a signed checkpoint by ``verifier`` and parse its body."""
    return Checkpoint.parse_body(verify_note(note, verifier))


# --- witness cosignatures (c2sp.org/tlog-cosignature, Ed25519) ------------------------------------


def cosignature_key_id(name: str, public_key: PublicKey) -> bytes:
    """tlog-cosignature: SHA-256(name || "\\n" || 0x04 || public key)[:4]."""
    return key_id(name, public_key, ALG_COSIGNATURE_V1)


def cosignature_message(text: str, timestamp: int) -> bytes:
    """tlog-cosignature §Ed25519 signed message."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def _check_timestamp(timestamp: int) -> None:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CheckpointError(f"cosignature timestamp {timestamp} out of range [0, 2^63-1]")


def cosign(note: str, witness_name: str, keypair: KeyPair, timestamp: int) -> str:
    """Append a witness cosignature line to a signed checkpoint note.

    The caller (the witness) is expected to have verified the log's signature and consistency.
    """
    _check_timestamp(timestamp)
    text, _ = split_note(note)
    Checkpoint.parse_body(text)
    sig = keypair.sign_raw(cosignature_message(text, timestamp))
    payload = timestamp.to_bytes(8, "big") + sig
    return note + NoteSignature(witness_name, cosignature_key_id(witness_name, keypair.public), payload).line()


def verify_every_cosignature(note: str, witness_name: str, public_key: PublicKey) -> int:
    """Check every cosignature line of ``witness_name`` on a note, each on its own (``verify_cosignature`` is
    satisfied by one good line among bad ones); return the latest timestamp."""
    text, sigs = split_note(note)
    lines = [sig for sig in sigs if sig.name == witness_name]
    if not lines:
        raise CheckpointError(f"checkpoint is not cosigned by {witness_name}")
    return max(verify_cosignature(f"{text}\n{sig.line()}", witness_name, public_key) for sig in lines)


def verify_cosignature(note: str, witness_name: str, public_key: PublicKey) -> int:
    """Check the cosignature of ``witness_name`` on a checkpoint note; return its timestamp."""
    kid = cosignature_key_id(witness_name, public_key)
    text, sigs = split_note(note)
    Checkpoint.parse_body(text)
    timestamp: int | None = None
    for sig in sigs:
        if sig.name != witness_name or sig.key_id != kid:
            continue
        if len(sig.signature) != 8 + ED25519_SIG_SIZE:
            raise CheckpointError(
                f"cosignature by {witness_name} has {len(sig.signature)} bytes, want {8 + ED25519_SIG_SIZE}"
            )
        ts = int.from_bytes(sig.signature[:8], "big")
        _check_timestamp(ts)
        try:
            public_key.verify_raw(cosignature_message(text, ts), sig.signature[8:])
        except BadSignatureError as exc:
            raise CheckpointError(f"cosignature by {witness_name} ({kid.hex()}) does not verify") from exc
        timestamp = ts if timestamp is None else max(timestamp, ts)
    if timestamp is None:
        raise CheckpointError(f"checkpoint is not cosigned by {witness_name} ({kid.hex()})")
    return timestamp
