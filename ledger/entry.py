"""Signed submissions and log entries, and their exact bytes.

A client submits a ``SignedEvent``: the event body, the id of the key that signed it and an Ed25519
signature over ``b"athar/v1/event\\x00" + JCS(body)``. The sequencer wraps it in an ``Entry`` with its
index, receive time, chain and ``prev`` (the hash of the previous entry of the same chain). The
entry's canonical JSON is the RFC 9162 leaf; the entry hash is the leaf hash SHA-256(0x00 || leaf).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger import events as ev
from ledger.errors import IntegrityError, InvalidEvent
from ledger.merkle import leaf_hash
from signing import KeyPair, b64decode, b64encode, canonical
from signing.canonical import parse_json
from signing.errors import SigningError

EVENT_PURPOSE = "event"
ENTRY_VERSION = 1
MAX_SIGNATURE_B64 = 100
MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 integers beyond it are written as doubles


@dataclass(frozen=True)
class SignedEvent:
    body: Mapping[str, Any]
    key_id: str
    signature: bytes

    @classmethod
    def create(cls, body: Mapping[str, Any], key: KeyPair) -> SignedEvent:
        return cls(body, key.key_id, key.sign(EVENT_PURPOSE, body))

    @classmethod
    def from_json(cls, doc: Any) -> SignedEvent:
        if not isinstance(doc, Mapping):
            raise InvalidEvent("a submission must be a JSON object with 'event', 'key_id' and 'signature'")
        unknown = sorted(set(doc) - {"event", "key_id", "signature"})
        if unknown:
            raise InvalidEvent(f"unknown field(s) in the submission: {', '.join(unknown)}")
        body, kid, sig = doc.get("event"), doc.get("key_id"), doc.get("signature")
        if not isinstance(body, Mapping):
            raise InvalidEvent("'event' must be the JSON object that was signed")
        if not isinstance(kid, str) or not kid or len(kid) > 100:
            raise InvalidEvent("'key_id' must be the signing key's id, e.g. ed25519:1f2e...")
        if not isinstance(sig, str) or len(sig) > MAX_SIGNATURE_B64:
            raise InvalidEvent("'signature' must be a base64 Ed25519 signature")
        try:
            signed = cls(dict(body), kid, b64decode(sig, "signature"))
            signed.body_bytes  # noqa: B018 - refuse at the boundary what no signature could cover (floats...)
        except SigningError as exc:
            raise InvalidEvent(str(exc)) from exc
        return signed

    @functools.cached_property
    def body_bytes(self) -> bytes:
        """The body's RFC 8785 bytes: what the signature covers and what the log entry embeds. Encoded once
        (it travels with the event to the sequencer), as encoding is a good part of an append's CPU."""
        return canonical(dict(self.body))

    def to_json(self) -> dict[str, Any]:
        return {"event": dict(self.body), "key_id": self.key_id, "signature": b64encode(self.signature)}

    @property
    def event_id(self) -> str:
        return str(self.body.get("id", ""))

    def same_as(self, other: SignedEvent) -> bool:
        if self.key_id != other.key_id or self.signature != other.signature:
            return False
        try:
            return self.body_bytes == other.body_bytes
        except SigningError:
            return False  # a body that cannot even be encoded is not the recorded event


