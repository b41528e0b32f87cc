"""Key pairs, key ids and key files.

A key id is ``ed25519:`` followed by the first 16 bytes of SHA-256 over the 32-byte public key, in
lowercase hex: short enough to print, long enough that no two keys collide by accident.

Key files are small JSON documents. A private key file holds the 32-byte seed (base64) and is created
with mode 0600 atomically (never world-readable, even for an instant); its ``repr`` never shows it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signing import ed25519
from signing.canonical import signing_input
from signing.errors import BadSignatureError, KeyFileError, KeyFormatError

KEY_ID_PREFIX = "ed25519:"
ALGORITHM = "ed25519"


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str = "value") -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise KeyFormatError(f"{what} is not valid base64") from exc


def key_id(public_key: bytes) -> str:
    if len(public_key) != ed25519.PUBLIC_KEY_SIZE:
        raise KeyFormatError(f"public key must be 32 bytes, got {len(public_key)}")
    return KEY_ID_PREFIX + hashlib.sha256(public_key).digest()[:16].hex()


@dataclass(frozen=True)
class PublicKey:
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != ed25519.PUBLIC_KEY_SIZE:
            raise KeyFormatError(f"public key must be 32 bytes, got {len(self.raw)}")

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        return cls(b64decode(text, "public key"))

    @functools.cached_property
    def key_id(self) -> str:
        # kept: a server compares the trust anchors' key ids with every submission's
        return key_id(self.raw)

    @property
    def b64(self) -> str:
        return b64encode(self.raw)

    def verify_raw(self, message: bytes, signature: bytes) -> None:
        ed25519.verify(self.raw, message, signature)

    def verify(self, purpose: str, value: Any, signature: bytes) -> None:
        """Verify a signature over ``value`` made for ``purpose`` (see signing.canonical)."""
        try:
            ed25519.verify(self.raw, signing_input(purpose, value), signature)
        except BadSignatureError as exc:
            raise BadSignatureError(
                f"signature does not verify for key {self.key_id} and purpose {purpose!r}"
            ) from exc


@dataclass(frozen=True)
class KeyPair:
    seed: bytes = field(repr=False)
    public: PublicKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_seed(ed25519.generate_seed())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        return cls(seed=seed, public=PublicKey(ed25519.public_key_from_seed(seed)))

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign_raw(self, message: bytes) -> bytes:
        """Sign bytes whose format is fixed by a standard (e.g. a C2SP signed note)."""
        return ed25519.sign(self.seed, message)

    def sign(self, purpose: str, value: Any) -> bytes:
        """Sign the canonical form of ``value`` under a purpose tag."""
        return ed25519.sign(self.seed, signing_input(purpose, value))

    def __repr__(self) -> str:
        return f"KeyPair(key_id={self.key_id!r}, seed=<hidden>)"


def write_private_key(path: Path, pair: KeyPair, *, label: str = "", overwrite: bool = False) -> None:
    """Write a private key file with mode 0600, created atomically; refuse to overwrite by default."""
    doc = {
        "type": "athar-private-key",
        "algorithm": ALGORITHM,
        "key_id": pair.key_id,
        "label": label,
        "public_key": pair.public.b64,
        "seed": b64encode(pair.seed),
    }
    data = (json.dumps(doc, indent=2) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a private key") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


def read_private_key(path: Path) -> KeyPair:
    doc = _read_json(path)
    if doc.get("type") != "athar-private-key" or doc.get("algorithm") != ALGORITHM:
        raise KeyFileError(f"{path} is not an athar Ed25519 private key file")
    pair = KeyPair.from_seed(b64decode(str(doc.get("seed", "")), f"seed in {path}"))
    if doc.get("key_id") not in (None, pair.key_id):
        raise KeyFileError(f"{path}: key_id {doc.get('key_id')} does not match its seed ({pair.key_id})")
    return pair


def write_public_key(path: Path, key: PublicKey, *, label: str = "") -> None:
    doc = {"type": "athar-public-key", "algorithm": ALGORITHM, "key_id": key.key_id, "label": label,
           "public_key": key.b64}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def public_key_path(private_key_path: Path) -> Path:
    """Where a private key's public half is kept: NAME.pub beside NAME.key (or beside NAME)."""
    if private_key_path.suffix == ".key":
        return private_key_path.with_suffix(".pub")
    return private_key_path.with_name(private_key_path.name + ".pub")


def read_public_key(path: Path) -> PublicKey:
    doc = _read_json(path)
    if doc.get("type") == "athar-private-key":
        # it holds the public key too, but whoever is handed this file could sign as its owner
        raise KeyFileError(f"{path} is a private key file: give its public half instead "
                           f"({public_key_path(path).name}, written beside it when it was made)")
    if doc.get("algorithm") != ALGORITHM or "public_key" not in doc:
        raise KeyFileError(f"{path} is not an athar Ed25519 key file")
    return PublicKey.from_b64(str(doc["public_key"]))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{path} is not an athar key file (a JSON document with the key in base64)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise KeyFileError(f"{path} is not a key file")
    return doc
