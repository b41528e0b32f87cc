"""The demo master data is valid GS1 data and covers the roles and regions the demo needs."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from biip.gln import Gln
from biip.gs1_messages import GS1Message
from biip.gtin import Gtin

from fixtures import demo
from ledger import identifiers as ids

REGIONS = {  # the twelve regions of Morocco (2015 division)
    "Tanger-Tétouan-Al Hoceïma", "Oriental", "Fès-Meknès", "Rabat-Salé-Kénitra", "Béni Mellal-Khénifra",
    "Casablanca-Settat", "Marrakech-Safi", "Drâa-Tafilalet", "Souss-Massa", "Guelmim-Oued Noun",
    "Laâyoune-Sakia El Hamra", "Dakhla-Oued Ed-Dahab",
}
ACTORS = demo.load_actors()
PRODUCTS = demo.load_products()
BY_ID = {a.id: a for a in ACTORS}


def _of(role: str) -> list[demo.DemoActor]:
    return [a for a in ACTORS if a.role == role]


@pytest.mark.parametrize("actor", ACTORS, ids=lambda a: a.id)
def test_actor_is_valid(actor: demo.DemoActor) -> None:
    assert ids.actor_id(actor.id) == actor.id
    assert ids.Role(actor.role)
    assert actor.region in REGIONS
    assert actor.name and actor.city
    gln = Gln.parse(actor.gln)  # raises on a wrong check digit
    assert len(actor.gln) == 13
    assert gln.prefix is not None and gln.prefix.value == "611"


def test_actor_ids_and_glns_are_unique() -> None:
    assert len({a.id for a in ACTORS}) == len(ACTORS)
    assert len({a.gln for a in ACTORS}) == len(ACTORS)


def test_required_roles_and_regions() -> None:
    assert len(_of("manufacturer")) >= 2
    assert len({a.region for a in _of("distributor")}) >= 2
    pharmacies = _of("pharmacy")
    assert len(pharmacies) >= 4 and len({a.region for a in pharmacies}) >= 4
    assert any("CHU" in a.name for a in _of("hospital"))
    assert any(a.name == "Direction du Médicament et de la Pharmacie" for a in _of("regulator"))
    assert _of("inspector")


@pytest.mark.parametrize("product", PRODUCTS, ids=lambda p: p.lot_prefix)
def test_product_is_valid(product: demo.DemoProduct) -> None:
    assert len(product.gtin) == 14
    gtin = Gtin.parse(product.gtin)  # raises on a wrong check digit
    assert gtin.as_gtin_14() == product.gtin
    assert gtin.prefix is not None and gtin.prefix.value == "611"
    assert BY_ID[product.manufacturer].role == "manufacturer"
    assert product.name and product.form and product.pack_size > 0


def test_products_are_distinct() -> None:
    assert len(PRODUCTS) >= 3
    assert len({p.gtin for p in PRODUCTS}) == len(PRODUCTS)
    assert len({p.lot_prefix for p in PRODUCTS}) == len(PRODUCTS)


def test_scenario_shape() -> None:
    prefixes = {p.lot_prefix for p in PRODUCTS}
    assert len(demo.BATCHES) >= 10
    assert len({b.lot_prefix for b in demo.BATCHES}) >= 3
    assert sum(b.size for b in demo.BATCHES) >= 2000
    assert {b.channel for b in demo.BATCHES} == {"public", "private"}
    assert len({b.lot for b in demo.BATCHES}) == len(demo.BATCHES)
    for b in demo.BATCHES:
        assert b.lot_prefix in prefixes
        assert ids.lot(b.lot) == b.lot
        assert all(BY_ID[d].role == "distributor" for d in b.distributors)
    for distributor, clients in demo.CLIENTS.items():
        assert BY_ID[distributor].role == "distributor"
        assert all(BY_ID[c].role == "pharmacy" for c in clients)
    assert BY_ID[demo.HOSPITAL].role == "hospital"
    assert BY_ID[demo.REGULATOR].role == "regulator"
    assert BY_ID[demo.INSPECTOR].role == "inspector"
    lots = {b.lot for b in demo.BATCHES}
    assert {demo.RECALLED_LOT, demo.QUARANTINED_LOT, demo.REFUSED_LOT, demo.OVERSHIP_LOT} <= lots


def test_serials_are_deterministic_unique_and_valid_gs1() -> None:
    a = demo._serials(random.Random(7), 500, set())
    b = demo._serials(random.Random(7), 500, set())
    c = demo._serials(random.Random(8), 500, set())
    assert a == b != c
    assert len(set(a)) == 500
    assert Counter(len(s) for s in a) == {demo.SERIAL_LENGTH: 500}
    assert all(ids.serial(s) == s and s.isalnum() for s in a)


def test_sample_element_string_parses() -> None:
    import datetime as dt

    sample = demo.SamplePack("genuine", PRODUCTS[0].gtin, "AMX2601", dt.date(2028, 1, 31), "K7P3Q9RSTUV2",
                             "AUTHENTIC", "ph-agdal")
    msg = GS1Message.parse_hri(sample.element_string)
    assert [(e.ai.ai, e.value) for e in msg.element_strings] == [
        ("01", PRODUCTS[0].gtin), ("17", "280131"), ("10", "AMX2601"), ("21", "K7P3Q9RSTUV2")]
    assert sample.as_tuple() == (PRODUCTS[0].gtin, "AMX2601", dt.date(2028, 1, 31), "K7P3Q9RSTUV2")
