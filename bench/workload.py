"""python -m bench.workload --data-dir DIR [--url URL] [--events N] [--out DIR]

Prepares a workload for a load generator of your own choosing against a running ``athar serve``: the benchmark's
synthetic supply chain (a manufacturer, 4 distributors, 32 pharmacies, with their stock) is registered and set up
on the server over HTTP, then N events are signed (85 % dispenses, 10 % shipments, 5 % receipts, each valid on
its own, in any order) and written out with the paths of the chain's packs:

  appends.txt         one signed submission per line: the body of a ``POST /v1/events``
  lookups.txt         one path per line: ``GET /v1/packs/{gtin}/{serial}``
  vegeta-appends.json the same submissions as vegeta JSON targets (``vegeta attack -format=json``)
  clones.txt          with --clones: each dispense of appends.txt again, by another pharmacy under a new id.
                      Sent after appends.txt, each is refused (409 duplicate_dispense) and files an alert: a
                      wave of cloned packs scanned across the country

Each submission appends once; sent again it is a replay (200, nothing appended), so prepare at least as many
events as the run will send. The actors are registered with the regulator root key of the data directory
(``DIR/keys/root.key``): use a server whose ledger may hold synthetic actors, such as the demo's or a fresh one.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.world import build_world, cloned, mixed, pool_sizes, set_up, sign_all
from ledger.home import Home, HomeError

#: the paths written for lookups at most (a sample of the chain's packs)
MAX_LOOKUPS = 60_000
#: appends/s assumed when suggesting a run's length (two cores serve about this many)
RATE_HINT = 3_000


def prepare(url: str, data_dir: Path, events: int, out: Path, say: Callable[[str], None] = print, *,
            clones: bool = False) -> dict[str, Path]:
    """Set the supply chain up on the server at ``url`` and write the workload files into ``out``."""
    root = Home(data_dir).root_key()
    world = build_world(root, **{f"n_{k}": v for k, v in pool_sizes(events).items()})
    set_up(world, url, lambda line: say(f"set up: {line}"))
    started = time.perf_counter()
    pool = sign_all(world, mixed(world))
    say(f"signed {len(pool):,} workload events in {time.perf_counter() - started:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    files = {"appends": out / "appends.txt", "lookups": out / "lookups.txt", "vegeta": out / "vegeta-appends.json"}
    files["appends"].write_bytes(b"".join(p + b"\n" for p in pool))
    sample = random.Random(3).sample(world.packs, min(MAX_LOOKUPS, len(world.packs)))
    files["lookups"].write_text("".join(f"/v1/packs/{gtin}/{serial}\n" for gtin, _lot, serial in sample))
    if clones:
        files["clones"] = out / "clones.txt"
        files["clones"].write_bytes(b"".join(p + b"\n" for p in sign_all(world, cloned(world))))
    target = url.rstrip("/") + "/v1/events"
    with files["vegeta"].open("w") as f:
        for p in pool:
            f.write(json.dumps({"method": "POST", "url": target, "body": base64.b64encode(p).decode(),
                                "header": {"Content-Type": ["application/json"]}}) + "\n")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the server's data directory (its keys/root.key registers the actors)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running server")
    parser.add_argument("--events", type=int, default=100_000, help="signed events to prepare (each appends once)")
    parser.add_argument("--out", type=Path, default=Path("athar-load"), help="directory for the files")
    parser.add_argument("--clones", action="store_true",
                        help="also write clones.txt: the dispenses again at other pharmacies (refused, alerted)")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    try:  # before the server is touched: nothing is set up on it for files that could not be written
        args.out.mkdir(parents=True, exist_ok=True)
        probe = args.out / ".athar-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        print(f"error: cannot write the workload into {args.out}: {exc}", file=sys.stderr)
        return 2
    try:
        files = prepare(args.url, args.data_dir, args.events, args.out, clones=args.clones)
    except HomeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, httpx.HTTPError) as exc:
        print(f"error: cannot reach the server at {args.url}: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a set-up event refused
        print(f"error: {exc}", file=sys.stderr)
        return 1
    script = Path(__file__).with_name("wrk") / "requests.lua"
    seconds = max(1, min(30, args.events // RATE_HINT))  # a run the prepared events last at that rate
    print(f"\nwrote {files['appends']}, {files['lookups']}, {files['vegeta']}\n"
          f"{args.events:,} events append once each ({args.events / RATE_HINT:.1f} s at {RATE_HINT:,} appends/s); "
          "sent again they are replays (200), not appends\n\nfor example:\n"
          f"  wrk -t2 -c64 -d{seconds}s --latency -s {script} {args.url} -- {files['appends']} 2 POST\n"
          f"  wrk -t2 -c64 -d30s --latency -s {script} {args.url} -- {files['lookups']} 2 GET\n"
          f"  vegeta attack -format=json -targets={files['vegeta']} -rate=2000 -duration={seconds}s | vegeta report")
    if "clones" in files:
        print(f"  wrk -t2 -c64 -d{seconds}s --latency -s {script} {args.url} -- {files['clones']} 2 POST"
              "   # after appends.txt: refusals, each filing an alert")
    return 0


if __name__ == "__main__":
    sys.exit(main())
