"""The bytes a reader signs: signed read requests and session tokens (no I/O; clients import only this).

A signed read request carries four headers. The signed value is the canonical JSON object
``{"actor", "key_id", "method", "path", "timestamp"}`` under purpose ``read-auth`` (prefix
``athar/v1/read-auth\x00``), where ``path`` is the request path with its raw query string and ``timestamp`` is
Unix seconds. A session token (for a browser) is the reader's own signed claim ``{"actor", "key_id",
"expires"}`` under purpose ``session``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from signing import KeyPair, b64encode, canonical

READ_PURPOSE = "read-auth"
SESSION_PURPOSE = "session"
HEADER_ACTOR = "Athar-Actor"
HEADER_KEY = "Athar-Key-Id"
HEADER_TIME = "Athar-Timestamp"
HEADER_SIGNATURE = "Athar-Signature"


def signed_value(actor: str, key_id: str, method: str, path: str, timestamp: int) -> dict[str, Any]:
    return {"actor": actor, "key_id": key_id, "method": method.upper(), "path": path, "timestamp": timestamp}


def sign_request(key: KeyPair, actor: str, method: str, path: str, timestamp: int) -> dict[str, str]:
    """The headers a client adds to a read request."""
    sig = key.sign(READ_PURPOSE, signed_value(actor, key.key_id, method, path, timestamp))
    return {HEADER_ACTOR: actor, HEADER_KEY: key.key_id, HEADER_TIME: str(timestamp), HEADER_SIGNATURE: b64encode(sig)}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_session_token(key: KeyPair, actor: str, expires: dt.datetime) -> str:
    """A short-lived bearer token for a browser (the regulator's dashboard): the actor signs its own claim
    with its key, so the server still stores no password and no session."""
    claim = {"actor": actor, "key_id": key.key_id, "expires": int(expires.timestamp())}
    return b64url(canonical(claim)) + "." + b64url(key.sign(SESSION_PURPOSE, claim))


def parse_session_token(token: str) -> tuple[dict[str, Any], bytes]:
    """The claim and signature of a token; ValueError if it is not well formed."""
    claim_b64, sig_b64 = token.split(".", 1)
    claim = json.loads(unb64url(claim_b64))
    if not isinstance(claim, dict):
        raise ValueError("the claim is not an object")
    return claim, unb64url(sig_b64)
