"""The pack scan's statement (``ledger.storage.sql``): its bound on the log size must stay a filter.

The log size comes from a subquery the planner cannot see through; written ``idx < size``, PostgreSQL guessed a
third of the log below it and read that much of the primary key on every scan, a cost that grows with the log
(benchmark ``storage``, "pack scan on top of N entries": 5.44 ms at 10^5 entries against 0.51 ms with the
filter). Plans depend on table statistics a test cannot reproduce at scale, so this checks the statement."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from ledger.queries import BATCH_WIDE, SINGLE_PACK
from ledger.storage.sql import _pack_scan, pack_scan_sql

KINDS = (tuple(sorted(SINGLE_PACK)), tuple(sorted(BATCH_WIDE)))


@pytest.mark.parametrize("sql", [
    pytest.param(pack_scan_sql(postgresql.psycopg.dialect(), *KINDS), id="postgresql"),
    pytest.param(str(_pack_scan(*KINDS).compile(dialect=sqlite.dialect())), id="sqlite"),
])
def test_every_branch_bounds_the_log_size_by_a_filter_no_index_range_serves(sql: str) -> None:
    bounds = re.findall(r"\b(log_entries(?:_\d+)?\.idx[^<>=]*)<", sql)
    assert len(bounds) == 4, bounds  # the pack's own events, its shipments, quantity moves, batch-wide events
    assert all(b.rstrip().endswith("+ 0") for b in bounds), bounds
