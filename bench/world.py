"""A synthetic but rule-abiding supply chain, signed ahead of time.

One manufacturer, ``D`` distributors and ``P`` pharmacies are registered by the regulator root key. The
manufacturer commissions batches of serialized packs, ships each batch to a distributor, which receives it and
ships packs on to pharmacies (received), or keeps them. The *workload pool* is what the timed phase submits,
every event valid on its own and independent of the others, so any interleaving is accepted:

* ``dispense``: a pharmacy dispenses a pack it holds (scanned lot and expiry included);
* ``ship``: a distributor ships 5 packs (by serial) to a pharmacy;
* ``receive``: a pharmacy receives a shipment sent to it during set-up.

Every event is signed in advance (in parallel processes) so the load generator only sends bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import multiprocessing as mp
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.entry import SignedEvent
from signing import KeyPair

GTIN = "06111234567895"  # GS1 Morocco prefix 611, valid check digit
EXPIRY = dt.date(2031, 12, 31)
BATCH_MAX = 50_000
SHIP_SIZE = 5
MIX = {"dispense": 0.85, "ship": 0.10, "receive": 0.05}

Signable = tuple[str, dict[str, Any]]  # (actor id or "root", event body without the signature)


@dataclass
class World:
    """Actors with their keys, set-up phases (each a list of independent events) and the workload pool."""

    root: KeyPair
    keys: dict[str, KeyPair]
    roles: dict[str, str]
    phases: list[tuple[str, list[Signable]]] = field(default_factory=list)
    pool: dict[str, list[Signable]] = field(default_factory=dict)
    packs: list[tuple[str, str, str]] = field(default_factory=list)  # (gtin, lot, serial) of every pack

    def key_for(self, actor: str) -> KeyPair:
        return self.root if actor == "root" else self.keys[actor]


def build_world(root: KeyPair, *, n_dispense: int, n_ship: int, n_receive: int, pharmacies: int = 32,
                distributors: int = 4, seed: int = 2026) -> World:
    """Plan a world with enough stock for the given workload pool; ``root`` is the ledger's root key."""
    from ledger import events as ev

    rng = random.Random(seed)
    tag = f"{random.getrandbits(32):08x}"
    mfr = f"mfr-{tag}"
    dists = [f"dist-{tag}-{i:02d}" for i in range(distributors)]
    phs = [f"ph-{tag}-{i:03d}" for i in range(pharmacies)]
    keys = {a: KeyPair.generate() for a in [mfr, *dists, *phs]}
    roles = {mfr: "manufacturer", **{d: "distributor" for d in dists}, **{p: "pharmacy" for p in phs}}
    world = World(root, keys, roles)
    counter = iter(range(10**12))

    def eid() -> str:
        return f"b{tag}-{next(counter)}"

    def body(kind: str, actor: str, **f: Any) -> Signable:
        b: dict[str, Any] = {"v": ev.SCHEMA_VERSION, "type": kind, "id": eid(), "actor": actor,
                             "time": ev.format_time(dt.datetime.now(dt.UTC))}
        b.update({k: v for k, v in f.items() if v is not None})
        return (actor, b)

    root_actor = ev.ROOT_ACTOR
    world.phases.append(("register actors", [
        body("actor_register", root_actor, subject=a, name=f"Bench {a}", role=roles[a],
             region="Rabat-Salé-Kénitra", public_key=keys[a].public.b64) for a in keys]))

    lots = iter(range(10**6))

    def batches(total: int) -> list[tuple[str, list[str]]]:
        out: list[tuple[str, list[str]]] = []
        for _ in range(math.ceil(total / BATCH_MAX)):
            n = min(BATCH_MAX, total - sum(len(s) for _, s in out))
            lot = f"B{tag[:4]}{next(lots):04d}".upper()
            out.append((lot, [f"{lot}{i:07d}" for i in range(n)]))
        return out

    disp_b = batches(n_dispense)
    ship_b = batches(n_ship * SHIP_SIZE)
    recv_b = batches(n_receive * SHIP_SIZE)
    all_b = disp_b + ship_b + recv_b
    owner = {lot: dists[i % distributors] for i, (lot, _) in enumerate(all_b)}
    for lot, serials in all_b:
        world.packs.extend((GTIN, lot, s) for s in serials)

    world.phases.append(("commission batches", [
        body("commission", mfr, gtin=GTIN, lot=lot, expiry=EXPIRY.isoformat(), product="Bench Amoxicilline 500 mg",
             quantity=len(s), serials=s, channel="private") for lot, s in all_b]))
    to_dist = [body("ship", mfr, gtin=GTIN, lot=lot, to=owner[lot], serials=s, quantity=len(s), channel="private")
               for lot, s in all_b]
    world.phases.append(("ship batches to distributors", to_dist))
    world.phases.append(("distributors receive", [body("receive", owner[b["lot"]], shipment=b["id"])
                                                  for _, b in to_dist]))

    stock_ships: list[Signable] = []
    dispenses: list[Signable] = []
    for lot, serials in disp_b:
        per = math.ceil(len(serials) / pharmacies)
        for j, ph in enumerate(phs):
            chunk = serials[j * per:(j + 1) * per]
            if not chunk:
                continue
            stock_ships.append(body("ship", owner[lot], gtin=GTIN, lot=lot, to=ph, serials=chunk,
                                    quantity=len(chunk), channel="private"))
            dispenses.extend(body("dispense", ph, gtin=GTIN, serial=s, lot=lot, expiry=EXPIRY.isoformat())
                             for s in chunk)
    pending: list[Signable] = []
    for lot, serials in recv_b:
        for k in range(0, len(serials), SHIP_SIZE):
            pending.append(body("ship", owner[lot], gtin=GTIN, lot=lot, to=rng.choice(phs),
                                serials=serials[k:k + SHIP_SIZE], quantity=len(serials[k:k + SHIP_SIZE]),
                                channel="private"))
    world.phases.append(("ship stock to pharmacies", stock_ships + pending))
    world.phases.append(("pharmacies receive", [body("receive", b["to"], shipment=b["id"]) for _, b in stock_ships]))

    ships = []
    for lot, serials in ship_b:
        for k in range(0, len(serials), SHIP_SIZE):
            part = serials[k:k + SHIP_SIZE]
            ships.append(body("ship", owner[lot], gtin=GTIN, lot=lot, to=rng.choice(phs), serials=part,
                              quantity=len(part), channel="private"))
    receives = [body("receive", b["to"], shipment=b["id"]) for _, b in pending]
    rng.shuffle(dispenses)
    world.pool = {"dispense": dispenses[:n_dispense], "ship": ships[:n_ship], "receive": receives[:n_receive]}
    return world


