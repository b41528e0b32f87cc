"""Projections are caches of the log: rebuild them from a replay and report where the stored ones differ."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger import errors as E
from ledger.admission import TrustAnchors
from ledger.audit import AuditReport, verify_store
from ledger.state import (
    AdjustHolding,
    Change,
    PutActor,
    PutAlert,
    PutBatch,
    PutKey,
)
from ledger.storage import rows
from ledger.storage.sql import ProjectionSnapshot, SqlStore, SqlUnit

MAX_LISTED = 20


@dataclass
class RebuildReport:
    differences: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    rewritten: bool = False

    @property
    def clean(self) -> bool:
        return not any(self.differences.values())


def expected_projections(report: AuditReport) -> ProjectionSnapshot:
    """The rows every projection table should hold, derived from the replayed log alone."""
    s = report.state
    return ProjectionSnapshot(
        actors={a.id: rows.actor_row(a) for a in s.actors.values()},
        actor_keys={k.key_id: rows.key_row(k) for k in s.keys.values()},
        batches={(b.gtin, b.lot): rows.batch_row(b) for b in s.batches.values()},
        packs={(p.gtin, p.serial): rows.pack_row(p) for p in s.packs_.values()},
        holdings={k: {"actor": k[0], "gtin": k[1], "lot": k[2], "quantity": q}
                  for k, q in s.holdings.items() if q != 0},
        shipments={x.id: rows.shipment_row(x) for x in s.shipments.values()},
        shipment_packs={(x.gtin, serial, x.id): {"gtin": x.gtin, "serial": serial, "shipment": x.id}
                        for x in s.shipments.values() for serial in x.serials or ()},
        alerts={a.id: rows.alert_row(a) for a in s.alerts.values()},
        chain_heads={c: {"chain": c, "head_hash": h.hash, "head_index": h.index, "length": h.length}
                     for c, h in report.chain_heads.items()},
    )


def compare(expected: ProjectionSnapshot, stored: ProjectionSnapshot) -> RebuildReport:
    out = RebuildReport()
    for name in ProjectionSnapshot.TABLES:
        want: dict[Any, dict[str, Any]] = getattr(expected, name)
        have: dict[Any, dict[str, Any]] = getattr(stored, name)
        diffs: list[str] = []
        for key in sorted(set(want) | set(have), key=str):
            if key not in have:
                diffs.append(f"{name} {key}: missing from the stored projection")
            elif key not in want:
                diffs.append(f"{name} {key}: stored but not implied by the log")
            elif want[key] != have[key]:
                cols = sorted(c for c in want[key] if want[key][c] != have[key].get(c))
                detail = ", ".join(f"{c} is {_shown(have[key].get(c))}, log says {_shown(want[key][c])}" for c in cols)
                diffs.append(f"{name} {key}: {detail}")
        out.differences[name] = diffs
        out.counts[name] = len(want)
    return out


def _shown(value: Any) -> str:
    """Hashes as hex, as every other athar output writes them."""
    return bytes(value).hex() if isinstance(value, bytes | bytearray | memoryview) else repr(value)


def rewrite(u: SqlUnit, expected: ProjectionSnapshot) -> None:
    """Replace every projection with what the log implies (one transaction). Its count in the log head tells
    running servers that what they remember of the projections is void (see ``group_state.Carried``); the meta row
    it adds records when."""
    u.put_meta({f"projections-rewritten-{secrets.token_hex(8)}": dt.datetime.now(dt.UTC).isoformat()})
    u.count_rewrite()
    u.clear_projections()
    changes: list[Change] = []
    for r in expected.actors.values():
        changes.append(PutActor(rows.actor_from(_Row(r))))
    for r in expected.actor_keys.values():
        changes.append(PutKey(rows.key_from(_Row(r))))
    for r in expected.batches.values():
        changes.append(PutBatch(rows.batch_from(_Row(r))))
    u.apply(changes)
    u.insert_packs([rows.pack_from(_Row(r)) for r in expected.packs.values()])
    u.apply([AdjustHolding(r["actor"], r["gtin"], r["lot"], r["quantity"]) for r in expected.holdings.values()])
    u.put_shipments([rows.shipment_from(_Row(r)) for r in expected.shipments.values()])
    u.add_shipment_packs([(r["gtin"], r["serial"], r["shipment"]) for r in expected.shipment_packs.values()])
    u.apply([PutAlert(rows.alert_from(_Row(r))) for r in expected.alerts.values()])
    u.set_chain_heads([(r["chain"], r["head_hash"], r["head_index"], r["length"])
                       for r in expected.chain_heads.values()])


class _Row:
    """Attribute access over a row dict, so the rows.*_from mappers serve both directions."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def rebuild(store: SqlStore, trust: TrustAnchors, origin: str, *, write: bool = False,
            progress: Callable[[int, int], None] | None = None) -> tuple[AuditReport, RebuildReport]:
    """Replay the verified log, compare with the stored projections and, with ``write``, replace them."""
    audit = verify_store(store, trust, origin, progress, projections=not write)
    if not audit.ok:
        assert audit.failure is not None
        where = f" at entry {audit.failure.index}" if audit.failure.index is not None else ""
        raise E.IntegrityError(f"the log fails verification{where}: {audit.failure.reason}; projections cannot be "
                               "rebuilt from it")
    expected = expected_projections(audit)
    if not write:  # the projections were read in the verified head's snapshot: a live log may grow meanwhile
        assert audit.projections is not None
        return audit, compare(expected, audit.projections)
    with store.write() as u:
        _same_size(u.lock_head()[0], audit.tree_size)
        result = compare(expected, u.snapshot())
        if not result.clean:
            rewrite(u, expected)
            result.rewritten = True
    return audit, result


def _same_size(size: int, verified: int) -> None:
    if size != verified:
        raise E.LogGrew(f"the log grew from {verified} to {size} entries during the rebuild, so the projections "
                        "no longer match the verified entries; run it again (nothing was written)")
