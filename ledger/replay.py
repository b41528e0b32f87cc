"""An in-memory state that the custody rules can run on: for replaying the log (audit) and for tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger.state import (
    Actor,
    AddPacks,
    AdjustHolding,
    AlertRecord,
    Batch,
    Change,
    KeyRecord,
    Pack,
    PoolPacks,
    PutActor,
    PutAlert,
    PutBatch,
    PutKey,
    PutPacks,
    PutShipment,
    Shipment,
)


@dataclass
class MemoryState:
    actors: dict[str, Actor] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    batches: dict[tuple[str, str], Batch] = field(default_factory=dict)
    packs_: dict[tuple[str, str], Pack] = field(default_factory=dict)
    holdings: dict[tuple[str, str, str], int] = field(default_factory=dict)
    shipments: dict[str, Shipment] = field(default_factory=dict)
    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    # the serials of active packs by (gtin, lot, holder): a movement by quantity pools its sender's packs of the
    # batch, and finding them among all packs made a replay quadratic (58 ms a movement with 10^6 packs held)
    active: dict[tuple[str, str, str | None], set[str]] = field(default_factory=dict, repr=False)

    def actor(self, actor_id: str) -> Actor | None:
        return self.actors.get(actor_id)

    def key(self, key_id: str) -> KeyRecord | None:
        return self.keys.get(key_id)

    def active_keys(self, actor_id: str) -> list[KeyRecord]:
        return [k for k in self.keys.values() if k.actor == actor_id and k.status == "active"]

    def batch(self, gtin: str, lot: str) -> Batch | None:
        return self.batches.get((gtin, lot))

    def pack(self, gtin: str, serial: str) -> Pack | None:
        return self.packs_.get((gtin, serial))

    def packs(self, gtin: str, serials: tuple[str, ...]) -> dict[str, Pack]:
        return {s: p for s in serials if (p := self.packs_.get((gtin, s))) is not None}

    def holding(self, actor: str, gtin: str, lot: str) -> int:
        return self.holdings.get((actor, gtin, lot), 0)

    def shipment(self, shipment_id: str) -> Shipment | None:
        return self.shipments.get(shipment_id)

    def alert(self, alert_id: str) -> AlertRecord | None:
        return self.alerts.get(alert_id)

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            match change:
                case PutActor(actor):
                    self.actors[actor.id] = actor
                case PutKey(record):
                    self.keys[record.key_id] = record
                case PutBatch(batch):
                    self.batches[(batch.gtin, batch.lot)] = batch
                case AddPacks(gtin, lot, serials, holder):
                    self._put([Pack(gtin, s, lot, "active", holder, None, None, None) for s in serials])
                case PutPacks(packs):
                    self._put(packs)
                case PoolPacks(gtin, lot, holder):
                    pooled = self.active.pop((gtin, lot, holder), set())
                    for serial in pooled:
                        self.packs_[(gtin, serial)] = self.packs_[(gtin, serial)].moved("active", None)
                    if pooled:
                        self.active.setdefault((gtin, lot, None), set()).update(pooled)
                case AdjustHolding(actor, gtin, lot, delta):
                    slot = (actor, gtin, lot)
                    self.holdings[slot] = self.holdings.get(slot, 0) + delta
                case PutShipment(shipment):
                    self.shipments[shipment.id] = shipment
                case PutAlert(alert):
                    self.alerts[alert.id] = alert
                case _:  # pragma: no cover
                    raise AssertionError(change)

    def _put(self, packs: Iterable[Pack]) -> None:
        for p in packs:
            key = (p.gtin, p.serial)
            old = self.packs_.get(key)
            if old is not None and old.status == "active":
                self.active[(old.gtin, old.lot, old.holder)].discard(old.serial)
            self.packs_[key] = p
            if p.status == "active":
                self.active.setdefault((p.gtin, p.lot, p.holder), set()).add(p.serial)
