"""When to send statements in PostgreSQL's pipeline mode, and when not.

In pipeline mode psycopg (3.3.9) stops sending once its last command is queued, and a commit then waits for
results that cannot come while part of a statement is still unsent: one 32 MB statement followed by a commit hung
every time here (16 MB did not, nor did a 64 MB statement followed by a few small ones, nor the group's first
reads, which end their pipeline without a commit, with 40 MB of serials). A group's writes, merged into one
statement, end with the commit, and a group of large commissions, or of shipments listing whole batches by
serial, writes that much. Above ``PIPELINE_BYTES`` the writes are sent one statement at a time instead (each
fully sent and answered in turn), which costs a few round trips on a group that takes far longer to write anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PIPELINE_BYTES = 1024 * 1024


def payload_bytes(values: Iterable[Any]) -> int:
    """About how many bytes these statement parameters take on the wire: text and bytes at their length, lists
    and tuples at their items' sum, anything else 8 (numbers, times)."""
    total = 0
    for v in values:
        if isinstance(v, str | bytes):
            total += len(v)
        elif isinstance(v, list | tuple):
            total += payload_bytes(v)
        else:
            total += 8
    return total


def fits_pipeline(values: Iterable[Any]) -> bool:
    return payload_bytes(values) <= PIPELINE_BYTES


__all__ = ["PIPELINE_BYTES", "fits_pipeline", "payload_bytes"]
