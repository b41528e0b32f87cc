"""A batch bundle's manifest signs each chain's head and length, so the server must not sign one over a chain
with an entry deleted below the application (triggers dropped): it refuses with an integrity error, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import errors as E
from ledger.bundle import verify_bundle
from ledger.bundle_build import build_bundle
from tests.contract.test_tamper import drop_triggers, sql
from tests.support import GTIN, World, make_world

CHAIN = f"batch/{GTIN}/GAP"


def bundle(w: World) -> dict[str, object]:
    with w.ledger.store.read(snapshot=True) as u:
        return build_bundle(u, w.ledger.config.ledger_key, [CHAIN], created=w.clock())


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", db_url)
    try:
        w.supply_history("GAP")  # its last entry, the chain's head, is a dispense
        verify_bundle(json.loads(json.dumps(bundle(w))), w.ledger.config.trust)  # whole: signed and verified
        drop_triggers(w)
        yield w
    finally:
        w.db.dispose()


def chain_indices(w: World) -> list[int]:
    with w.ledger.store.read() as u:
        return [e.index for e in u.chain_entries(CHAIN)]


def test_refuses_a_chain_without_its_head(world: World) -> None:
    last = chain_indices(world)[-1]
    assert world.ledger.entries(last, last + 1)[0].event_type == "dispense"
    sql(world, "DELETE FROM log_entries WHERE idx = :i", i=last)
    with pytest.raises(E.IntegrityError, match=f"chain {CHAIN} ends at entry") as err:
        bundle(world)
    assert err.value.details["index"] < last


def test_refuses_a_chain_without_its_last_two_entries_and_the_log_head_left_alone(world: World) -> None:
    sql(world, "DELETE FROM log_entries WHERE idx >= :i", i=chain_indices(world)[-2])
    with pytest.raises(E.IntegrityError, match=f"chain {CHAIN} ends at entry"):
        bundle(world)


def test_refuses_a_chain_with_an_entry_between_deleted(world: World) -> None:
    indices = chain_indices(world)
    gone = indices[len(indices) // 2]
    after = indices[len(indices) // 2 + 1]
    sql(world, "DELETE FROM log_entries WHERE idx = :i", i=gone)
    with pytest.raises(E.IntegrityError, match=f"chain {CHAIN} is broken at entry {after}"):
        bundle(world)


def test_refuses_an_entry_that_is_not_the_stored_leaf(world: World) -> None:
    first = chain_indices(world)[0]
    sql(world, "UPDATE merkle_nodes SET hash = :h WHERE level = 0 AND idx = :i", h=b"\0" * 32, i=first)
    with pytest.raises(E.IntegrityError, match=f"entry {first} is not the leaf"):
        bundle(world)


def test_refuses_a_log_head_behind_the_newest_checkpoint(world: World) -> None:
    size = world.ledger.size()
    sql(world, "UPDATE log_head SET tree_size = :s", s=size - 1)
    with pytest.raises(E.IntegrityError, match=f"newest checkpoint is of tree size {size}"):
        bundle(world)
