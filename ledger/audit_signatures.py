"""Signature and form checks of an audit, done ahead in helper processes.

The audit replays the log in order on one core; checking each entry's form (canonical bytes, exact field
types), its hash and its Ed25519 signature needs no order and is most of the work. Helper processes check the
next pages while the audit replays the current one, and tell it which entries are well-formed, match their
stored hash and carry a valid signature by the key their ``key_id`` names; the audit then parses those
without checking their form or hash again.
The audit still decides, from the registry it rebuilds from the log, whether that key could sign that
entry; an entry reported invalid (or not reported) is checked again by the audit itself, which then names
the precise failure. The helpers run the same checks (``Entry.from_leaf``, ``verify_signature``) as the
audit would, so what they accept is what it would accept; a helper that fails only leaves work to the audit.

The signed checkpoints the entries of a page complete go with it: the helpers check each note's form and the
ledger's signature (``open_checkpoint``, as the audit would), and the audit compares its size and root with
the entries. A log written at low traffic holds about one checkpoint per entry (one per group committed), so
checking their signatures in the replay doubled its Ed25519 work.

The public keys the helpers use are those of the key table and the trust anchors: a key id is the hash of
its public key, so a key table edited by an attacker can only make valid signatures look invalid.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import NamedTuple

from ledger.admission import TrustAnchors, verify_signature
from ledger.checkpoint import VerifierKey, open_checkpoint, parse_verifier_key
from ledger.entry import Entry
from ledger.merkle import leaf_hash
from signing import PublicKey

logger = logging.getLogger("athar.audit")
#: below this many entries the helpers' start-up (a fresh interpreter each) costs more than they save
MIN_ENTRIES = 50_000
_KEYS: dict[str, PublicKey] = {}
_LEDGER: list[VerifierKey] = []  # the ledger's checkpoint key (one, once the helper has started)


class Checked(NamedTuple):
    """A page's results: for each entry, and for each checkpoint note sent with it, whether it passed."""

    entries: list[bool]
    checkpoints: list[bool]


def _init(keys: dict[str, str], ledger_verifier: str) -> None:
    for key_id, b64 in keys.items():
        try:
            public = PublicKey.from_b64(b64)
        except Exception:  # a malformed key simply verifies nothing
            continue
        if public.key_id == key_id:
            _KEYS[key_id] = public
    _LEDGER.append(parse_verifier_key(ledger_verifier))


def _check(leaves: Sequence[tuple[bytes, bytes]], notes: Sequence[str] = ()) -> Checked:
    out = []
    for leaf, entry_hash in leaves:
        try:
            signed = Entry.from_leaf(leaf).signed
            public = _KEYS.get(signed.key_id)
            if public is None or leaf_hash(leaf) != entry_hash:
                out.append(False)
                continue
            verify_signature(signed, public)
            out.append(True)
        except Exception:  # anything wrong is for the audit itself to find and name
            out.append(False)
    return Checked(out, [_signed_checkpoint(note) for note in notes])


def _signed_checkpoint(note: str) -> bool:
    """Whether a checkpoint note is well-formed and signed by the ledger key (its size and root are for the audit
    to compare with the entries)."""
    try:
        open_checkpoint(note, _LEDGER[0])
        return True
    except Exception:
        return False


class SignatureChecks:
    """Signature results page by page, computed ahead by ``helpers`` processes. If the helpers cannot start or
    die (no /dev/shm in a container, killed for memory), every later page is reported unchecked, and the
    audit checks those signatures itself. ``submit`` and ``results`` may be called from different threads."""

    def __init__(self, keys: dict[str, str], trust: TrustAnchors, ledger_verifier: str, helpers: int) -> None:
        known = {**keys, trust.root.key_id: trust.root.b64, trust.ledger.key_id: trust.ledger.b64}
        self.pool: ProcessPoolExecutor | None = None
        try:
            self.pool = ProcessPoolExecutor(helpers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init, initargs=(known, ledger_verifier))
        except Exception as exc:  # the audit goes on alone
            logger.warning("audit helpers unavailable (%s); checking signatures in the audit itself", exc)

    def submit(self, leaves: Sequence[tuple[bytes, bytes]], notes: Sequence[str] = ()) -> Future[Checked] | None:
        """Start checking one page of (leaf, entry hash), and the notes of the checkpoints its entries complete;
        None if the helpers are gone."""
        pool = self.pool
        if pool is not None:
            try:
                return pool.submit(_check, list(leaves), list(notes))
            except Exception as exc:
                self._give_up(exc)
        return None

    def results(self, future: Future[Checked] | None, size: int, notes: int = 0) -> Checked:
        """Which entries of a page are well-formed, match their hash and carry a valid signature, and which of
        its checkpoint notes are well-formed and signed by the ledger (all False: unknown, the audit checks
        them)."""
        unknown = Checked([False] * size, [False] * notes)
        if future is None:
            return unknown
        try:
            result = future.result()
        except Exception as exc:
            self._give_up(exc)
            return unknown
        return result if (len(result.entries), len(result.checkpoints)) == (size, notes) else unknown

    def _give_up(self, exc: BaseException) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            logger.warning("audit helpers failed (%s); checking signatures in the audit itself", exc)
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def helpers_for(entries: int) -> int:
    """How many helper processes an audit of this many entries should use (0: none)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(2, cores - 1) if entries >= MIN_ENTRIES and cores > 1 else 0