def pool_sizes(total: int) -> dict[str, int]:
    return {k: max(1, round(total * v)) for k, v in MIX.items()}


def mixed(world: World, seed: int = 7) -> list[Signable]:
    """The workload pool as one shuffled list (mostly dispenses, some shipments and receipts)."""
    items = [x for v in world.pool.values() for x in v]
    random.Random(seed).shuffle(items)
    return items


def cloned(world: World) -> list[Signable]:
    """Each dispense of the pool again, by the next pharmacy, under a new id: refused, with an alert, whether the
    first is in (a duplicate dispense) or not (a pack that pharmacy never received)."""
    pharmacies = sorted(a for a, role in world.roles.items() if role == "pharmacy")
    out: list[Signable] = []
    for actor, body in world.pool["dispense"]:
        other = pharmacies[(pharmacies.index(actor) + 1) % len(pharmacies)]
        out.append((other, {**body, "id": f"{body['id']}-clone", "actor": other}))
    return out


# ---- signing, in parallel ---------------------------------------------------------------------------------

_KEYS: dict[str, KeyPair] = {}


def _init_keys(seeds: dict[str, bytes]) -> None:
    _KEYS.clear()
    _KEYS.update({a: KeyPair.from_seed(s) for a, s in seeds.items()})


def _sign_chunk(items: Sequence[Signable]) -> list[bytes]:
    out = []
    for actor, body in items:
        key = _KEYS[actor]
        out.append(json.dumps(SignedEvent.create(body, key).to_json(), separators=(",", ":")).encode())
    return out


def sign_all(world: World, items: Sequence[Signable], processes: int | None = None) -> list[bytes]:
    """The HTTP request bodies (JSON submissions) for ``items``, signed with every core."""
    from ledger import events as ev

    seeds = {a: k.seed for a, k in world.keys.items()}
    seeds[ev.ROOT_ACTOR] = world.root.seed
    if len(items) < 2000:
        _init_keys(seeds)
        return _sign_chunk(items)
    n = processes or mp.cpu_count()
    size = max(500, math.ceil(len(items) / (n * 4)))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    with mp.get_context("fork").Pool(n, initializer=_init_keys, initargs=(seeds,)) as pool:
        return [b for part in pool.map(_sign_chunk, chunks) for b in part]


def as_signed(payloads: Iterable[bytes]) -> list[SignedEvent]:
    return [SignedEvent.from_json(json.loads(p)) for p in payloads]


__all__ = ["Signable", "World", "build_world", "cloned", "mixed", "pool_sizes", "sign_all"]


def set_up(world: World, base: str, say: Callable[[str], None]) -> None:
    """Submit the world's set-up phases, in order, to the server at ``base`` (each phase's events together)."""
    from bench.loadgen import submit_all

    for name, items in world.phases:
        started = time.perf_counter()
        submit_all(base, sign_all(world, items))
        say(f"{name} ({len(items):,} events) in {time.perf_counter() - started:.1f} s")
