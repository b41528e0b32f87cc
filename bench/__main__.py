"""python -m bench [--only NAME[,NAME...]] [--db sqlite|postgres|both] [--quick] [--workers N]

Benchmarks (names for --only):
  floor     per-event CPU floor: RFC 8785 encoding, Ed25519 verify, SHA-256 (one core)
  appends   signed appends/s and latency at 1, 16, 64 clients over HTTP (real `athar serve`)
  flush     signed appends at 64 clients when every disk flush takes 2 ms longer (PostgreSQL commit_delay)
  suspects  a wave of cloned packs: dispenses at the wrong pharmacy, each refused with an alert, at 64 clients
  lookups   pack verifications/s and latency at 64 clients, alone and with appends alongside
  batch     commission one 100,000-pack batch over HTTP, then look its packs up
  peak      open-loop traffic at Morocco's peak (200 appends/s + 150 lookups/s) and at twice it: latencies
  wrk       appends and lookups at 64 connections driven by wrk (a C load generator), when installed
  proofs    inclusion and consistency proof time and size, and one-pack bundles, at 10^3, 10^5, 10^6 entries
  audit     `athar audit verify` entries/s on a 10^5 (quick) or 10^6 entry ledger, and on a 10^5-entry one
            with one checkpoint per entry (a log written at low traffic)
  storage   bytes per entry in PostgreSQL; in-process append rate at 10^4 vs the big ledger
  queueing  dispenses queued behind large commissions: their wait, small events first and in arrival order
  scan      scan-to-verdict: decode a 12 MP JPEG and a 1280x720 frame; offline bundle verification
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench.common import Report, pg_available

ALL = ("floor", "appends", "flush", "suspects", "lookups", "peak", "wrk", "batch", "proofs", "audit", "storage",
       "queueing", "scan")
HTTP = {"appends", "flush", "suspects", "lookups", "peak", "wrk", "batch"}
BIG = {"proofs", "audit", "storage"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="postgres")
    parser.add_argument("--quick", action="store_true", help="short runs, logs up to 10^5 entries")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="athar serve worker processes")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(ALL)
    unknown = only - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if "postgres" in kinds and not pg_available():
        print("PostgreSQL is not reachable (ATHAR_BENCH_POSTGRES_URL); running on SQLite only", file=sys.stderr)
        kinds = [k for k in kinds if k != "postgres"] or ["sqlite"]

    report = Report()
    started = time.perf_counter()
    print(f"athar benchmarks on {os.cpu_count()} cores; databases: {', '.join(kinds)}; "
          f"{'quick' if args.quick else 'full'} mode", flush=True)
    if "floor" in only:
        from bench import floor

        print("\n[floor] per-event CPU floor", flush=True)
        floor.run(report, args.quick)
    if only & HTTP:
        from bench import http

        for kind in kinds:
            print(f"\n[{', '.join(sorted(only & HTTP))}] over HTTP on {kind}", flush=True)
            http.run_http(report, kind, args.quick, args.workers, only & HTTP)
    if only & BIG:
        from bench import biglog

        for kind in kinds:
            print(f"\n[{', '.join(sorted(only & BIG))}] big logs on {kind}", flush=True)
            biglog.run(report, kind, args.quick, only & BIG, args.workers)
    if "queueing" in only:
        from bench import queueing

        for kind in kinds:
            print(f"\n[queueing] small events behind large ones on {kind}", flush=True)
            queueing.run(report, kind, args.quick)
    if "scan" in only:
        from bench import scan

        print("\n[scan] scan-to-verdict", flush=True)
        scan.run(report, args.quick)

    print(f"\n=== results ({time.perf_counter() - started:.0f} s) ===")
    print_table(report)
    return 0


def print_table(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("bench", "measure", "figure", "target", "of floor", "note"):
        table.add_column(col, overflow="fold")
    for r in report.rows:
        table.add_row(r.bench, r.what, r.value, r.target, r.floor, r.note)
    Console(width=max(160, Console().width)).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
