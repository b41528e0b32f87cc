"""SQLite keeps any value in any column: a hash, leaf or note rewritten as the wrong storage type (triggers
dropped) is a failed audit naming the row, and an integrity error for the server, never a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import errors as E
from tests.contract.test_tamper import audit, drop_triggers, sql
from tests.support import World, make_world


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's columns are typed: a bytea cell cannot hold text")
    w = make_world(tmp_path / "home", db_url)
    try:
        w.supply_history("TYP")
        drop_triggers(w)
        yield w
    finally:
        w.db.dispose()


@pytest.mark.parametrize(("statement", "column"), [
    ("UPDATE log_entries SET leaf = CAST(leaf AS TEXT) WHERE idx = 12", "leaf"),
    ("UPDATE log_entries SET entry_hash = HEX(entry_hash) WHERE idx = 12", "entry_hash"),
    ("UPDATE log_entries SET prev = HEX(prev) WHERE idx = 12", "prev"),
])
def test_an_entry_column_of_the_wrong_type(world: World, statement: str, column: str) -> None:
    sql(world, statement)
    report = audit(world)
    assert report.failure is not None
    assert report.failure.index == 12
    assert f"entry 12: its stored {column} is str, not bytes" in report.failure.reason
    with pytest.raises(E.IntegrityError, match=f"entry 12: its stored {column}"), world.ledger.store.read() as u:
        u.entry(12)


@pytest.mark.parametrize(("statement", "column"), [
    ("UPDATE checkpoints SET note = CAST(note AS BLOB) WHERE tree_size = 13", "note"),
    ("UPDATE checkpoints SET root_hash = HEX(root_hash) WHERE tree_size = 13", "root_hash"),
])
def test_a_checkpoint_column_of_the_wrong_type(world: World, statement: str, column: str) -> None:
    sql(world, statement)
    report = audit(world)
    assert report.failure is not None
    assert report.failure.index == 12
    assert f"checkpoint of tree size 13: its stored {column}" in report.failure.reason
    with pytest.raises(E.IntegrityError, match="checkpoint of tree size 13"), world.ledger.store.read() as u:
        u.checkpoint(13)


def test_the_newest_checkpoint_of_the_wrong_type_is_an_integrity_error_for_the_server(world: World) -> None:
    size = world.ledger.size()
    sql(world, "UPDATE checkpoints SET note = CAST(note AS BLOB) WHERE tree_size = :s", s=size)
    with pytest.raises(E.IntegrityError, match=f"checkpoint of tree size {size}: its stored note is bytes"):
        world.ledger.cosigned_checkpoint()  # GET /v1/log/checkpoint: the API maps it to a problem
