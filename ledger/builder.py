"""Builds and signs event bodies for a client: the CLI, the demo and the tests all sign through here."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger import events as ev
from ledger.entry import SignedEvent
from signing import KeyPair


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class EventBuilder:
    actor: str
    key: KeyPair
    clock: Callable[[], dt.datetime] = _now
    new_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)

    def sign(self, kind: str, event_id: str | None = None, **fields: Any) -> SignedEvent:
        body: dict[str, Any] = {"v": ev.SCHEMA_VERSION, "type": kind, "id": event_id or self.new_id(),
                                "actor": self.actor, "time": ev.format_time(self.clock())}
        body.update({k: v for k, v in fields.items() if v is not None})
        return SignedEvent.create(body, self.key)

    def commission(self, gtin: str, lot: str, expiry: dt.date, product: str, serials: Sequence[str],
                   channel: str = "private", **kw: Any) -> SignedEvent:
        return self.sign("commission", gtin=gtin, lot=lot, expiry=expiry.isoformat(), product=product,
                         quantity=len(serials), serials=list(serials), channel=channel, **kw)

    def ship(self, gtin: str, lot: str, to: str, *, serials: Sequence[str] | None = None,
             quantity: int | None = None, channel: str = "private", **kw: Any) -> SignedEvent:
        return self.sign("ship", gtin=gtin, lot=lot, to=to, serials=list(serials) if serials else None,
                         quantity=quantity, channel=channel, **kw)

    def return_(self, gtin: str, lot: str, to: str, reason: str, *, serials: Sequence[str] | None = None,
                quantity: int | None = None, **kw: Any) -> SignedEvent:
        return self.sign("return", gtin=gtin, lot=lot, to=to, reason=reason,
                         serials=list(serials) if serials else None, quantity=quantity, **kw)

    def receive(self, shipment: str, **kw: Any) -> SignedEvent:
        return self.sign("receive", shipment=shipment, **kw)

    def refuse(self, shipment: str, reason: str, **kw: Any) -> SignedEvent:
        return self.sign("refuse", shipment=shipment, reason=reason, **kw)

    def dispense(self, gtin: str, serial: str, *, lot: str | None = None, expiry: dt.date | None = None,
                 **kw: Any) -> SignedEvent:
        return self.sign("dispense", gtin=gtin, serial=serial, lot=lot,
                         expiry=expiry.isoformat() if expiry else None, **kw)

    def undo_dispense(self, gtin: str, serial: str, reason: str, **kw: Any) -> SignedEvent:
        return self.sign("undo_dispense", gtin=gtin, serial=serial, reason=reason, **kw)

    def destroy(self, gtin: str, lot: str, reason: str, *, serials: Sequence[str] | None = None,
                quantity: int | None = None, **kw: Any) -> SignedEvent:
        return self.sign("destroy", gtin=gtin, lot=lot, reason=reason, serials=list(serials) if serials else None,
                         quantity=quantity, **kw)

    def recall(self, gtin: str, lot: str, reason: str, **kw: Any) -> SignedEvent:
        return self.sign("recall", gtin=gtin, lot=lot, reason=reason, **kw)

    def quarantine(self, gtin: str, lot: str, reason: str, **kw: Any) -> SignedEvent:
        return self.sign("quarantine", gtin=gtin, lot=lot, reason=reason, **kw)

    def release(self, gtin: str, lot: str, reason: str, **kw: Any) -> SignedEvent:
        return self.sign("release", gtin=gtin, lot=lot, reason=reason, **kw)

    def report(self, gtin: str, category: str, *, serial: str | None = None, lot: str | None = None,
               details_hash: str | None = None, region: str | None = None, **kw: Any) -> SignedEvent:
        return self.sign("report", gtin=gtin, category=category, serial=serial, lot=lot,
                         details_hash=details_hash, region=region, **kw)

    # regulator root key only
    def register_actor(self, subject: str, name: str, role: str, region: str, public_key: str, *,
                       city: str | None = None, gln: str | None = None, **kw: Any) -> SignedEvent:
        return self.sign("actor_register", subject=subject, name=name, role=role, region=region,
                         public_key=public_key, city=city, gln=gln, **kw)

    def rotate_key(self, subject: str, public_key: str, **kw: Any) -> SignedEvent:
        return self.sign("key_rotate", subject=subject, public_key=public_key, **kw)

    def revoke_key(self, subject: str, key_id: str, reason: str, **kw: Any) -> SignedEvent:
        return self.sign("key_revoke", subject=subject, key_id=key_id, reason=reason, **kw)


def root_builder(root_key: KeyPair, clock: Callable[[], dt.datetime] = _now) -> EventBuilder:
    return EventBuilder(ev.ROOT_ACTOR, root_key, clock)
