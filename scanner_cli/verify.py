"""Verdicts for scanned packs, online and offline, checked against the pinned keys.

Offline, the verdict comes from a verified bundle alone. Online, the API gives the verdict; when the reader
has an identity it also fetches a bundle of the pack's batch, verifies it with the pinned keys and computes
the verdict locally: a bundle that fails verification, or a local verdict that differs from the server's,
makes the verdict TAMPERED. The rules themselves (verdicts, bundle verification) live in ``ledger``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import errors as E
from ledger import pack_bundle
from ledger.admission import TrustAnchors
from ledger.bundle import VerifiedBundle, verify_bundle
from ledger.checkpoint import CheckpointError, open_checkpoint, verifier_key
from ledger.entry import Entry, SignedEvent
from ledger.events import parse_time
from ledger.identifiers import DISPENSERS
from ledger.merkle import ProofError, verify_inclusion
from ledger.pack_bundle import VerifiedPackBundle, verify_pack_bundle
from ledger.provenance import pack_steps
from ledger.verdict import Finding, Verdict
from scanner_cli.client import AtharClient, ClientError, Identity
from scanner_cli.scantext import PackCode

#: how bad a verdict is, for the exit code of a scan of several codes (worst wins)
SEVERITY: dict[Verdict, int] = {
    Verdict.AUTHENTIC: 0, Verdict.NOT_IN_CUSTODY: 1, Verdict.ALREADY_DISPENSED: 2, Verdict.EXPIRED: 3,
    Verdict.QUARANTINED: 4, Verdict.RECALLED: 5, Verdict.MISMATCH: 6, Verdict.UNKNOWN: 7, Verdict.TAMPERED: 9,
}


class BundleFileError(ValueError):
    """The bundle file cannot be read as JSON."""


class TamperedReceipt(E.IntegrityError):
    code = "tampered_receipt"
    title = "The receipt fails verification"


@dataclass(frozen=True)
class Step:
    index: int
    type: str
    actor: str
    actor_name: str
    role: str
    region: str
    time: str
    # "verified" (checked here against the pinned keys), "signed by the ledger" (named in a one-pack bundle's
    # statement) or "not checked" (as told by the API)
    signature: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ScanResult:
    code: PackCode
    verdict: Verdict
    reason: str
    mode: str  # online | offline
    product: str | None = None
    manufacturer: str | None = None
    lot: str | None = None  # as registered
    expiry: dt.date | None = None  # as registered
    provenance: list[Step] = field(default_factory=list)
    verification: str = ""
    # the verdict comes from, or was confirmed by, a bundle verified here against the pinned keys (TAMPERED: that
    # check failed); what a pharmacy system scripts on, where ``verification`` is for people
    checked: bool = False
    # offline, the pack is not in the bundle: no verdict at all (``verdict`` is UNKNOWN only as a placeholder; the
    # exit code is exit_codes.NOT_CHECKED, not UNKNOWN's "suspect falsified")
    not_checked: bool = False

    @property
    def label(self) -> str:
        """The verdict as shown and in JSON: NOT_CHECKED when there is none."""
        return "NOT_CHECKED" if self.not_checked else self.verdict.value

    def to_json(self, source: str) -> dict[str, Any]:
        c = self.code
        return {
            "input": source,
            "verdict": self.label,
            "reason": self.reason,
            "code": {"gtin": c.gtin, "lot": c.lot, "expiry": c.expiry.isoformat() if c.expiry else None,
                     "serial": c.serial, "form": c.source},
            "product": self.product, "manufacturer": self.manufacturer, "lot": self.lot,
            "expiry": self.expiry.isoformat() if self.expiry else None,
            "mode": self.mode, "verification": self.verification, "checked": self.checked,
            "not_checked": self.not_checked,
            "provenance": [s.to_json() for s in self.provenance],
        }


# ---- bundles ------------------------------------------------------------------------------------------------


def _whole_number(text: str) -> int:
    # no bundle field comes near 2^53; a longer number is a damaged file, whose reason should not be Python's limit
    if len(text.lstrip("-")) > 16:
        raise ValueError(f"it holds a number of {len(text)} digits, more than any bundle field can")
    return int(text)


def read_bundle(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_int=_whole_number)
    except FileNotFoundError as exc:
        raise BundleFileError(f"bundle file {path} does not exist") from exc
    except RecursionError as exc:
        raise BundleFileError(f"cannot read bundle {path}: nested too deeply") from exc
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, integers too long to convert
        raise BundleFileError(f"cannot read bundle {path}: {exc}") from exc


OfflineBundle = VerifiedBundle | VerifiedPackBundle


def verify_offline(doc: Any, trust: TrustAnchors) -> OfflineBundle:
    """A batch bundle or a one-pack bundle, verified against the pinned keys (by its ``format``)."""
    if isinstance(doc, Mapping) and doc.get("format") == pack_bundle.FORMAT:
        return verify_pack_bundle(doc, trust)
    return verify_bundle(doc, trust)


def bundle_summary(vb: OfflineBundle) -> dict[str, Any]:
    if isinstance(vb, VerifiedPackBundle):
        return {"tree_size": vb.checkpoint.size, "root_hash": vb.checkpoint.root.hex(),
                "origin": vb.checkpoint.origin, "created": vb.created.isoformat(), "kind": "one pack",
                "pack": {"gtin": vb.pack.gtin, "serial": vb.pack.serial, "lot": vb.pack.lot},
                "steps": len(vb.steps), "latest_entry_signed": vb.anchor is not None}
    chains = {e.chain for e in vb.entries}
    return {"tree_size": vb.checkpoint.size, "root_hash": vb.checkpoint.root.hex(), "origin": vb.checkpoint.origin,
            "created": vb.created.isoformat(), "kind": "batches", "chains": len(chains), "entries": len(vb.entries),
            "actors": len(vb.state.actors), "batches": len(vb.state.batches),
            "packs": len(vb.state.packs_)}


def scanner_of(vb: VerifiedBundle, actor: str | None) -> str | None:
    """The actor as a dispensing scanner (custody applies), as the API does: pharmacies and hospitals only."""
    record = vb.state.actor(actor) if actor else None
    return actor if record is not None and record.role in DISPENSERS else None


def bundle_provenance(vb: VerifiedBundle, gtin: str, lot: str, serial: str) -> list[Step]:
    """The pack's steps from the verified batch chain: every one has a verified signature."""
    return [Step(s.index, s.type, s.actor, s.actor_name, s.role, s.region, s.time.isoformat(), "verified")
            for s in pack_steps(vb.pack_history(gtin, lot, serial), serial, vb.state.actor)]


