"""Who may sign what: the check that runs before the custody rules and again during an audit.

Two halves, so the sequencer can do the expensive one outside its lock: ``verify_signature`` (Ed25519 over
the canonical event, given the signer's public key, which a key id fixes for ever: the id is a hash of the
key) and ``check_signer`` (the key belongs to the event's actor and was active at this index: that depends
on the registry, so it runs under the lock). ``authenticate`` does both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ledger import errors as E
from ledger import events as ev
from ledger.entry import EVENT_PURPOSE, SignedEvent
from ledger.state import KeyRecord, StateReader
from signing import PublicKey, SigningError, purpose_prefix


@dataclass(frozen=True)
class TrustAnchors:
    """The two public keys configured at ``athar init``: all an offline verifier needs."""

    root: PublicKey
    ledger: PublicKey


def key_active_at(key: KeyRecord, index: int) -> bool:
    return key.added_index < index and (key.retired_index is None or index < key.retired_index)


def anchor_key(signed: SignedEvent, actor: str, trust: TrustAnchors) -> PublicKey | None:
    """The trust anchor that must sign this actor's events (root or ledger), or None for a registered actor."""
    if actor == ev.ROOT_ACTOR:
        return _anchor(signed, trust.root, "the regulator root key")
    if actor == ev.LEDGER_ACTOR:
        return _anchor(signed, trust.ledger, "the ledger key")
    return None


def registered_public_key(key: KeyRecord) -> PublicKey:
    return _public_key(key.key_id, key.public_key)


@functools.lru_cache(maxsize=65_536)
def _public_key(key_id: str, public_key: str) -> PublicKey:
    # Every append and every audited entry asks for its signer's key: decoding it and hashing it to check its id
    # took 3.4 us a time for an answer that depends on these two strings alone (a refusal raises, and is not
    # cached).
    try:
        public = PublicKey.from_b64(public_key)
    except SigningError as exc:
        raise E.IntegrityError(f"registered key {key_id} is malformed") from exc
    if public.key_id != key_id:
        raise E.IntegrityError(f"registered key {key_id} does not hash to its id: the registry was altered")
    return public


def check_signer(signed: SignedEvent, event: ev.Event, index: int, state: StateReader,
                 trust: TrustAnchors) -> PublicKey:
    """Raise an AuthError unless the key may sign for ``event.actor`` at ``index``; return its public key."""
    public = anchor_key(signed, event.actor, trust)
    if public is not None:
        if isinstance(event, ev.ActorRegister | ev.KeyRotate) and _key_id(event.public_key) in (
                trust.root.key_id, trust.ledger.key_id):
            # the server holds the ledger's private key: as an actor's key it would let the server sign as the actor
            raise E.InvalidEvent("the ledger's and the root's own keys cannot be an actor's key")
        return public
    key = state.key(signed.key_id)
    if key is None:
        raise E.UnknownKey(f"key {signed.key_id} is not registered in the ledger", key_id=signed.key_id)
    if key.actor != event.actor:
        raise E.SignerMismatch(f"key {signed.key_id} belongs to {key.actor}, but the event names "
                               f"{event.actor} as its actor", key_id=signed.key_id)
    if not key_active_at(key, index):
        raise E.KeyNotActive(f"key {signed.key_id} of {key.actor} was {key.status} at entry "
                             f"{key.retired_index} and signs nothing after that", key_id=signed.key_id)
    return registered_public_key(key)


def _key_id(public_key_b64: str) -> str | None:
    try:
        return PublicKey.from_b64(public_key_b64).key_id
    except SigningError:
        return None  # the custody rules refuse it, naming the field


def verify_signature(signed: SignedEvent, public: PublicKey) -> None:
    try:
        public.verify_raw(purpose_prefix(EVENT_PURPOSE) + signed.body_bytes, signed.signature)
    except SigningError as exc:
        raise E.SignatureInvalid(f"the signature does not verify with key {signed.key_id} over the "
                                 f"canonical event (RFC 8785, purpose athar/v1/event)",
                                 key_id=signed.key_id) from exc


def authenticate(signed: SignedEvent, event: ev.Event, index: int, state: StateReader,
                 trust: TrustAnchors) -> None:
    """Raise an AuthError unless ``signed`` was signed by a key of ``event.actor`` valid at ``index``."""
    verify_signature(signed, check_signer(signed, event, index, state, trust))


def _anchor(signed: SignedEvent, key: PublicKey, what: str) -> PublicKey:
    if signed.key_id != key.key_id:
        raise E.SignerMismatch(f"events of this actor must be signed by {what} ({key.key_id}), "
                               f"not {signed.key_id}", key_id=signed.key_id)
    return key