@dataclass(frozen=True)
class Entry:
    index: int
    received: dt.datetime
    chain: str
    prev: bytes | None
    signed: SignedEvent

    def to_json(self) -> dict[str, Any]:
        return {
            "v": ENTRY_VERSION,
            "index": self.index,
            "received": ev.format_time(self.received),
            "chain": self.chain,
            "prev": self.prev.hex() if self.prev is not None else None,
            "event": dict(self.signed.body),
            "key_id": self.signed.key_id,
            "signature": b64encode(self.signed.signature),
        }

    def leaf(self) -> bytes:
        return self._leaf

    @functools.cached_property
    def _leaf(self) -> bytes:
        # an entry is immutable, and its canonical form is needed for the hash, the row and the audit
        if not 0 <= self.index <= MAX_SAFE_INTEGER:
            return canonical(self.to_json())
        # RFC 8785 encodes an object member by member, keys sorted: the body's canonical bytes, already made
        # to check its signature, are the "event" member as they are (a property test checks the equality)
        signed = self.signed
        return b"".join((
            b'{"chain":', canonical(self.chain), b',"event":', signed.body_bytes,
            b',"index":', str(self.index).encode(), b',"key_id":', canonical(signed.key_id),
            b',"prev":', b'"%s"' % self.prev.hex().encode() if self.prev is not None else b"null",
            b',"received":"', ev.format_time(self.received).encode(), b'","signature":"',
            b64encode(signed.signature).encode(), b'","v":', b"%d}" % ENTRY_VERSION))

    @functools.cached_property
    def hash(self) -> bytes:
        return leaf_hash(self._leaf)

    @classmethod
    def from_leaf(cls, leaf: bytes) -> Entry:
        """Parse stored leaf bytes; raise IntegrityError if they are not a well-formed canonical entry."""
        try:
            entry = cls._from_doc(parse_json(leaf))
            # Only the one serialisation the sequencer writes is accepted: an entry that parses to the same
            # meaning but has other bytes (whitespace, escapes, fields added, reordered or respelled) would
            # have another leaf hash. Writing the parsed entry again the sequencer's way (around the body's
            # canonical bytes, which the signature check needs anyway) and comparing the bytes checks the
            # canonical form and the exact fields at once, for half the cost of encoding the leaf afresh.
            canonical_form = entry._leaf
        except SigningError as exc:
            raise IntegrityError(f"stored entry is malformed: {exc}") from exc
        if canonical_form != leaf:
            raise IntegrityError("stored entry is not in the canonical form the sequencer writes (RFC 8785; "
                                 "fields added, reordered or respelled)")
        return entry

    @classmethod
    def from_checked_leaf(cls, leaf: bytes) -> Entry:
        """Parse leaf bytes that ``from_leaf`` has already accepted (in an audit helper process): the same
        entry, without checking the form again, which costs most of the parse."""
        try:
            doc = parse_json(leaf)
        except SigningError as exc:
            raise IntegrityError(f"stored entry is malformed: {exc}") from exc
        entry = cls._from_doc(doc)
        entry.__dict__["_leaf"] = leaf
        return entry

    @classmethod
    def _from_doc(cls, doc: Any) -> Entry:
        try:
            if not isinstance(doc, dict) or type(doc.get("v")) is not int or doc["v"] != ENTRY_VERSION:
                raise ValueError("not a version-1 entry")
            if type(doc.get("index")) is not int or not all(
                    isinstance(doc.get(k), str) for k in ("received", "chain", "key_id", "signature")):
                raise ValueError("a field has the wrong type")
            prev = doc["prev"]
            return cls(
                index=doc["index"],
                received=ev.parse_time(doc["received"], "received"),
                chain=doc["chain"],
                prev=bytes.fromhex(prev) if prev is not None else None,
                signed=SignedEvent(doc["event"], doc["key_id"], b64decode(doc["signature"], "signature")),
            )
        except (SigningError, InvalidEvent, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"stored entry is malformed: {exc}") from exc


@dataclass(frozen=True)
class Receipt:
    """What every write returns: where the entry is, and proof that it is in the signed tree."""

    index: int
    entry_hash: bytes
    chain: str
    prev: bytes | None
    received: dt.datetime
    event_id: str
    tree_size: int
    root: bytes
    inclusion_proof: tuple[bytes, ...]
    checkpoint: str
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "entry_hash": self.entry_hash.hex(),
            "chain": self.chain,
            "prev": self.prev.hex() if self.prev else None,
            "received": ev.format_time(self.received),
            "event_id": self.event_id,
            "tree_size": self.tree_size,
            "root_hash": self.root.hex(),
            "inclusion_proof": [h.hex() for h in self.inclusion_proof],
            "checkpoint": self.checkpoint,
            "replayed": self.replayed,
        }


def indexed_columns(event_type: str, event: Any, entry: Entry) -> tuple[str | None, str | None, str | None]:
    """The (gtin, lot, serial) columns stored beside an entry for lookups; the audit recomputes and compares
    them, because the public pack page is read through them."""
    gtin, lot = getattr(event, "gtin", None), getattr(event, "lot", None)
    if lot is None and entry.chain.startswith("batch/"):
        _, gtin, lot = entry.chain.split("/", 2)
    serial = entry.signed.body.get("serial")
    return gtin, lot, serial if isinstance(serial, str) and len(serial) <= 20 else None
