"""The projections as one group append sees them: read once, changed in memory, written once.

A group holds the log-head lock, so nothing else changes the ledger while it runs. Its custody decisions
read packs, holdings and shipments that its own earlier events just changed; round-tripping every such
read and write to the database cost several statements per event. Here the packs a group names are read
in one query before it starts, every read after that is served from memory, and the pack, holding, shipment
and alert rows it changes are written together by ``flush``, in the same transaction, before the commit.

Changes that touch many rows by a predicate (``PoolPacks``) or create many (``AddPacks``) go to the
database at once; the rows they touch are flushed before and forgotten after, so memory never disagrees
with what the database holds.

The registry, batches and chain heads a group ends with are also ``Carried`` to the same process's next
group, which reads through them (an overlay: a failed group leaves them untouched) as long as nobody else
has written since (``Carried.version``).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ledger import events as ev
from ledger.merkle import CompactRange
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
from ledger.storage.group_reads import GroupReads, GroupWants, HoldingKey
from ledger.storage.sql import CHUNK, SqlUnit, listed_packs

ChainHead = tuple[bytes, int, int]
K = TypeVar("K")
V = TypeVar("V")
MAX_CARRIED = 100_000  # entries per carried map


def overlay(base: dict[K, V] | None) -> ChainMap[K, V]:
    return ChainMap({}, base) if base is not None else ChainMap({})


def merged(chain: ChainMap[K, V]) -> dict[K, V]:
    """The overlay's changes written into its base (or the overlay itself when it has none)."""
    front = chain.maps[0]
    assert isinstance(front, dict)
    if len(chain.maps) == 1:
        return front
    base = chain.maps[1]
    assert isinstance(base, dict)
    base.update(front)
    return base


@dataclass
class Carried:
    """What one group leaves to the next group of the same process: the registry, batches, chain heads and
    Merkle frontier it ended with. Valid only for the log head (and rewrite count) it was left at: if another
    process appended in between, or a rebuild rewrote the projections (it counts one in the log head), the next
    group reads everything again."""

    version: tuple[int, bytes, int]
    tree: CompactRange
    actors: dict[str, Actor | None] = field(default_factory=dict)
    keys: dict[str, KeyRecord | None] = field(default_factory=dict)
    batches: dict[tuple[str, str], Batch | None] = field(default_factory=dict)
    heads: dict[str, ChainHead | None] = field(default_factory=dict)