def _fill_from_bundle(result: ScanResult, vb: VerifiedBundle, code: PackCode) -> None:
    assert code.serial is not None
    pack = vb.state.pack(code.gtin, code.serial)
    batch = vb.state.batch(code.gtin, pack.lot) if pack else None
    if batch is not None:
        result.product, result.manufacturer = batch.product, batch.manufacturer
        result.lot, result.expiry = batch.lot, batch.expiry
        result.provenance = bundle_provenance(vb, code.gtin, batch.lot, code.serial)


def _pack_bundle_verdict(vb: VerifiedPackBundle, code: PackCode, actor: str | None, now: dt.datetime | None,
                         mode: str = "offline") -> ScanResult:
    assert code.serial is not None
    when = f"one-pack bundle of {vb.created.strftime('%Y-%m-%d %H:%M UTC')}, tree size {vb.checkpoint.size}"
    if not vb.holds(code.gtin, code.serial):
        return ScanResult(code, Verdict.UNKNOWN, f"this bundle is for pack {vb.pack.serial} of GTIN {vb.pack.gtin}, "
                          "not this one: the pack cannot be checked offline (this is not a finding on the pack; "
                          "check it online)", mode, verification=f"not in the {when}", not_checked=True)
    finding = vb.verdict(lot=code.lot, expiry=code.expiry, scanner=actor, now=now)
    signed = (f"; its latest step's entry ({vb.steps[-1].type}) signed by its actor" if vb.anchor is not None
              else "")
    custody = "; custody not checked (a one-pack bundle does not say who holds the pack)" if actor else ""
    b = vb.batch
    result = ScanResult(code, finding.verdict, finding.reason, mode, product=b.product,
                        manufacturer=b.manufacturer, lot=b.lot, expiry=b.expiry,
                        verification=f"the ledger's signed statement, verified against the pinned keys "
                                     f"({when}){signed}{custody}", checked=True)
    for s in vb.steps:
        shown = vb.actors.get(s.actor)
        proven = "verified" if vb.anchor is not None and s.index == vb.anchor.index else "signed by the ledger"
        result.provenance.append(Step(s.index, s.type, s.actor, shown.name if shown else s.actor,
                                      shown.role if shown else "", shown.region if shown else "",
                                      s.time.isoformat(), proven))
    return result


