"""The one module that talks to PyNaCl: raw Ed25519 over bytes."""

from __future__ import annotations

import functools

import nacl.exceptions
import nacl.signing

from signing.errors import BadSignatureError, KeyFormatError

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def generate_seed() -> bytes:
    return bytes(nacl.signing.SigningKey.generate())


def public_key_from_seed(seed: bytes) -> bytes:
    _check_size("private key seed", seed, SEED_SIZE)
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def sign(seed: bytes, message: bytes) -> bytes:
    _check_size("private key seed", seed, SEED_SIZE)
    return _signing_key(seed).sign(message).signature


@functools.lru_cache(maxsize=256)
def _signing_key(seed: bytes) -> nacl.signing.SigningKey:
    # Expanding a seed into a signing key is a scalar multiplication, as long as the signature itself: a process
    # signs with the same few keys over and over (the sequencer a checkpoint per group), so each is expanded once
    # (55 -> 29 us per signature here).
    return nacl.signing.SigningKey(seed)


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise BadSignatureError unless ``signature`` is a valid Ed25519 signature of ``message``.

    libsodium rejects non-canonical S values and small-order keys, so signatures are not malleable.
    """
    _check_size("public key", public_key, PUBLIC_KEY_SIZE)
    if len(signature) != SIGNATURE_SIZE:
        raise BadSignatureError(f"signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}")
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError) as exc:
        raise BadSignatureError("signature does not verify") from exc


def _check_size(what: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise KeyFormatError(f"{what} must be {size} bytes, got {len(data)}")
