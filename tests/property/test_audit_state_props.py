"""An auditor's state file keeps every projection record as a list of JSON values: any record, whatever its text (any
script, control characters, line separators) and times (any offset, microseconds), comes back equal, and a
compact range comes back with the same root and the same next nodes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.identifiers import Channel, Role
from ledger.merkle import CompactRange, ProofError
from ledger.record_codec import decode, encode
from ledger.state import Actor, AlertRecord, Batch, KeyRecord, Pack, Shipment

TEXT = st.text(max_size=12)
TIMES = st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=1)),
                                                dt.timezone(dt.timedelta(hours=-3, minutes=-30))]))


def value(hint: Any) -> st.SearchStrategy[Any]:
    if isinstance(hint, type) and issubclass(hint, (Role, Channel)):
        return st.sampled_from(list(hint))
    args = typing.get_args(hint)
    if type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return st.none() | value(inner)
    if typing.get_origin(hint) is tuple:
        return st.tuples() if not args else st.lists(TEXT, max_size=4).map(tuple)
    return {str: TEXT, int: st.integers(-1, 2**53), dt.date: st.dates(), dt.datetime: TIMES}[hint]


def records(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: value(hints[f.name]) for f in dataclasses.fields(cls)})


@given(st.one_of(*(records(cls) for cls in (Actor, KeyRecord, Batch, Pack, Shipment, AlertRecord))))
def test_every_record_comes_back_equal(record: Any) -> None:
    row = json.loads(json.dumps(encode(record), ensure_ascii=False))
    back = decode(type(record), row)
    assert back == record
    assert type(back) is type(record)
    for f in dataclasses.fields(record):  # the same types, not only equal values (a str for an enum would pass ==)
        assert type(getattr(back, f.name)) is type(getattr(record, f.name)), f.name


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=70), st.lists(st.binary(min_size=32, max_size=32),
                                                                            min_size=1, max_size=5))
def test_a_kept_compact_range_goes_on_as_the_original(leaves: list[bytes], more: list[bytes]) -> None:
    original = CompactRange()
    for leaf in leaves:
        original.append(leaf)
    kept = CompactRange.from_hashes(original.size, [h for _, h in original.nodes()])
    assert kept.root() == original.root()
    for leaf in more:
        assert kept.append(leaf) == original.append(leaf)
    assert kept.root() == original.root()
    wrong = original.size + 1  # a size whose compact range has another number of nodes is refused
    if bin(wrong).count("1") != len(original.nodes()):
        with pytest.raises(ProofError):
            CompactRange.from_hashes(wrong, [h for _, h in original.nodes()])
