"""A group's writes merged into few PostgreSQL statements (data-modifying ``WITH`` clauses).

A group of one dispense wrote seven statements (packs, holdings, entries, Merkle nodes, chain heads, checkpoint,
log head), and each cost the sequencer, whose one thread every append waits for, CPU in the driver (building
it, sending it in the pipeline, reading its result back): one statement instead of seven saved it 0.2-0.3 ms
per group, about 8 % (measured group by group, alternating; docs/performance.md, twelfth session).

Writes are merged in order while each touches a table the statement does not touch yet. The parts of one
statement run on one snapshot and do not see each other's rows, so two writes to the same table (an upsert sent
in chunks, an update after an insert of the same rows) stay in separate statements, in their order. Nothing
may read between the writes (they are sent at the end, with the commit). A statement also stops short of
``MAX_STATEMENT_BYTES`` of values: PostgreSQL takes at most 1 GB in one message, and a group of large
shipments and commissions may write hundreds of megabytes to several tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TARGET = re.compile(r'\s*(?:INSERT\s+INTO|UPDATE)\s+"?([A-Za-z_][A-Za-z0-9_]*)"?\s', re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\$(\d+)")
_MERGED: dict[tuple[str, ...], str] = {}
_MAX_CACHED = 256  # distinct combinations of a group's writes: a handful in practice
MAX_STATEMENT_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Write:
    """One write: its target table, its text with positional placeholders ($1, $2...), and their values."""

    table: str
    sql: str
    params: tuple[Any, ...]
    size: int = 0  # about how many bytes its values take: text and bytes at their length, anything else 8


def write(sql: str, params: Sequence[Any]) -> Write:
    """A write of the adapter's own fixed statements (INSERT INTO or UPDATE a table; no ``$`` in literals)."""
    found = _TARGET.match(sql)
    if found is None:
        raise ValueError(f"not an INSERT or UPDATE of one table: {sql[:80]!r}")
    numbers = {int(n) for n in _PLACEHOLDER.findall(sql)}
    if numbers != set(range(1, len(params) + 1)):
        raise ValueError(f"placeholders {sorted(numbers)} do not match {len(params)} parameter(s)")
    size = sum(len(p) if isinstance(p, str | bytes) else 8 for p in params)
    return Write(found.group(1).lower(), sql, tuple(params), size)


def merged(writes: Sequence[Write], max_bytes: int = MAX_STATEMENT_BYTES) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements (text, parameters) that make ``writes`` in order, as few as the rules above allow."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    run: list[Write] = []
    size = 0
    for w in writes:
        if run and (any(w.table == r.table for r in run) or size + w.size > max_bytes):
            out.append(_statement(run))
            run, size = [], 0
        run.append(w)
        size += w.size
    if run:
        out.append(_statement(run))
    return out


def _statement(run: Sequence[Write]) -> tuple[str, tuple[Any, ...]]:
    params = tuple(p for w in run for p in w.params)
    if len(run) == 1:
        return run[0].sql, params
    key = tuple(w.sql for w in run)
    sql = _MERGED.get(key)
    if sql is None:
        parts = []
        offset = 0
        for w in run:
            parts.append(_shifted(w.sql, offset))
            offset += len(w.params)
        *firsts, last = parts
        sql = "WITH " + ", ".join(f"w{i} AS ({s})" for i, s in enumerate(firsts)) + " " + last
        if len(_MERGED) >= _MAX_CACHED:
            _MERGED.clear()
        _MERGED[key] = sql
    return sql, params


def _shifted(sql: str, offset: int) -> str:
    """The text with placeholder $n renumbered $(n + offset): its values follow those of the parts before it."""
    return _PLACEHOLDER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


__all__ = ["MAX_STATEMENT_BYTES", "Write", "merged", "write"]
