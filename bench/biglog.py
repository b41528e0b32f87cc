"""Benchmarks on big logs built by ``bench.bulk``: proofs (4), ``athar audit verify`` (5), storage, pack scans
and append rate versus log size (7)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import sqlalchemy as sa

from bench import floor as floor_mod
from bench.bulk import EVERY_ENTRY, BigLedger, big_ledger
from bench.common import ATHAR, ROOT, Measured, Report, fraction, ms, pct, run_measured, serve
from bench.inproc import append_all, set_up
from bench.rawhttp import Connection
from bench.world import as_signed, build_world, mixed, pool_sizes, sign_all
from ledger.audit_signatures import helpers_for
from ledger.home import Home
from ledger.merkle import verify_consistency, verify_inclusion
from ledger.pack_bundle import verify_pack_bundle
from ledger.queries import Reader

#: the size of the log audited with one checkpoint per entry (in both modes: it shows what the checkpoints cost)
AUDIT_EVERY_ENTRY = 100_000
LOG_TABLES = ("log_entries", "merkle_nodes", "checkpoints", "chain_heads", "log_head")
PROJECTIONS = ("actors", "actor_keys", "batches", "packs", "holdings", "shipments", "alerts")


def run(report: Report, kind: str, quick: bool, only: set[str], workers: int = 1) -> None:
    sizes = [1_000, 10_000, 100_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    biggest = sizes[-1]
    for size in sizes:
        need = ("proofs" in only and size in (1_000, 100_000, 1_000_000)) or \
               ("storage" in only and size in (10_000, biggest)) or ("audit" in only and size == biggest)
        if not need:
            continue
        with big_ledger(kind, size) as b:
            if "proofs" in only and size in (1_000, 100_000, 1_000_000):
                proofs(report, b, kind)
                pack_bundles(report, b, kind, workers)
                if size == biggest:
                    served_proofs(report, b, kind, workers)
            if "storage" in only and size in (10_000, biggest):
                storage(report, b, kind)
            if "audit" in only and size == biggest:
                audit(report, b, kind)
                audit_resumed(report, b, kind, new=60_000 if quick else 200_000)
    if "audit" in only:
        # the same workload as a log written at low traffic holds it: each event a group, each with its checkpoint
        with big_ledger(kind, AUDIT_EVERY_ENTRY, checkpoint_every=EVERY_ENTRY) as b:
            audit(report, b, kind, "one checkpoint per entry, as a log written at low traffic")


def proofs(report: Report, b: BigLedger, kind: str, n: int = 300) -> None:
    rng = random.Random(11)
    ledger, size = b.ledger, b.size
    root = ledger.checkpoint(size)
    assert root is not None
    leaves = _random_leaves(b, rng, n)
    times, lens = [], []
    for idx, leaf in leaves.items():
        t = time.perf_counter()
        proof = ledger.inclusion_proof(idx, size)
        times.append(time.perf_counter() - t)
        lens.append(len(proof))
        verify_inclusion(bytes(leaf), idx, size, proof, root.root_hash)
    report.add("proofs", f"inclusion proof at {size:,} entries [{kind}]",
               f"p50 {ms(pct(times, 50))}  p99 {ms(pct(times, 99))}; {max(lens)} hashes = {32 * max(lens)} B",
               target="≤ 2 ms at 10^6",
               note="Ledger.inclusion_proof in-process (one statement on PostgreSQL, no transaction); "
                    "verified against the signed root")
    times, lens = [], []
    checkpoints = [c.tree_size for c in _checkpoints(b)]
    for _ in range(min(n, 100)):
        first = rng.choice(checkpoints[:-1]) if len(checkpoints) > 1 else max(1, size // 2)
        t = time.perf_counter()
        proof = ledger.consistency_proof(first, size)
        times.append(time.perf_counter() - t)
        lens.append(len(proof))
        old = ledger.checkpoint(first)
        if old is not None:
            verify_consistency(first, size, old.root_hash, root.root_hash, proof)
    report.add("proofs", f"consistency proof to {size:,} entries [{kind}]",
               f"p50 {ms(pct(times, 50))}  p99 {ms(pct(times, 99))}; ≤ {max(lens)} hashes = {32 * max(lens)} B",
               target="≤ 2 ms at 10^6", note="from a random earlier checkpoint; verified")


def served_proofs(report: Report, b: BigLedger, kind: str, workers: int, n: int = 500) -> None:
    """Proofs as a client gets them: ``GET /v1/log/proof/...`` from a real ``athar serve`` on this ledger, one
    keep-alive connection, each answer checked against the signed root it names."""
    rng = random.Random(12)
    size = b.size
    checkpoints = [c.tree_size for c in _checkpoints(b)]
    leaves = _random_leaves(b, rng, n)
    paths = [f"/v1/log/proof/inclusion?index={i}&tree_size={size}" for i in leaves]
    firsts = [rng.choice(checkpoints[:-1]) if len(checkpoints) > 1 else size for _ in range(min(n, 200))]
    paths += [f"/v1/log/proof/consistency?first={f}&second={size}" for f in firsts]
    root = b.ledger.checkpoint(size)
    assert root is not None

    with serve(b.home, b.url, workers) as srv:
        got = asyncio.run(_timed_gets(srv.base, paths, warm=50))
    inclusion, consistency = got[:len(leaves)], got[len(leaves):]
    for (idx, leaf), (_, status, body) in zip(leaves.items(), inclusion, strict=True):
        doc = json.loads(body)
        assert status == 200, body[:300]
        verify_inclusion(bytes(leaf), idx, size, [bytes.fromhex(h) for h in doc["hashes"]], root.root_hash)
    for first, (_, status, body) in zip(firsts, consistency, strict=True):
        doc = json.loads(body)
        assert status == 200, body[:300]
        verify_consistency(first, size, bytes.fromhex(doc["first_root_hash"]), root.root_hash,
                           [bytes.fromhex(h) for h in doc["hashes"]])
    for what, rows in (("inclusion", inclusion), ("consistency", consistency)):
        times = [t for t, _, _ in rows]
        largest = max(len(body) for _, _, body in rows)
        report.add("proofs", f"{what} proof served over HTTP at {size:,} entries [{kind}]",
                   f"p50 {ms(pct(times, 50))}  p95 {ms(pct(times, 95))}  p99 {ms(pct(times, 99))}",
                   target="≤ 2 ms at 10^6",
                   note=f"GET /v1/log/proof/{what} from a real `athar serve`, one keep-alive client, {len(rows)} "
                        f"requests, each verified against the signed root; largest answer {largest:,} B (JSON, hex)")


def pack_bundles(report: Report, b: BigLedger, kind: str, workers: int, n: int = 300) -> None:
    """One-pack bundles as a client gets them: ``GET /v1/packs/{gtin}/{serial}/bundle`` from a real ``athar
    serve`` on this ledger, one keep-alive connection; each bundle verified with the pinned keys, its size as sent."""
    packs = random.Random(8).sample(b.world.packs, min(n, len(b.world.packs)))
    paths = [f"/v1/packs/{gtin}/{serial}/bundle" for gtin, _, serial in packs]

    with serve(b.home, b.url, workers) as srv:
        got = asyncio.run(_timed_gets(srv.base, paths, warm=30))
    sizes: dict[str, list[int]] = {}
    verify_times: list[float] = []
    for _, status, body in got:
        assert status == 200, body[:300]
        t = time.perf_counter()
        bundle = verify_pack_bundle(json.loads(body), b.ledger.config.trust)
        verify_times.append(time.perf_counter() - t)
        sizes.setdefault(bundle.steps[-1].type, []).append(len(body))
    everything = [x for v in sizes.values() for x in v]
    by_kind = ", ".join(f"{k} {len(v)}: largest {max(v):,} B" for k, v in sorted(sizes.items()))
    report.add("proofs", f"one-pack bundle at {b.size:,} entries [{kind}]",
               f"largest {max(everything):,} B, p50 {int(pct(everything, 50)):,} B; served p50 "
               f"{ms(pct([t for t, _, _ in got], 50))} p95 {ms(pct([t for t, _, _ in got], 95))}",
               target="≤ 4 kB", note=f"GET /v1/packs/{{gtin}}/{{serial}}/bundle from a real `athar serve`, {len(got)} "
                                     f"random packs, one keep-alive client, each verified offline (p50 "
                                     f"{ms(pct(verify_times, 50))}); by the pack's latest step: {by_kind}")


async def _timed_gets(base: str, paths: list[str], *, warm: int) -> list[tuple[float, int, bytes]]:
    """GET each path in turn on one keep-alive connection: (seconds, status, body) each, after ``warm`` untimed
    requests that warm the connection, the worker and the statement cache."""
    conn = await Connection.open(base)
    try:
        for p in paths[:warm]:
            await conn.request("GET", p)
        out: list[tuple[float, int, bytes]] = []
        for p in paths:
            t = time.perf_counter()
            status, body = await conn.request("GET", p)
            out.append((time.perf_counter() - t, status, body))
        return out
    finally:
        conn.close()


def _random_leaves(b: BigLedger, rng: random.Random, n: int) -> dict[int, bytes]:
    """Up to ``n`` random entries of the ledger: index -> leaf hash."""
    query = sa.text("SELECT idx, entry_hash FROM log_entries WHERE idx IN :ids").bindparams(
        sa.bindparam("ids", expanding=True))
    with b.db.reader.connect() as conn:
        return {int(i): bytes(h) for i, h in conn.execute(query, {"ids": [rng.randrange(b.size) for _ in range(n)]})}


def _checkpoints(b: BigLedger) -> list:  # type: ignore[type-arg]
    with b.ledger.store.read() as u:
        return u.checkpoints()


def audit(report: Report, b: BigLedger, kind: str, what: str = "") -> None:
    out = run_measured([ATHAR, "audit", "verify", "--data-dir", str(b.home), "--db", b.url, "--json"], cwd=ROOT)
    took = out.took
    try:
        doc = json.loads(out.stdout)
    except json.JSONDecodeError:
        doc = {}
    ok = out.returncode == 0
    rate = b.size / took
    fl = floor_mod.get(0.5)
    checkpoints = doc.get("checkpoints")
    # a checkpoint is one more Ed25519 signature to check: with one per entry, that is in the floor too
    per_entry = fl.audit_s + (checkpoints / b.size) * fl.verify_s if isinstance(checkpoints, int) else fl.audit_s
    report.add("audit", f"athar audit verify, {b.size:,} entries{', ' + what if what else ''} [{kind}]",
               f"{rate:,.0f} entries/s ({took:.1f} s)"
               + ("" if ok else f" FAILED rc={out.returncode}: {_why(doc, out)}"),
               target="≥ 30,000 entries/s", floor=fraction(rate, 1 / per_entry),
               note=f"whole CLI run incl. start-up; peak memory of the replay process {out.peak_mb:,.0f} MB; "
                    f"{checkpoints if checkpoints is not None else '?'} checkpoints "
                    f"checked; replay on one core (on a scratch file past a million changed records), pages read "
                    f"ahead by a thread, leaf form, entry and checkpoint "
                    f"signatures checked ahead by {helpers_for(b.size)} helper process(es); "
                    f"floor {1 / per_entry:,.0f}/s per core (the audit floor"
                    + (f", plus {checkpoints / b.size:.3g} checkpoint signature per entry)" if checkpoints else ")"))


def audit_resumed(report: Report, b: BigLedger, kind: str, new: int) -> None:
    """An auditor's next audit: ``--state`` kept by a full audit (which replays on the state file), then about
    ``new`` more entries (a fresh mixed workload, appended in-process), then the audit that verifies only those.
    A third run with nothing new is what keeping the state costs on its own (start-up, opening and checking the
    file, committing)."""
    state = b.home / "audit.state"
    command = [ATHAR, "audit", "verify", "--data-dir", str(b.home), "--db", b.url, "--json", "--state", str(state)]

    def entries(out: Measured) -> int:
        try:
            return int(json.loads(out.stdout).get("entries", 0))
        except (json.JSONDecodeError, AttributeError):
            return 0

    full = run_measured(command, cwd=ROOT)
    if full.returncode != 0:
        report.add("audit", f"athar audit verify --state, on {b.size:,} entries [{kind}]",
                   f"FAILED rc={full.returncode}: {_why({}, full)}")
        return
    kept_mb = state.stat().st_size / 1e6
    report.add("audit", f"athar audit verify --state (a first audit, building the state file), {b.size:,} "
               f"entries [{kind}]", f"{b.size / full.took:,.0f} entries/s ({full.took:.1f} s)",
               note=f"the replay on the state file (SQLite, {kept_mb:,.0f} MB at the end); peak memory "
                    f"{full.peak_mb:,.0f} MB")
    world = build_world(Home(b.home).root_key(), **{f"n_{k}": v for k, v in pool_sizes(new).items()})
    set_up(b.ledger, world)
    append_all(b.ledger, as_signed(sign_all(world, mixed(world))), group=256)
    resumed = run_measured(command, cwd=ROOT)
    idle = run_measured(command, cwd=ROOT)
    n = entries(resumed)
    rate = n / resumed.took if resumed.took else 0.0
    report.add("audit", f"athar audit verify --state: {n:,} new entries after {b.size:,} [{kind}]",
               f"{rate:,.0f} new entries/s ({resumed.took:.1f} s)"
               + ("" if resumed.returncode == 0 else f" FAILED rc={resumed.returncode}: {_why({}, resumed)}"),
               note=f"an incremental audit, resumed from the state file; peak memory {resumed.peak_mb:,.0f} MB; "
                    f"with nothing new it takes {idle.took:.1f} s (start-up, opening and checking the "
                    f"{state.stat().st_size / 1e6:,.0f} MB file, committing): a day of Morocco's pharmacies "
                    f"(about 2.7 million entries) would take about "
                    f"{idle.took + 2.7e6 * max(0.0, resumed.took - idle.took) / max(n, 1):,.0f} s")


def scans(report: Report, b: BigLedger, kind: str, n: int = 2_000) -> None:
    """Pack scans on this log, in-process and one at a time: what ``GET /v1/packs/...`` asks of the ledger and the
    database, without HTTP. Compared across log sizes, it shows whether a scan's cost grows with the log."""
    reader = Reader(b.ledger)
    packs = random.Random(5).sample(b.world.packs, min(n + 200, len(b.world.packs)))
    for gtin, _, serial in packs[:200]:  # warm the statement cache and the database's plan
        reader.scan(gtin, serial)
    times: list[float] = []
    verdicts: Counter[str] = Counter()
    for gtin, _, serial in packs[200:]:
        t = time.perf_counter()
        found = reader.scan(gtin, serial)
        times.append(time.perf_counter() - t)
        verdicts[found.finding.verdict.value] += 1
    assert "UNKNOWN" not in verdicts, verdicts
    report.add("storage", f"pack scan on top of {b.size:,} entries [{kind}]",
               f"p50 {ms(pct(times, 50))}  p95 {ms(pct(times, 95))}", target="flat as the log grows",
               note=f"{len(times)} random packs of the ledger, one thread, no HTTP ({dict(verdicts)})")


