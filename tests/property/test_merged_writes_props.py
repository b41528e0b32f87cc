"""A group's writes merged into few statements: the same writes, in the same order, with the same values."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.storage.merged_writes import Write, merged, write

_PART = re.compile(r"(?:INSERT INTO|UPDATE) (\w+) ")
_HOLE = re.compile(r"\$(\d+)")


def _filled(sql: str, params: tuple[object, ...]) -> str:
    """The text with each placeholder replaced by the value it stands for."""
    return _HOLE.sub(lambda m: repr(params[int(m.group(1)) - 1]), sql)


def _sql(kind: str, table: str, n: int) -> str:
    # a placeholder may be used twice, as a compiled UPDATE uses its key in WHERE and SET
    holes = ", ".join(f"${i}" for i in range(1, n + 1))
    return (f"INSERT INTO {table} (a) SELECT * FROM json_to_recordset(CAST({holes} AS json))" if kind == "insert"
            else f"UPDATE {table} SET a = {holes} WHERE id = $1")


writes = st.lists(st.builds(
    lambda kind, table, values: write(_sql(kind, table, len(values)), values),
    st.sampled_from(["insert", "update"]), st.sampled_from(["packs", "holdings", "log_entries", "log_head"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.binary(max_size=4)), min_size=1, max_size=3)),
    max_size=12)


@given(writes, st.integers(min_value=1, max_value=40))
def test_merged_statements_make_the_same_writes_in_order_with_their_own_values(ws: list[Write],
                                                                             max_bytes: int) -> None:
    statements = merged(ws, max_bytes)
    made: list[str] = []
    for sql, params in statements:
        assert {int(n) for n in _HOLE.findall(sql)} == set(range(1, len(params) + 1))
        tables = _PART.findall(sql)
        assert len(tables) == len(set(tables)), sql  # one snapshot: never the same table twice in a statement
        filled = _filled(sql, params)
        if len(tables) > 1:
            assert filled.startswith("WITH w0 AS (")
        made.append(filled)
    expected = [_filled(w.sql, w.params) for w in ws]
    # every write appears, whole and with its own values, in order
    position = 0
    joined = "\n".join(made)
    for text in expected:
        found = joined.find(text, position)
        assert found >= 0, text
        position = found + len(text)
    # as few statements as the rules allow: a statement ends only where the next write's table is in it or its
    # values would pass the bound; none passes the bound but a single write
    done = 0
    for i, (sql, _) in enumerate(statements):
        parts = ws[done:done + len(_PART.findall(sql))]
        size = sum(w.size for w in parts)
        assert size <= max_bytes or len(parts) == 1
        done += len(parts)
        if i < len(statements) - 1:
            assert ws[done].table in _PART.findall(sql) or size + ws[done].size > max_bytes


def test_a_write_must_be_an_insert_or_update_whose_placeholders_match_its_values() -> None:
    assert write("INSERT INTO packs (a) VALUES ($1)", [1]).table == "packs"
    assert write("INSERT INTO packs (a, b, c) VALUES ($1, $2, $3)", ["abc", b"xy", 5]).size == 3 + 2 + 8
    assert write('UPDATE "log_head" SET a = $1 WHERE id = $2', [1, 2]).table == "log_head"
    with pytest.raises(ValueError, match="not an INSERT or UPDATE"):
        write("SELECT $1", [1])
    with pytest.raises(ValueError, match="placeholders"):
        write("INSERT INTO packs (a) VALUES ($1, $3)", [1, 2])
    with pytest.raises(ValueError, match="placeholders"):
        write("INSERT INTO packs (a) VALUES ($1)", [1, 2])