def offline_verdict(vb: OfflineBundle, code: PackCode, actor: str | None,
                    now: dt.datetime | None = None) -> ScanResult:
    """The verdict from a verified bundle; a pack of a batch the bundle does not hold is UNKNOWN, saying so."""
    if isinstance(vb, VerifiedPackBundle):
        return _pack_bundle_verdict(vb, code, actor, now)
    assert code.serial is not None
    when = f"bundle of {vb.created.strftime('%Y-%m-%d %H:%M UTC')}, tree size {vb.checkpoint.size}"
    pack = vb.state.pack(code.gtin, code.serial)
    if pack is None:
        # a bundle holds some batches, never the whole ledger: a serial it lacks may be registered in another batch
        # (online: MISMATCH, were its label's lot another's) or never (UNKNOWN); offline cannot tell which
        if not vb.covers(code.gtin):
            what = f"GTIN {code.gtin} is not in this bundle"
        elif code.lot is not None and vb.state.batch(code.gtin, code.lot) is None:
            what = f"batch {code.lot} of GTIN {code.gtin} is not in this bundle"
        elif code.lot is not None:
            # the bundle holds that batch's chain, so every pack it registered: the label names a pack the batch
            # never had, a finding whichever of the two it is
            return ScanResult(code, Verdict.UNKNOWN, f"serial {code.serial} is not among the packs of batch "
                              f"{code.lot} of GTIN {code.gtin}, which this bundle holds in full: the label is false "
                              "(suspect falsified, or a pack labelled with another batch's lot; online tells which)",
                              "offline", verification=f"verified offline against the pinned keys ({when})",
                              checked=True)
        else:
            what = f"serial {code.serial} is not among this bundle's packs of GTIN {code.gtin}"
        return ScanResult(code, Verdict.UNKNOWN, f"{what}: the pack cannot be checked offline (this is not a "
                          "finding on the pack; check it online)", "offline", verification=f"not in the {when}",
                          not_checked=True)
    scanner = scanner_of(vb, actor)
    finding = vb.verdict(code.gtin, code.serial, lot=code.lot, expiry=code.expiry, scanner=scanner, now=now)
    custody = ""
    if actor is not None and scanner is None:  # said, so a verdict without custody is not read as one with it
        custody = (f"; custody not checked: {actor} is not in this bundle" if vb.state.actor(actor) is None
                   else f"; custody not checked: {actor} is not a dispensing pharmacy or hospital")
    elif actor is None:
        custody = "; custody not checked (no identity given)"
    result = ScanResult(code, finding.verdict, finding.reason, "offline",
                        verification=f"verified offline against the pinned keys ({when}){custody}", checked=True)
    _fill_from_bundle(result, vb, code)
    return result


def tampered(code: PackCode, reason: str, mode: str) -> ScanResult:
    return ScanResult(code, Verdict.TAMPERED, reason, mode, verification="failed", checked=True)


# ---- online -------------------------------------------------------------------------------------------------


class MalformedAnswer(ClientError):
    """A pack verdict that is JSON but not the documented one: the server is not (or not acting as) an athar API."""

    code = "malformed_answer"
    title = "The server's answer is not an athar verdict"


def _malformed(what: str) -> MalformedAnswer:
    return MalformedAnswer(f"the server's verdict is not an athar API answer: {what}")


def _text(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise _malformed(f"{name} is {type(value).__name__} {str(value)[:40]!r}, not text")
    return value


def _api_provenance(steps: Any) -> list[Step]:
    if steps is None:
        return []
    if not isinstance(steps, list):
        raise _malformed("provenance is not a list")
    out = []
    for s in steps:
        if not isinstance(s, Mapping):
            raise _malformed("a provenance step is not an object")
        index = s.get("index", -1)
        if not isinstance(index, int) or isinstance(index, bool):
            raise _malformed(f"a provenance step's index is {str(index)[:40]!r}, not an integer")
        fields = [_text(s, n) or "" for n in ("type", "actor", "actor_name", "role", "region", "time")]
        out.append(Step(index, fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], "not checked"))
    return out


