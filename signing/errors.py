"""Errors of the signing package.

    SigningError                    base class; ``code`` is stable and machine-readable
    ├── KeyFormatError              a key or key file is malformed or has the wrong size
    ├── KeyFileError                a key file cannot be read or written safely
    ├── BadSignatureError           a signature does not verify for this key, purpose and message
    └── CanonicalEncodingError      a value cannot be encoded as RFC 8785 canonical JSON
"""

from __future__ import annotations


class SigningError(Exception):
    code = "signing_error"


class KeyFormatError(SigningError):
    code = "key_format"


class KeyFileError(SigningError):
    code = "key_file"


class BadSignatureError(SigningError):
    code = "bad_signature"


class CanonicalEncodingError(SigningError):
    code = "canonical_encoding"
