"""Authenticated reads without passwords: the reader signs the request with its registered actor key.

The signed value is the canonical JSON object
``{"actor", "key_id", "method", "path", "timestamp"}`` under purpose ``read-auth`` (so the prefix
``athar/v1/read-auth\\x00``), where ``path`` is the request path with its raw query string, and
``timestamp`` is Unix seconds; the server accepts it within a few minutes of its own clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ledger import errors as E
from ledger.queries import Principal
from ledger.service import Ledger
from signing import BadSignatureError, KeyPair, PublicKey, b64decode, b64encode
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
