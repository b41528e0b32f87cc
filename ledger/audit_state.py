"""An auditor's memory between two audits: what it verified, so the next audit verifies only what was added.

A full audit replays the whole log, which at national scale (about a billion entries a year) takes a day; an
auditor that keeps this file verifies each day's entries instead. The file holds the Merkle tree's compact
range (the roots of the perfect subtrees covering the verified entries), the chain heads and the custody
state the replay reached. A resumed audit appends the new entries to that compact range, so the root it
checks the log's checkpoints against commits to the entries verified before as well as the new ones: a log
whose verified part was rewritten cannot match it (RFC 9162's consistency, with the old entries kept by the
auditor rather than proven by the log).

The file is the auditor's trust store, like a monitor's last checkpoint: whoever can rewrite it can make the
auditor trust anything, so it belongs where only the auditor writes. Its digest catches a damaged or
truncated file, not a forged one.

Format: one header line of JSON (format, digest of the rest), then one line of JSON. Records are lists of
their fields in declaration order (packs are most of the file).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import operator
import os
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ledger.admission import TrustAnchors
from ledger.audit import AuditReport, ChainHead, LogVerifier
from ledger.merkle import CompactRange, ProofError
from ledger.replay import MemoryState
from ledger.state import Actor, AlertRecord, Batch, KeyRecord, Pack, Shipment

FORMAT = "athar-audit-state/1"


class StateFileError(Exception):
    """The state file cannot be used: damaged, of another format, or written for another ledger."""


def load(path: Path, trust: TrustAnchors, origin: str) -> LogVerifier | None:
    """The verifier as the last audit that saved ``path`` left it, ready for the next entries; None if there is
    no such file yet (the first audit, which is a full one)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    header_line, _, body_line = data.partition(b"\n")
    try:
        header = json.loads(header_line)
    except ValueError as exc:
        raise StateFileError(f"{path} is not an audit state file") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StateFileError(f"{path} is not an audit state file of this version ({FORMAT})")
    if hashlib.sha256(body_line).hexdigest() != header.get("sha256"):
        raise StateFileError(f"{path} is damaged: its content does not match its digest")
    try:
        body = json.loads(body_line)
        ledger = (body["origin"], body["ledger_key"], body["root_key"])
        if ledger != (origin, trust.ledger.b64, trust.root.b64):
            raise StateFileError(f"{path} was written for another ledger ({body['origin']}, or other keys)")
        return _verifier(body, trust, origin)
    except StateFileError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, ProofError) as exc:
        raise StateFileError(f"{path} is damaged: {type(exc).__name__}: {exc}") from exc


def save(path: Path, report: AuditReport, trust: TrustAnchors, origin: str) -> None:
    """Write what a passed audit verified to ``path``, atomically: the file on disk is always one whole state,
    the old one until the new one is complete and flushed."""
    if not report.ok:
        raise ValueError("only a passed audit's state may be kept")
    r, tree = report, report.tree
    body = json.dumps({
        "origin": origin, "ledger_key": trust.ledger.b64, "root_key": trust.root.b64,
        "tree": {"size": tree.size, "hashes": [h.hex() for _, h in tree.nodes()]},
        "chains": {name: [h.hash.hex(), h.index, h.length] for name, h in r.chain_heads.items()},
        "state": {name: encode_all(_KINDS[name], records) for name, records in _records(r.state).items()},
        "holdings": [[*slot, n] for slot, n in r.state.holdings.items()],
    }, ensure_ascii=False, separators=(",", ":")).encode()
    header = json.dumps({"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(), "size": tree.size}).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(header + b"\n" + body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_KINDS: dict[str, type] = {"actors": Actor, "keys": KeyRecord, "batches": Batch, "packs": Pack,
                           "shipments": Shipment, "alerts": AlertRecord}


def _records(state: MemoryState) -> dict[str, list[Any]]:
    return {"actors": list(state.actors.values()), "keys": list(state.keys.values()),
            "batches": list(state.batches.values()), "packs": list(state.packs_.values()),
            "shipments": list(state.shipments.values()), "alerts": list(state.alerts.values())}


def _verifier(body: dict[str, Any], trust: TrustAnchors, origin: str) -> LogVerifier:
    verifier = LogVerifier(trust, origin)
    tree = body["tree"]
    verifier.tree = CompactRange.from_hashes(int(tree["size"]), [bytes.fromhex(h) for h in tree["hashes"]])
    state = MemoryState()
    records = {name: decode_all(cls, body["state"][name]) for name, cls in _KINDS.items()}
    state.actors = {a.id: a for a in records["actors"]}
    state.keys = {k.key_id: k for k in records["keys"]}
    state.batches = {(b.gtin, b.lot): b for b in records["batches"]}
    state.shipments = {s.id: s for s in records["shipments"]}
    state.alerts = {a.id: a for a in records["alerts"]}
    state._put(records["packs"])  # which rebuilds the index of active packs too
    state.holdings = {(actor, gtin, lot): int(n) for actor, gtin, lot, n in body["holdings"]}
    heads = {name: ChainHead(bytes.fromhex(h), int(index), int(length))
             for name, (h, index, length) in body["chains"].items()}
    verifier.report = AuditReport(resumed_from=verifier.tree.size, state=state, chain_heads=heads)
    return verifier


# ---- records as lists of JSON values, by their type hints


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