def _server_result(code: PackCode, doc: Mapping[str, Any]) -> ScanResult:
    try:
        verdict = Verdict(str(doc.get("verdict")))
    except ValueError:
        return tampered(code, f"the server answered an unknown verdict {str(doc.get('verdict'))[:40]!r}", "online")
    expiry = _text(doc, "expiry")
    registered = None
    if expiry is not None:
        try:
            registered = dt.date.fromisoformat(expiry)
        except ValueError:
            raise _malformed(f"expiry {expiry[:40]!r} is not a date") from None
    return ScanResult(code, verdict, _text(doc, "reason") or "", "online", product=_text(doc, "product"),
                      manufacturer=_text(doc, "manufacturer"), lot=_text(doc, "lot"), expiry=registered,
                      provenance=_api_provenance(doc.get("provenance")),
                      verification="verdict from the API (not checked locally: no identity given)")


def _ask(client: AtharClient, code: PackCode) -> dict[str, Any]:
    assert code.serial is not None
    return client.pack(code.gtin, code.serial, lot=code.lot,
                       expiry=code.expiry.isoformat() if code.expiry else None)


def online_verdict(client: AtharClient, code: PackCode, identity: Identity | None,
                   trust: TrustAnchors | None) -> ScanResult:
    """The API's verdict, cross-checked against a locally verified bundle when keys are pinned: the batch's bundle
    when an identity is given (custody is checked from it), else the pack's own one-pack bundle."""
    result = _server_result(code, _ask(client, code))
    if identity is None and trust is not None and result.verdict is not Verdict.TAMPERED:
        return _confirmed_by_pack_bundle(client, code, result, trust)
    if identity is None or trust is None or result.verdict is Verdict.TAMPERED:
        if identity is not None and trust is None:
            result.verification = "verdict from the API (not checked locally: no pinned keys)"
        return result
    lot = result.lot or code.lot
    if lot is None:
        result.verification = "verdict from the API (not checked locally: the code carries no lot)"
        return result
    try:
        doc = client.bundle(batches=[f"{code.gtin}/{lot}"])
    except (E.NotFound, E.AuthError) as err:
        result.verification = f"verdict from the API (not checked locally: {err.message})"
        return result
    try:
        vb = verify_bundle(doc, trust)
    except E.IntegrityError as err:
        return tampered(code, f"the bundle the server sent fails verification: {err.message}", "online")
    local = _local(vb, code, identity)
    if local.verdict != result.verdict:  # a write may have landed in between: ask once more
        result = _server_result(code, _ask(client, code))
    if local.verdict != result.verdict:
        return tampered(code, f"the server says {result.verdict.value} but the signed bundle says "
                        f"{local.verdict.value} ({local.reason})", "online")
    _fill_from_bundle(result, vb, code)
    result.checked = True
    result.verification = (f"server verdict confirmed by a bundle verified against the pinned keys "
                           f"(tree size {vb.checkpoint.size})")
    return result


