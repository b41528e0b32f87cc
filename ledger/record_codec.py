"""Projection records as lists of JSON values (their fields in declaration order), by their type hints: how an
auditor's kept state stores them. Only dates, times and tuples need converting; enums are written as their value."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import operator
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any


def encode(record: Any) -> list[Any]:
    return encode_all(type(record), [record])[0]


def decode(cls: type, row: list[Any]) -> Any:
    return decode_all(cls, [row])[0]


def encode_all(cls: type, records: Iterable[Any]) -> list[list[Any]]:
    codec = _codec(cls)
    fields = operator.attrgetter(*codec.names)
    out = []
    for record in records:
        row = list(fields(record))
        for i, convert in codec.to_json:
            if row[i] is not None:
                row[i] = convert(row[i])
        out.append(row)
    return out


def decode_all(cls: type, rows: Iterable[list[Any]]) -> list[Any]:
    codec = _codec(cls)
    names, n, new = codec.names, len(codec.names), object.__new__
    out = []
    for row in rows:
        if len(row) != n:
            raise ValueError(f"a {cls.__name__} record has {len(row)} fields, want {n}")
        for i, convert in codec.from_json:
            if row[i] is not None:
                row[i] = convert(row[i])
        # what a frozen dataclass's __init__ does one field at a time, at once: most of a big state's load is packs
        record: Any = new(cls)
        record.__dict__.update(zip(names, row, strict=True))
        out.append(record)
    return out


@dataclasses.dataclass(frozen=True)
class _Codec:
    names: tuple[str, ...]
    to_json: list[tuple[int, Callable[[Any], Any]]]  # (field index, conversion) for the fields JSON cannot hold
    from_json: list[tuple[int, Callable[[Any], Any]]]


_CODECS: dict[type, _Codec] = {}


def _codec(cls: type) -> _Codec:
    if cls not in _CODECS:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        back = [(i, c) for i, f in enumerate(fields) if (c := _converter(hints[f.name])) is not None]
        # enums are str subclasses, which JSON writes as their value; dates, times and tuples need converting
        there: list[tuple[int, Callable[[Any], Any]]] = [
            (i, list if c is tuple else _isoformat) for i, c in back if not isinstance(c, type(enum.Enum))]
        _CODECS[cls] = _Codec(tuple(f.name for f in fields), there, back)
    return _CODECS[cls]


def _isoformat(value: dt.date) -> str:
    return value.isoformat()


def _converter(hint: Any) -> Callable[[Any], Any] | None:
    """How a JSON value becomes a field of this type again (None values stay None); None when it needs nothing."""
    if isinstance(hint, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is dt.datetime:
        return dt.datetime.fromisoformat
    if hint is dt.date:
        return dt.date.fromisoformat
    if typing.get_origin(hint) is tuple:
        return tuple
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if hint in (str, int):
        return None
    raise TypeError(f"no JSON form for {hint!r}")  # pragma: no cover - a new field type needs one here
