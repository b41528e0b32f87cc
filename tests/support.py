"""A small, realistic world for tests: a data directory, a ledger, registered actors and their signers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ledger.builder import EventBuilder, root_builder
from ledger.home import Home, init_home, open_ledger
from ledger.service import Ledger
from ledger.storage.database import Database
from signing import KeyPair

GTIN = "06111234567895"  # GS1 Morocco prefix 611, valid check digit
GTIN_B = "06118000000013"


class Clock:
    """A controllable clock for the sequencer and the signers."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


ACTORS = {
    "maphar": ("Maphar Laboratoires", "manufacturer", "Casablanca-Settat"),
    "sothema": ("Sothema", "manufacturer", "Casablanca-Settat"),
    "dist-north": ("Répartiteur Nord", "distributor", "Tanger-Tétouan-Al Hoceïma"),
    "dist-south": ("Répartiteur Sud", "distributor", "Souss-Massa"),
    "ph-rabat": ("Pharmacie Agdal", "pharmacy", "Rabat-Salé-Kénitra"),
    "ph-fes": ("Pharmacie Batha", "pharmacy", "Fès-Meknès"),
    "chu-oujda": ("CHU Mohammed VI Oujda", "hospital", "Oriental"),
    "regulator": ("Direction du Médicament et de la Pharmacie", "regulator", "Rabat-Salé-Kénitra"),
    "inspector": ("Inspection de la Pharmacie", "inspector", "Rabat-Salé-Kénitra"),
}


@dataclass
class World:
    home: Home
    ledger: Ledger
    db: Database
    clock: Clock
    keys: dict[str, KeyPair] = field(default_factory=dict)
    root_key: KeyPair | None = None

    def as_(self, actor: str) -> EventBuilder:
        return EventBuilder(actor, self.keys[actor], self.clock)

    @property
    def root(self) -> EventBuilder:
        assert self.root_key is not None
        return root_builder(self.root_key, self.clock)

    def commission(self, lot: str = "L001", n: int = 10, gtin: str = GTIN, actor: str = "maphar",
                   expiry: dt.date = dt.date(2028, 6, 30), channel: str = "private") -> list[str]:
        serials = [f"{lot}S{i:05d}" for i in range(n)]
        self.ledger.submit(self.as_(actor).commission(gtin, lot, expiry, "Amoxicilline 500 mg", serials,
                                                      channel=channel))
        return serials

    def deliver(self, sender: str, recipient: str, lot: str, serials: list[str], gtin: str = GTIN) -> str:
        shipment = self.as_(sender).ship(gtin, lot, recipient, serials=serials)
        self.ledger.submit(shipment)
        self.ledger.submit(self.as_(recipient).receive(shipment.event_id))
        return shipment.event_id

    def supply_history(self, lot: str) -> list[str]:
        """A batch of 8 packs with a varied history: 6 delivered to a distributor, 2 of them on to a pharmacy
        and 2 shipped by quantity to another; the first dispensed, undone and dispensed again, the fourth
        dispensed. Returns the serials."""
        serials = self.commission(lot, 8)
        self.deliver("maphar", "dist-north", lot, serials[:6])
        self.deliver("dist-north", "ph-rabat", lot, serials[:2])
        shipment = self.as_("dist-north").ship(GTIN, lot, "ph-fes", quantity=2)
        self.ledger.submit(shipment)
        self.ledger.submit(self.as_("ph-fes").receive(shipment.event_id))
        self.ledger.submit(self.as_("ph-rabat").dispense(GTIN, serials[0]))
        self.ledger.submit(self.as_("ph-rabat").undo_dispense(GTIN, serials[0], "wrong patient"))
        self.ledger.submit(self.as_("ph-rabat").dispense(GTIN, serials[0]))
        self.ledger.submit(self.as_("ph-fes").dispense(GTIN, serials[3]))
        return serials


def make_world(path: Path, db_url: str, clock: Clock | None = None,
               register: Callable[[str], bool] = lambda _a: True) -> World:
    clock = clock or Clock()
    home, _ = init_home(path, database_url=db_url)
    ledger, db = open_ledger(path, db_url)
    ledger.clock = clock
    world = World(home, ledger, db, clock, root_key=home.root_key())
    for actor_id, (name, role, region) in ACTORS.items():
        if not register(actor_id):
            continue
        key = KeyPair.generate()
        world.keys[actor_id] = key
        ledger.submit(world.root.register_actor(actor_id, name, role, region, key.public.b64))
    return world


# ---- PostgreSQL sessions of one application (its URL's application_name), seen from a session of another ----


def pg_activity(url: str, select: str, where: str = "") -> list[Any]:
    """``select`` over the sessions of the URL's application (``where``: more conditions)."""
    engine = sa.create_engine(url.split("?")[0])
    try:
        with engine.begin() as conn:
            return list(conn.execute(sa.text(f"SELECT {select} FROM pg_stat_activity WHERE application_name = :n "
                                             f"{where}"), {"n": sa.engine.make_url(url).query["application_name"]}))
    finally:
        engine.dispose()


def pg_sessions(url: str) -> int:
    return len(pg_activity(url, "pid"))


def pg_kill_sessions(url: str) -> int:
    return len(pg_activity(url, "pg_terminate_backend(pid)"))
