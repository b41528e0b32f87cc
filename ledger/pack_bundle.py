"""One-pack bundles: a few kilobytes that let a patient or an inspector check one pack with no network.

A batch bundle (``ledger.bundle``) replays every entry of a batch's chain, which lists whole batches and pallets
of serials: megabytes. A one-pack bundle holds instead a **statement signed by the ledger key**: the pack's
state and its batch's at one checkpoint, and the pack's provenance steps, each named by its entry's index and
leaf hash. It also holds the signed checkpoint and, for the pack's latest step, an RFC 9162 inclusion proof of
that leaf (its hashes concatenated, 32·⌈log2 n⌉ bytes, in base64 like the checkpoint's root). The latest step's
entry travels whole, signed by its actor, when everything in it is already public: a dispense, a recall, a
quarantine. (A commission or a shipment lists a batch or a pallet of serials, and volumes; an undo carries the
pharmacy's free-text reason; a release, the regulator's.)

The bundle is public, like the pack's verdict, and says no more: not who holds the pack (the public provenance
names who shipped it, not to whom), so custody (NOT_IN_CUSTODY) is not judged from it. A pharmacy checks custody
offline from a batch bundle of its stock.

What it proves and what it takes on the ledger's word:

* The verdict comes from the pack and batch state the ledger signs, as a batch bundle's completeness comes
  from the chain heads its manifest signs. The statement cannot be forged without the ledger key. A false one
  cannot be disowned: it cites leaves by index and hash at a signed tree size, so anyone holding the log (an
  auditor, a witness) can show that the cited leaves are not what it says.
* The latest step's leaf is in the signed tree (the proof is checked). When its entry is included, the actor's
  signature is checked (with the key the statement names for that actor, or a pinned key), and so is its
  agreement with the signed state: a dispense leaves the pack dispensed by that actor at that entry, a recall
  leaves the batch recalled, a quarantine quarantined. A pack said dispensed must name a dispense among its steps.
* Taken on the ledger's word as well: that the statement is the latest (an old bundle still verifies; it says
  when it was made and at which tree size), and that the named key was not revoked. The server makes the
  statement from its projections, so whoever can write its database can have it sign a false one (the tamper
  matrix in docs/reliability.md shows which such rewrites these bundles still catch).
* Earlier steps are named, not proven: their entries list whole batches (megabytes), which is what a batch
  bundle is for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger import errors as E
from ledger import events as ev
from ledger.admission import TrustAnchors, anchor_key, verify_signature
from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint, verifier_key
from ledger.entry import Entry
from ledger.identifiers import batch_chain
from ledger.merkle import HASH_SIZE, ProofError, verify_inclusion
from ledger.state import Pack
from ledger.verdict import Finding, judge
from signing import BadSignatureError, PublicKey, b64decode, b64encode, canonical
from signing.errors import SigningError

FORMAT = "athar-pack-bundle/1"
STATEMENT_PURPOSE = "pack-statement"
# the entry of the pack's latest step travels whole only for these kinds: all they hold is public already
WHOLE_ENTRY_KINDS = frozenset({"dispense", "recall", "quarantine"})
PACK_STATUSES = frozenset({"active", "in_transit", "dispensed", "destroyed"})
BATCH_STATUSES = frozenset({"active", "recalled", "quarantined"})


class TamperedPackBundle(E.IntegrityError):
    code = "tampered_pack_bundle"
    title = "The one-pack bundle fails verification"


@dataclass(frozen=True)
class AttestedBatch:
    """What the statement says of the pack's batch: what a verdict and its reader need, and no volumes."""

    gtin: str
    lot: str
    expiry: dt.date
    product: str
    manufacturer: str
    status: str
    status_reason: str | None


@dataclass(frozen=True)
class AttestedStep:
    index: int
    type: str
    actor: str
    time: dt.datetime
    hash: bytes


@dataclass(frozen=True)
class AttestedActor:
    name: str
    role: str
    region: str


@dataclass(frozen=True)
class VerifiedPackBundle:
    checkpoint: Checkpoint
    created: dt.datetime
    pack: Pack
    batch: AttestedBatch
    steps: tuple[AttestedStep, ...]
    actors: Mapping[str, AttestedActor]
    anchor: Entry | None  # the latest step's entry, when it travels whole

    def holds(self, gtin: str, serial: str) -> bool:
        return (gtin, serial) == (self.pack.gtin, self.pack.serial)

    def verdict(self, *, lot: str | None = None, expiry: dt.date | None = None, scanner: str | None = None,
                now: dt.datetime | None = None) -> Finding:
        """The public verdict on this bundle's pack. ``scanner`` tells a pharmacy's double scan of a pack it
        dispensed; custody is not judged (the bundle does not say who holds the pack)."""
        return judge(self.pack, self.batch, gtin=self.pack.gtin, serial=self.pack.serial, lot=lot, expiry=expiry,
                     now=now or dt.datetime.now(dt.UTC),
                     scanner=scanner if scanner is not None and scanner == self.pack.dispensed_by else None)


