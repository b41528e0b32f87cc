"""Bytes and keys only: RFC 8785 canonical encoding, Ed25519 key pairs and files, sign and verify.

Knows nothing of the ledger, the database or HTTP.
"""

from signing.canonical import canonical, purpose_prefix, signing_input
from signing.errors import BadSignatureError, KeyFileError, KeyFormatError, SigningError
from signing.keys import KeyPair, PublicKey, b64decode, b64encode, key_id

__all__ = [
    "BadSignatureError",
    "KeyFileError",
    "KeyFormatError",
    "KeyPair",
    "PublicKey",
    "SigningError",
    "b64decode",
    "b64encode",
    "canonical",
    "key_id",
    "purpose_prefix",
    "signing_input",
]