def _why(doc: dict, out: Measured) -> str:  # type: ignore[type-arg]
    return str(doc.get("failure") or out.stderr or out.stdout)[:500]


def storage(report: Report, b: BigLedger, kind: str) -> None:
    if kind == "postgres":
        with b.db.reader.connect() as conn:
            log = sum(int(conn.execute(sa.text(f"SELECT pg_total_relation_size('{t}')")).scalar() or 0)
                      for t in LOG_TABLES)
            proj = sum(int(conn.execute(sa.text(f"SELECT pg_total_relation_size('{t}')")).scalar() or 0)
                       for t in PROJECTIONS)
            leaf = float(conn.execute(sa.text("SELECT avg(octet_length(leaf)) FROM log_entries")).scalar() or 0)
        report.add("storage", f"bytes stored per entry at {b.size:,} entries [{kind}]",
                   f"{log / b.size:,.0f} B/entry in log tables (+{proj / b.size:,.0f} B projections)",
                   note=f"pg_total_relation_size of {', '.join(LOG_TABLES)}; mean leaf {leaf:,.0f} B "
                        "(inflated by set-up commissions/shipments listing thousands of serials)")
    scans(report, b, kind)
    # in-process append rate of a fresh mixed workload on top of this log (GroupCommitter-sized groups)
    world = build_world(Home(b.home).root_key(), **{f"n_{k}": v for k, v in pool_sizes(1500).items()})
    set_up(b.ledger, world)
    events = as_signed(sign_all(world, mixed(world)))
    t = time.perf_counter()
    append_all(b.ledger, events, group=256)
    took = time.perf_counter() - t
    rate = len(events) / took
    fl = floor_mod.get(0.5)
    report.add("storage", f"in-process Ledger.append rate on top of {b.size:,} entries [{kind}]",
               f"{rate:,.0f} events/s", floor=fraction(rate, 1 / fl.append_s),
               note=f"{len(events)} mixed events in groups of 256, one thread (no HTTP)")