# ---- building (the server fills it from one snapshot; see ``ledger.bundle_build``) --------------------------


def statement_json(*, tree_size: int, root: bytes, created: dt.datetime, pack: Pack, batch: AttestedBatch,
                   steps: list[AttestedStep], actors: Mapping[str, AttestedActor],
                   signer: PublicKey | None) -> dict[str, Any]:
    """The statement the ledger signs; ``signer`` is the key of the latest step's actor when its entry travels
    whole and a registered actor signed it."""
    return {
        "format": FORMAT, "tree_size": tree_size, "root_hash": b64encode(root), "created": ev.format_time(created),
        "pack": {"gtin": pack.gtin, "serial": pack.serial, "lot": pack.lot, "status": pack.status,
                 "dispensed_by": pack.dispensed_by,
                 "dispensed_at": ev.format_time(pack.dispensed_at) if pack.dispensed_at else None,
                 "dispensed_index": pack.dispensed_index},
        "batch": {"gtin": batch.gtin, "lot": batch.lot, "expiry": batch.expiry.isoformat(), "product": batch.product,
                  "manufacturer": batch.manufacturer, "status": batch.status,
                  # an active batch's reason is a release's, which the public verdict does not show
                  "status_reason": batch.status_reason if batch.status != "active" else None},
        "steps": [{"index": s.index, "type": s.type, "actor": s.actor, "time": ev.format_time(s.time),
                   "hash": b64encode(s.hash)} for s in steps],
        "actors": {a: {"name": x.name, "role": x.role, "region": x.region} for a, x in sorted(actors.items())},
        "signer": {"key_id": signer.key_id, "public_key": signer.b64} if signer is not None else None,
    }


# ---- verifying (anywhere, offline) --------------------------------------------------------------------------


def _fail(reason: str, index: int | None = None) -> TamperedPackBundle:
    return TamperedPackBundle((f"entry {index}: " if index is not None else "") + reason, index=index)


def verify_pack_bundle(doc: Any, trust: TrustAnchors) -> VerifiedPackBundle:
    """Verify a one-pack bundle against the pinned keys; raise TamperedPackBundle naming what fails."""
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise _fail(f"not an {FORMAT} bundle")
    try:
        note = str(doc["checkpoint"])
        cp = open_checkpoint(note, verifier_key(note.split("\n", 1)[0], trust.ledger))
    except (KeyError, CheckpointError, ValueError) as exc:
        raise _fail(f"the checkpoint is not signed by the pinned ledger key: {exc}") from exc
    st = doc.get("statement")
    if not isinstance(st, Mapping):
        raise _fail("the bundle has no statement")
    try:
        trust.ledger.verify(STATEMENT_PURPOSE, dict(st), b64decode(str(doc.get("signature", ""))))
    except (BadSignatureError, SigningError, ValueError, RecursionError) as exc:
        raise _fail("the statement is not signed by the pinned ledger key") from exc
    if st.get("format") != FORMAT or st.get("tree_size") != cp.size or st.get("root_hash") != b64encode(cp.root):
        raise _fail("the statement and the checkpoint describe different trees")
    try:
        pack, batch, steps, actors, signer, created = _read_statement(st)
    except (KeyError, TypeError, ValueError, E.LedgerError, SigningError) as exc:
        raise _fail(f"the statement is malformed: {exc}") from exc
    _check_steps(steps, cp.size, pack)
    anchor = _check_anchor(doc.get("anchor"), steps[-1], cp, pack, batch, signer, trust)
    return VerifiedPackBundle(cp, created, pack, batch, tuple(steps), actors, anchor)


def _read_statement(st: Mapping[str, Any]) -> tuple[Pack, AttestedBatch, list[AttestedStep],
                                                    dict[str, AttestedActor], PublicKey | None, dt.datetime]:
    p, b = st["pack"], st["batch"]
    dispensed_at = p["dispensed_at"]
    pack = Pack(_text(p["gtin"]), _text(p["serial"]), _text(p["lot"]), _text(p["status"]), None,
                _opt_text(p["dispensed_by"]),
                ev.parse_time(dispensed_at, "dispensed_at") if dispensed_at is not None else None,
                _opt_int(p["dispensed_index"]))
    batch = AttestedBatch(_text(b["gtin"]), _text(b["lot"]), dt.date.fromisoformat(_text(b["expiry"])),
                          _text(b["product"]), _text(b["manufacturer"]), _text(b["status"]),
                          _opt_text(b["status_reason"]))
    if pack.status not in PACK_STATUSES or batch.status not in BATCH_STATUSES:
        raise ValueError(f"unknown status {pack.status!r} / {batch.status!r}")
    if (pack.gtin, pack.lot) != (batch.gtin, batch.lot):
        raise ValueError("the pack and the batch differ")
    steps = [AttestedStep(_int(s["index"]), _text(s["type"]), _text(s["actor"]), ev.parse_time(s["time"]),
                          b64decode(_text(s["hash"]), "step hash")) for s in st["steps"]]
    actors = {_text(k): AttestedActor(_text(a["name"]), _text(a["role"]), _text(a["region"]))
              for k, a in dict(st["actors"]).items()}
    signer = st["signer"]
    key = None
    if signer is not None:
        key = PublicKey.from_b64(_text(signer["public_key"]))
        if key.key_id != signer["key_id"]:
            raise ValueError("the named signing key does not hash to its id")
    return pack, batch, steps, actors, key, ev.parse_time(st["created"], "created")