class GroupState:
    """A ``StateReader`` over one SQL unit for the length of one group, with write-behind projections."""

    def __init__(self, u: SqlUnit, carried: Carried | None = None) -> None:
        self.u = u
        # what this group reads or changes goes to the front map: a group that fails leaves the carried state
        # as it was, and nothing is copied per group
        self._actors: ChainMap[str, Actor | None] = overlay(carried.actors if carried else None)
        self._keys: ChainMap[str, KeyRecord | None] = overlay(carried.keys if carried else None)
        self._batches: ChainMap[tuple[str, str], Batch | None] = overlay(carried.batches if carried else None)
        self._packs: dict[tuple[str, str], Pack | None] = {}
        self._holdings: dict[HoldingKey, int] = {}
        self._shipments: dict[str, Shipment | None] = {}
        self._dirty_packs: dict[tuple[str, str], Pack] = {}
        self._dirty_holdings: set[HoldingKey] = set()
        self._dirty_shipments: dict[str, Shipment] = {}
        self._new_shipments: dict[str, Shipment] = {}  # shipped in this group, perhaps also closed in it
        self._dirty_alerts: dict[str, AlertRecord] = {}  # filed or updated in this group

    def prefetch(self, events: Sequence[ev.Event], key_ids: Iterable[str]) -> None:
        """Read in a few queries what the group's events will ask for one by one: their actors and keys, the
        existing packs they name by serial, and their actors' holdings of the batches concerned."""
        wants = self.wants(events, key_ids)
        actors = self.u.actors_by_id(wants.actor_ids)
        self._actors.update((a, actors.get(a)) for a in wants.actor_ids)
        keys = self.u.keys_by_id(wants.key_ids)
        self._keys.update((k, keys.get(k)) for k in wants.key_ids)
        shipments = self.u.shipments_by_id(wants.shipment_ids)
        self._shipments.update((i, shipments.get(i)) for i in wants.shipment_ids)
        for gtin, names in self._serials_named(events).items():
            self.packs(gtin, tuple(sorted(names)))
        held = self._held(events)
        quantities = self.u.holdings_of(held)
        self._holdings.update((k, quantities.get(k, 0)) for k in held)

    def wants(self, events: Sequence[ev.Event], key_ids: Iterable[str]) -> GroupWants:
        """What the group's events will ask for, less what this state already holds: as ``prefetch`` reads it,
        for ``SqlUnit.lock_and_read`` to read at once (event ids are the caller's)."""
        actor_ids = {e.actor for e in events} | {to for e in events if isinstance(to := getattr(e, "to", None), str)}
        wants = GroupWants(actor_ids=sorted(a for a in actor_ids if a not in self._actors),
                           key_ids=sorted({k for k in key_ids if k not in self._keys}),
                           shipment_ids=sorted({e.shipment for e in events if isinstance(e, ev.Receive | ev.Refuse)}
                                               - self._shipments.keys()))
        for event in events:
            if isinstance(event, ev.Commission):
                continue  # names new packs; the rule asks for them itself, in one query
            gtin, lot, serial, serials = (getattr(event, n, None) for n in ("gtin", "lot", "serial", "serials"))
            if not isinstance(gtin, str):
                continue
            named = [serial] if isinstance(serial, str) else []
            named += list(serials) if isinstance(serials, tuple) else []
            wants.packs.extend((gtin, s) for s in named if (gtin, s) not in self._packs)
            to = getattr(event, "to", None)
            for who in (event.actor, *([to] if isinstance(to, str) else [])):
                if isinstance(lot, str):
                    wants.holdings.append((who, gtin, lot))
                elif isinstance(serial, str):
                    wants.holdings_by_pack.append((who, gtin, serial))
        return wants

    def absorb(self, reads: GroupReads, wants: GroupWants, events: Sequence[ev.Event]) -> None:
        """Take what ``SqlUnit.lock_and_read`` read for ``wants`` (under the lock), misses included; holdings it
        did not evaluate (none, unless the rules above and its statement disagree) are read here."""
        self._actors.update((a, reads.actors.get(a)) for a in wants.actor_ids if a not in self._actors)
        self._keys.update((k, reads.keys.get(k)) for k in wants.key_ids if k not in self._keys)
        self._shipments.update((i, reads.shipments.get(i)) for i in wants.shipment_ids)
        for key, pack in reads.packs.items():
            self._packs.setdefault(key, pack)
        for gtin, names in self._serials_named(events).items():
            if len(names) <= CHUNK:  # remember misses too, as ``packs`` does
                self._packs.update(((gtin, s), None) for s in names if (gtin, s) not in self._packs)
        held = self._held(events)
        self._holdings.update((k, q) for k, q in reads.holdings.items() if k in held)
        missing = held - reads.holdings.keys()
        if missing:
            quantities = self.u.holdings_of(missing)
            self._holdings.update((k, quantities.get(k, 0)) for k in missing)

    def _serials_named(self, events: Sequence[ev.Event]) -> dict[str, set[str]]:
        """The serials, by GTIN, of the packs the events name, directly or through the shipments they receive."""
        serials_of: dict[str, set[str]] = {}
        for event in events:
            shipment = self._shipments.get(event.shipment) if isinstance(event, ev.Receive | ev.Refuse) else None
            if shipment is not None and shipment.serials:
                serials_of.setdefault(shipment.gtin, set()).update(shipment.serials)
            if isinstance(event, ev.Commission):
                continue  # names new packs; the rule asks for them itself, in one query
            gtin, serial, serials = (getattr(event, n, None) for n in ("gtin", "serial", "serials"))
            if isinstance(gtin, str):
                names = serials_of.setdefault(gtin, set())
                if isinstance(serial, str):
                    names.add(serial)
                if isinstance(serials, tuple):
                    names.update(serials)
        return serials_of

    def _held(self, events: Sequence[ev.Event]) -> set[HoldingKey]:
        """The holdings the events concern and this state does not hold yet (packs and shipments read)."""
        held: set[HoldingKey] = set()
        for event in events:
            gtin, lot, serial = (getattr(event, n, None) for n in ("gtin", "lot", "serial"))
            if isinstance(gtin, str) and isinstance(serial, str) and not isinstance(lot, str):
                pack = self._packs.get((gtin, serial))
                lot = pack.lot if pack is not None else None
            if isinstance(gtin, str) and isinstance(lot, str):
                held.add((event.actor, gtin, lot))
                if isinstance(to := getattr(event, "to", None), str):
                    held.add((to, gtin, lot))
            elif isinstance(event, ev.Receive | ev.Refuse) and (sh := self._shipments.get(event.shipment)):
                held.update(((sh.sender, sh.gtin, sh.lot), (sh.recipient, sh.gtin, sh.lot)))
        return held - self._holdings.keys()

    def carry(self, version: tuple[int, bytes, int], tree: CompactRange,
              heads: ChainMap[str, ChainHead | None]) -> Carried:
        """What the next group may reuse; call only once this group has committed. The carried maps are
        updated in place: the Carried they belonged to is void from now on, its version being past."""
        actors, keys, batches, chain_heads = (merged(self._actors), merged(self._keys), merged(self._batches),
                                              merged(heads))
        if max(len(actors), len(keys), len(batches), len(chain_heads)) > MAX_CARRIED:
            return Carried(version, tree)  # start afresh rather than hold a whole country's batches
        return Carried(version, tree, actors, keys, batches, chain_heads)

    # ---- StateReader ---------------------------------------------------------------------------------------

    def actor(self, actor_id: str) -> Actor | None:
        if actor_id not in self._actors:
            self._actors[actor_id] = self.u.actor(actor_id)
        return self._actors[actor_id]

    def key(self, key_id: str) -> KeyRecord | None:
        if key_id not in self._keys:
            self._keys[key_id] = self.u.key(key_id)
        return self._keys[key_id]

    def active_keys(self, actor_id: str) -> list[KeyRecord]:
        return self.u.active_keys(actor_id)  # key changes are written through, so the table is current

    def batch(self, gtin: str, lot: str) -> Batch | None:
        if (gtin, lot) not in self._batches:
            self._batches[(gtin, lot)] = self.u.batch(gtin, lot)
        return self._batches[(gtin, lot)]

    def pack(self, gtin: str, serial: str) -> Pack | None:
        key = (gtin, serial)
        if key not in self._packs:
            self._packs[key] = self.u.pack(gtin, serial)
        return self._packs[key]

    def packs(self, gtin: str, serials: tuple[str, ...]) -> dict[str, Pack]:
        unknown = tuple(s for s in serials if (gtin, s) not in self._packs)
        if unknown:
            found = self.u.packs(gtin, unknown)
            if len(unknown) <= CHUNK:  # remember misses too, but not those of a 100,000-pack commission
                self._packs.update(((gtin, s), found.get(s)) for s in unknown)
            else:
                self._packs.update(((gtin, s), p) for s, p in found.items())
        out: dict[str, Pack] = {}
        for s in serials:
            pack = self._packs.get((gtin, s))
            if pack is not None:
                out[s] = pack
        return out

    def holding(self, actor: str, gtin: str, lot: str) -> int:
        key = (actor, gtin, lot)
        if key not in self._holdings:
            self._holdings[key] = self.u.holding(actor, gtin, lot)
        return self._holdings[key]

    def shipment(self, shipment_id: str) -> Shipment | None:
        if shipment_id not in self._shipments:
            self._shipments[shipment_id] = self.u.shipment(shipment_id)
        return self._shipments[shipment_id]

    def alert(self, alert_id: str) -> AlertRecord | None:
        return self._dirty_alerts[alert_id] if alert_id in self._dirty_alerts else self.u.alert(alert_id)

    # ---- changes ---------------------------------------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            match change:
                case PutPacks(packs):
                    for p in packs:
                        self._packs[(p.gtin, p.serial)] = self._dirty_packs[(p.gtin, p.serial)] = p
                case AdjustHolding(actor, gtin, lot, delta):
                    held = (actor, gtin, lot)
                    self._holdings[held] = self.holding(actor, gtin, lot) + delta
                    self._dirty_holdings.add(held)
                case PutShipment(shipment):
                    self._shipments[shipment.id] = self._dirty_shipments[shipment.id] = shipment
                    if shipment.status == "in_transit":
                        self._new_shipments.setdefault(shipment.id, shipment)
                case PutAlert(alert):
                    # a wave of suspect scans files an alert each: written with the group, not one statement each
                    self._dirty_alerts[alert.id] = alert
                case AddPacks(gtin, _lot, serials, _holder):
                    for s in serials:
                        self._packs.pop((gtin, s), None)
                    self.u.apply([change])
                case PoolPacks(gtin, lot, _holder):
                    self.flush()
                    pooled = [k for k, p in self._packs.items() if p is not None and (p.gtin, p.lot) == (gtin, lot)]
                    for pack_key in pooled:
                        del self._packs[pack_key]
                    self.u.apply([change])
                case _:
                    self.u.apply([change])
                    if isinstance(change, PutActor):
                        self._actors[change.actor.id] = change.actor
                    elif isinstance(change, PutKey):
                        self._keys[change.key.key_id] = change.key
                    elif isinstance(change, PutBatch):
                        self._batches[(change.batch.gtin, change.batch.lot)] = change.batch

    def flush(self) -> None:
        """Write the changed packs, holdings, shipments and alerts (a few multi-row statements)."""
        if self._dirty_packs:
            self.u.apply([PutPacks(tuple(self._dirty_packs.values()))])
            self._dirty_packs.clear()
        if self._dirty_holdings:
            self.u.put_holdings([(*k, self._holdings[k]) for k in sorted(self._dirty_holdings)])
            self._dirty_holdings.clear()
        if self._dirty_shipments:
            self.u.put_shipments(list(self._dirty_shipments.values()))
            self.u.add_shipment_packs(listed_packs(self._new_shipments.values()))
            self._dirty_shipments.clear()
            self._new_shipments.clear()
        if self._dirty_alerts:
            self.u.put_alerts(list(self._dirty_alerts.values()))
            self._dirty_alerts.clear()