def _confirmed_by_pack_bundle(client: AtharClient, code: PackCode, result: ScanResult,
                              trust: TrustAnchors) -> ScanResult:
    """The public verdict checked against the pack's one-pack bundle (a few kilobytes); when they agree, what is
    shown comes from the verified bundle. A bundle that cannot be had leaves the verdict unchecked, and says so,
    except a server that says the pack is registered and then that it is not."""
    assert code.serial is not None
    try:
        vb = _fetch_pack_bundle(client, code.gtin, code.serial, trust)
    except E.UnknownPack as err:
        if result.verdict is Verdict.UNKNOWN:
            result.verification = "verdict from the API: the ledger has no bundle of a pack never registered"
            return result
        return tampered(code, f"the server says {result.verdict.value} but has no bundle of the pack: "
                              f"{err.message}", "online")
    except E.IntegrityError as err:
        return tampered(code, f"the bundle the server sent fails verification: {err.message}", "online")
    except (E.LedgerError, ClientError, ValueError) as err:
        result.verification = f"verdict from the API (not checked locally: no one-pack bundle: {err})"
        return result
    for attempt in range(2):
        # the bundle's own time: a verdict that turns on the date (expiry) is the server's, made at that time
        local = _pack_bundle_verdict(vb, code, None, vb.created, mode="online")
        if local.verdict == result.verdict:
            local.verification = (f"server verdict confirmed by the pack's one-pack bundle, verified against the "
                                  f"pinned keys (tree size {vb.checkpoint.size})")
            return local
        if attempt == 0:  # a write may have landed between the two reads: read both again
            result = _server_result(code, _ask(client, code))
            try:
                vb = _fetch_pack_bundle(client, code.gtin, code.serial, trust)
            except E.IntegrityError as err:
                return tampered(code, f"the bundle the server sent fails verification: {err.message}", "online")
            except (E.LedgerError, ValueError) as err:
                result.verification = f"verdict from the API (not checked locally: no one-pack bundle: {err})"
                return result
    return tampered(code, f"the server says {result.verdict.value} but the signed one-pack bundle says "
                    f"{local.verdict.value} ({local.reason})", "online")


def _fetch_pack_bundle(client: AtharClient, gtin: str, serial: str, trust: TrustAnchors) -> VerifiedPackBundle:
    return checked_pack_bundle(client.pack_bundle(gtin, serial), gtin, serial, trust)


def checked_pack_bundle(doc: Any, gtin: str, serial: str, trust: TrustAnchors) -> VerifiedPackBundle:
    """A one-pack bundle received for a pack, verified; IntegrityError if it fails or is another pack's."""
    vb = verify_pack_bundle(doc, trust)
    if not vb.holds(gtin, serial):
        raise pack_bundle.TamperedPackBundle(f"the ledger sent the bundle of pack {vb.pack.serial} of GTIN "
                                             f"{vb.pack.gtin}, not of {serial}")
    return vb


def _local(vb: VerifiedBundle, code: PackCode, identity: Identity) -> Finding:
    """The bundle's verdict at the time it was made, by the server's clock, as its verdict was: judged by this
    machine's clock, a pack scanned minutes from the end of its expiry day by a reader a little ahead would be
    EXPIRED here and AUTHENTIC there, and a clock skew would read as a lying server (TAMPERED)."""
    assert code.serial is not None
    return vb.verdict(code.gtin, code.serial, lot=code.lot, expiry=code.expiry,
                      scanner=scanner_of(vb, identity.actor), now=vb.created)


# ---- receipts -----------------------------------------------------------------------------------------------


def verify_receipt(receipt: Mapping[str, Any], signed: SignedEvent, trust: TrustAnchors) -> None:
    """Check that the receipt's entry holds exactly the submitted event and is in a tree signed by the ledger."""
    try:
        prev = receipt.get("prev")
        entry = Entry(int(receipt["index"]), parse_time(receipt["received"], "received"), str(receipt["chain"]),
                      bytes.fromhex(prev) if isinstance(prev, str) else None, signed)
        note = str(receipt["checkpoint"])
        cp = open_checkpoint(note, verifier_key(note.split("\n", 1)[0], trust.ledger))
        size, root = int(receipt["tree_size"]), bytes.fromhex(str(receipt["root_hash"]))
        proof = [bytes.fromhex(h) for h in receipt["inclusion_proof"]]
    except (KeyError, TypeError, ValueError, E.LedgerError) as exc:
        raise TamperedReceipt(f"the receipt is malformed: {exc}") from exc
    except CheckpointError as exc:
        raise TamperedReceipt(f"the receipt's checkpoint is not signed by the pinned ledger key: {exc}") from exc
    if entry.hash.hex() != receipt.get("entry_hash"):
        raise TamperedReceipt(f"entry {entry.index}: the receipt's entry hash does not match the submitted event")
    if (cp.size, cp.root) != (size, root):
        raise TamperedReceipt("the receipt's checkpoint and tree do not match")
    try:
        verify_inclusion(entry.hash, entry.index, size, proof, root)
    except ProofError as exc:
        raise TamperedReceipt(f"entry {entry.index} is not in the signed tree: {exc}") from exc
