"""The per-event CPU floor: what one core must do for every signed event, and nothing else.

For each event the ledger must at least (1) encode the event body as RFC 8785 canonical JSON to check its
signature, (2) verify one Ed25519 signature (libsodium through PyNaCl), (3) encode the log entry as canonical
JSON (the Merkle leaf) and (4) hash it with SHA-256, plus about one more SHA-256 for the interior Merkle
nodes (a tree of n leaves has n - 1 of them). The sum, measured here on one core with the same libraries the
ledger uses, bounds what this machine can do: every throughput figure is shown as a fraction of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import Report
from ledger.entry import EVENT_PURPOSE, Entry, SignedEvent
from signing import KeyPair, canonical, signing_input
from signing.canonical import parse_canonical


@dataclass(frozen=True)
class Floor:
    canonical_body_s: float
    verify_s: float
    canonical_entry_s: float
    sha256_s: float
    parse_entry_s: float
    cores: int

    @property
    def append_s(self) -> float:
        """CPU seconds per appended event on one core."""
        return self.canonical_body_s + self.verify_s + self.canonical_entry_s + 2 * self.sha256_s

    @property
    def audit_s(self) -> float:
        """CPU seconds per audited entry on one core: parse the canonical leaf (and re-encode it to check it
        is canonical), canonical body, verify, hash."""
        return self.parse_entry_s + self.canonical_body_s + self.verify_s + 2 * self.sha256_s

    def appends_per_s(self, cores: int | None = None) -> float:
        return (cores or self.cores) / self.append_s

    def audit_per_s(self) -> float:
        return 1 / self.audit_s  # per core; the audit's replay runs on one


def _time(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(100):
            fn()
        n += 100
        now = time.perf_counter()
        if now >= end:
            return (now - start) / n


def sample_entry() -> tuple[dict[str, object], SignedEvent, Entry]:
    key = KeyPair.generate()
    body = {"v": 1, "type": "dispense", "id": "b1a2b3c4-123456", "actor": "ph-1a2b3c4d-017",
            "time": "2026-11-22T10:15:00.123456Z", "gtin": "06111234567895", "serial": "B1A2B00000012345",
            "lot": "B1A2B0000", "expiry": "2031-12-31"}
    signed = SignedEvent.create(body, key)
    entry = Entry(123456, dt.datetime(2026, 11, 22, 10, 15, 0, 200000, tzinfo=dt.UTC),
                  "batch/06111234567895/B1A2B0000", hashlib.sha256(b"x").digest(), signed)
    return body, signed, entry


def measure(seconds: float = 1.0) -> Floor:
    body, _signed, entry = sample_entry()
    pub = KeyPair.from_seed(b"\x01" * 32)
    sig_body = SignedEvent.create(body, pub)
    message = signing_input(EVENT_PURPOSE, body)
    leaf = entry.leaf()
    verify = pub.public.verify_raw
    return Floor(
        canonical_body_s=_time(lambda: canonical(body), seconds),
        verify_s=_time(lambda: verify(message, sig_body.signature), seconds),
        canonical_entry_s=_time(lambda: canonical(entry.to_json()), seconds),
        sha256_s=_time(lambda: hashlib.sha256(b"\x00" + leaf).digest(), seconds),
        parse_entry_s=_time(lambda: parse_canonical(leaf), seconds),
        cores=os.cpu_count() or 1,
    )


_CACHE: list[Floor] = []


def get(seconds: float = 1.0) -> Floor:
    if not _CACHE:
        _CACHE.append(measure(seconds))
    return _CACHE[0]


def run(report: Report, quick: bool) -> None:
    f = get(0.5 if quick else 1.5)
    us = 1e6
    report.add("floor", "RFC 8785 canonical encoding of an event body", f"{f.canonical_body_s * us:.1f} µs")
    report.add("floor", "Ed25519 verify (libsodium via PyNaCl)", f"{f.verify_s * us:.1f} µs")
    report.add("floor", "RFC 8785 canonical encoding of the log entry (leaf)", f"{f.canonical_entry_s * us:.1f} µs")
    report.add("floor", "SHA-256 of a leaf", f"{f.sha256_s * us:.2f} µs")
    report.add("floor", "parse + canonical check of a stored leaf", f"{f.parse_entry_s * us:.1f} µs")
    report.add("floor", "append floor per event, one core",
               f"{f.append_s * us:.1f} µs = {1 / f.append_s:,.0f} events/s",
               note=f"{f.cores} cores: {f.appends_per_s():,.0f} events/s")
    report.add("floor", "audit floor per entry, one core",
               f"{f.audit_s * us:.1f} µs = {f.audit_per_s():,.0f} entries/s")
