"""Authenticated reads without passwords: the reader signs the request with its registered actor key.

The signed value is the canonical JSON object
``{"actor", "key_id", "method", "path", "timestamp"}`` under purpose ``read-auth`` (so the prefix
``athar/v1/read-auth\\x00``), where ``path`` is the request path with its raw query string, and
``timestamp`` is Unix seconds; the server accepts it within a few minutes of its own clock.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from ledger import errors as E
from ledger.queries import Principal
from ledger.service import Ledger
from signing import BadSignatureError, KeyPair, PublicKey, b64decode, b64encode, canonical
from signing.errors import SigningError

READ_PURPOSE = "read-auth"
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


def authenticate_read(ledger: Ledger, *, actor: str, key_id: str, timestamp: str, signature: str, method: str,
                      path: str, max_skew: dt.timedelta) -> Principal:
    try:
        ts = int(timestamp)
    except ValueError as exc:
        raise E.SignatureInvalid(f"{HEADER_TIME} must be Unix seconds") from exc
    now = ledger.clock()
    if abs(now.timestamp() - ts) > max_skew.total_seconds():
        raise E.SignatureInvalid(f"the request was signed at {ts}, too far from the server time "
                                 f"{int(now.timestamp())}; check the clock")
    with ledger.store.read() as u:
        record = u.actor(actor)
        key = u.key(key_id)
    if record is None:
        raise E.UnknownKey(f"actor {actor!r} is not registered")
    if key is None or key.actor != actor:
        raise E.UnknownKey(f"key {key_id} is not a key of {actor}", key_id=key_id)
    if key.status != "active" or record.status != "active":
        raise E.KeyNotActive(f"key {key_id} of {actor} is {key.status}", key_id=key_id)
    try:
        PublicKey.from_b64(key.public_key).verify(READ_PURPOSE, signed_value(actor, key_id, method, path, ts),
                                                  b64decode(signature, HEADER_SIGNATURE))
    except (BadSignatureError, SigningError) as exc:
        raise E.SignatureInvalid(f"the read signature does not verify with key {key_id} for {method} {path}") from exc
    return Principal(record)


SESSION_PURPOSE = "session"
MAX_SESSION = dt.timedelta(hours=12)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_session_token(key: KeyPair, actor: str, expires: dt.datetime) -> str:
    """A short-lived bearer token for a browser (the regulator's dashboard): the actor signs its own claim
    with its key, so the server still stores no password and no session."""
    claim = {"actor": actor, "key_id": key.key_id, "expires": int(expires.timestamp())}
    return _b64url(canonical(claim)) + "." + _b64url(key.sign(SESSION_PURPOSE, claim))


def authenticate_session(ledger: Ledger, token: str) -> Principal:
    try:
        claim_b64, sig_b64 = token.split(".", 1)
        claim = json.loads(_unb64url(claim_b64))
        signature = _unb64url(sig_b64)
        actor, key_id, expires = str(claim["actor"]), str(claim["key_id"]), int(claim["expires"])
    except (ValueError, KeyError, TypeError) as exc:
        raise E.SignatureInvalid("the session token is malformed") from exc
    now = ledger.clock()
    if not now.timestamp() < expires <= (now + MAX_SESSION).timestamp():
        raise E.SignatureInvalid("the session token has expired (or claims more than 12 hours); make a new one")
    with ledger.store.read() as u:
        record, key = u.actor(actor), u.key(key_id)
    if record is None or key is None or key.actor != actor or key.status != "active" or record.status != "active":
        raise E.UnknownKey(f"key {key_id} is not an active key of {actor}", key_id=key_id)
    try:
        PublicKey.from_b64(key.public_key).verify(SESSION_PURPOSE, claim, signature)
    except BadSignatureError as exc:
        raise E.SignatureInvalid("the session token's signature does not verify") from exc
    return Principal(record)
