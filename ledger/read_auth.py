"""Server side of authenticated reads: check a signed request or a session token against the registry."""

from __future__ import annotations

import datetime as dt

from ledger import errors as E
from ledger.admission import registered_public_key
from ledger.queries import Principal
from ledger.request_signing import (
    HEADER_SIGNATURE,
    HEADER_TIME,
    READ_PURPOSE,
    SESSION_PURPOSE,
    parse_session_token,
    signed_value,
)
from ledger.service import Ledger
from ledger.state import Actor, KeyRecord
from signing import b64decode
from signing.errors import SigningError

MAX_SESSION = dt.timedelta(hours=12)


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
    record, key = _signer(ledger, actor, key_id)
    try:
        registered_public_key(key).verify(READ_PURPOSE, signed_value(actor, key_id, method, path, ts),
                                          b64decode(signature, HEADER_SIGNATURE))
    except SigningError as exc:
        raise E.SignatureInvalid(f"the read signature does not verify with key {key_id} for {method} {path}") from exc
    return Principal(record)



def authenticate_session(ledger: Ledger, token: str) -> Principal:
    try:
        claim, signature = parse_session_token(token)
        actor, key_id, expires = claim["actor"], claim["key_id"], claim["expires"]
        if set(claim) != {"actor", "key_id", "expires"} or not isinstance(actor, str) or \
                not isinstance(key_id, str) or type(expires) is not int:
            raise ValueError("unexpected claim")
    except (ValueError, KeyError, TypeError) as exc:
        raise E.SignatureInvalid("the session token is malformed") from exc
    now = ledger.clock()
    if not now.timestamp() < expires <= (now + MAX_SESSION).timestamp():
        raise E.SignatureInvalid("the session token has expired (or claims more than 12 hours); make a new one")
    record, key = _signer(ledger, actor, key_id)
    try:
        registered_public_key(key).verify(SESSION_PURPOSE, claim, signature)
    except SigningError as exc:
        raise E.SignatureInvalid("the session token's signature does not verify") from exc
    return Principal(record)


def _signer(ledger: Ledger, actor: str, key_id: str) -> tuple[Actor, KeyRecord]:
    """The actor and its key that may sign a read (a request or a session token): the same refusals for both."""
    with ledger.store.read() as u:
        record, key = u.actor(actor), u.key(key_id)
    if record is None:
        raise E.UnknownKey(f"actor {actor!r} is not registered")
    if key is None or key.actor != actor:
        raise E.UnknownKey(f"key {key_id} is not a key of {actor}", key_id=key_id)
    if key.status != "active":
        raise E.KeyNotActive(f"key {key_id} of {actor} is {key.status}", key_id=key_id)
    if record.status != "active":
        raise E.KeyNotActive(f"actor {actor} is {record.status}", key_id=key_id)
    return record, key