def _check_steps(steps: list[AttestedStep], size: int, pack: Pack) -> None:
    if not steps or steps[0].type != "commission":
        raise _fail("the statement names no commissioning of the pack")
    last = -1
    for s in steps:
        if not last < s.index < size or len(s.hash) != HASH_SIZE:
            raise _fail("the steps are out of order, past the tree or their hashes malformed", s.index)
        last = s.index
    dispensed = (pack.status == "dispensed", pack.dispensed_index is not None)
    if dispensed == (True, True):
        named = [s for s in steps if s.index == pack.dispensed_index]
        if not named or (named[0].type, named[0].actor) != ("dispense", pack.dispensed_by):
            raise _fail("the pack is said dispensed by an entry its steps do not name", pack.dispensed_index)
    elif dispensed != (False, False):
        raise _fail("the pack's status and its dispensing entry disagree")


def _check_anchor(raw: Any, step: AttestedStep, cp: Checkpoint, pack: Pack, batch: AttestedBatch,
                  signer: PublicKey | None, trust: TrustAnchors) -> Entry | None:
    """The latest step: its leaf in the tree, and its entry (when it travels whole) signed and agreeing."""
    if not isinstance(raw, Mapping) or raw.get("index") != step.index:
        raise _fail("the bundle proves no entry, or not the latest step's", step.index)
    try:
        path = b64decode(_text(raw["proof"]), "proof")
        if len(path) % HASH_SIZE:
            raise ValueError(f"the proof is {len(path)} bytes, not a whole number of {HASH_SIZE}-byte hashes")
        proof = [path[i:i + HASH_SIZE] for i in range(0, len(path), HASH_SIZE)]
        verify_inclusion(step.hash, step.index, cp.size, proof, cp.root)
    except (KeyError, TypeError, ValueError, ProofError, SigningError) as exc:
        raise _fail(f"the latest step is not in the signed tree: {exc}", step.index) from exc
    whole = raw.get("entry")
    if step.type not in WHOLE_ENTRY_KINDS:
        if whole is not None:
            raise _fail(f"a {step.type} entry does not travel whole in a one-pack bundle", step.index)
        return None
    try:
        entry = Entry.from_leaf(canonical(whole))
    except (E.IntegrityError, SigningError, TypeError, ValueError, RecursionError) as exc:
        raise _fail(f"the latest step's entry is malformed: {exc}", step.index) from exc
    if entry.index != step.index or entry.hash != step.hash:
        raise _fail("the latest step's entry is not the leaf the statement names", step.index)
    _check_entry(entry, step, pack, batch, signer, trust)
    return entry


def _check_entry(entry: Entry, step: AttestedStep, pack: Pack, batch: AttestedBatch, signer: PublicKey | None,
                 trust: TrustAnchors) -> None:
    body = entry.signed.body
    where = entry.index
    if body.get("type") != step.type or body.get("actor") != step.actor:
        raise _fail("the entry's type or actor is not the step's", where)
    if entry.chain != batch_chain(batch.gtin, batch.lot):
        raise _fail(f"the entry is in chain {entry.chain}, not the pack's batch", where)
    try:
        key = anchor_key(entry.signed, step.actor, trust) or signer
        if key is None or key.key_id != entry.signed.key_id:
            raise _fail("the statement names no key for the entry's signer", where)
        verify_signature(entry.signed, key)
    except E.AuthError as err:
        raise _fail(err.message, where) from err
    if entry.received != step.time:
        raise _fail("the entry's time is not the step's", where)
    if step.type == "dispense":
        if body.get("serial") != pack.serial or body.get("gtin") != pack.gtin:
            raise _fail("the entry names another pack", where)
        if (pack.status, pack.dispensed_by, pack.dispensed_index, pack.dispensed_at) != (
                "dispensed", step.actor, where, entry.received):
            raise _fail(f"the signed state of the pack ({pack.status}) contradicts its latest {step.type}", where)
    elif (step.type, batch.status) not in {("recall", "recalled"), ("quarantine", "quarantined")}:
        raise _fail(f"the signed state of the batch ({batch.status}) contradicts its latest {step.type}", where)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)

