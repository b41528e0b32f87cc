"""Soak: mixed load against a real ``athar serve`` for minutes; per interval the server's RSS, latency percentiles
per operation and error counts; a full audit at the end.

    python -m tests.reliability.soak --minutes 10                  # SQLite in a temporary data directory
    python -m tests.reliability.soak --minutes 10 --db postgresql+psycopg://postgres@127.0.0.1:5432/test

Exit status 0 when no request got a 5xx, no unexpected refusal happened, and the audit passes.
(With --db postgresql... a fresh schema is created and dropped afterwards.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import random
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import sqlalchemy as sa

from ledger.audit import verify_store
from ledger.home import open_ledger
from ledger.request_signing import sign_request
from tests.reliability.harness import ServerProcess, now_clock
from tests.support import GTIN, GTIN_B, World, make_world

POOL = 20_000  # default number of packs delivered to the pharmacies up front, dispensed during the run
WEIGHTS = {"commission": 15, "ship+receive": 15, "dispense": 25, "scan (public)": 25, "history (signed)": 12,
           "checkpoint+proof": 8}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000


@dataclass
class Window:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class SoakResult:
    rows: list[dict[str, object]]
    ops: Counter[str]
    errors: Counter[str]
    server_errors: int
    audit_ok: bool
    audit_entries: int
    audit_seconds: float
    rss_start_kib: int
    rss_end_kib: int


class Soak:
    def __init__(self, world: World, base: str, pool: int) -> None:
        self.world = world
        self.base = base
        self.lock = threading.Lock()
        self.window = Window()
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.server_errors = 0
        self.stop = threading.Event()
        self.lots = itertools.count()
        self.pool_size = pool
        self.pool = [(f"P{i:06d}", "ph-rabat" if i % 2 else "ph-fes") for i in range(pool)]
        random.Random(7).shuffle(self.pool)
        self.stock: list[tuple[str, str, list[str]]] = []  # (manufacturer, lot, serials still held)
        self.lot_names: list[str] = ["POOL"]

    def record(self, op: str, took: float, r: httpx.Response | None, ok: set[int]) -> None:
        with self.lock:
            self.ops[op] += 1
            if r is None:
                self.window.errors[f"{op}: connection"] += 1
                self.errors[f"{op}: connection"] += 1
            elif r.status_code not in ok:
                code = r.json().get("code") if "json" in r.headers.get("content-type", "") else ""
                key = f"{op}: {r.status_code} {code}"
                self.window.errors[key] += 1
                self.errors[key] += 1
                self.server_errors += r.status_code >= 500
            else:
                self.window.latencies[op].append(took)

    def call(self, http: httpx.Client, op: str, method: str, path: str, ok: set[int],
             **kw: object) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = http.request(method, path, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError:
            r = None
        self.record(op, time.perf_counter() - t0, r, ok)
        return r

    def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        w = self.world
        ops, weights = list(WEIGHTS), list(WEIGHTS.values())
        expiry = dt.date.today() + dt.timedelta(days=700)
        seen = 0  # the last checkpoint size this client saw: a monitor asks for consistency from it
        with httpx.Client(base_url=self.base, timeout=60) as http:
            while not self.stop.is_set():
                op = rng.choices(ops, weights)[0]
                if op == "commission":
                    maker = rng.choice(["maphar", "sothema"])
                    lot = f"S{next(self.lots):06d}"
                    serials = [f"{lot}X{i}" for i in range(5)]
                    r = self.call(http, op, "POST", "/v1/events", {201}, json=w.as_(maker).commission(
                        GTIN, lot, expiry, "Soak 500 mg", serials).to_json())
                    if r is not None and r.status_code == 201:
                        with self.lock:
                            self.stock.append((maker, lot, serials))
                            self.lot_names.append(lot)
                elif op == "ship+receive":
                    with self.lock:
                        item = self.stock.pop() if self.stock else None
                    if item is None:
                        continue
                    maker, lot, serials = item
                    ship = w.as_(maker).ship(GTIN, lot, "dist-north", serials=serials[:1])
                    r = self.call(http, op, "POST", "/v1/events", {201}, json=ship.to_json())
                    if r is not None and r.status_code == 201:
                        self.call(http, op, "POST", "/v1/events", {201},
                                  json=w.as_("dist-north").receive(ship.event_id).to_json())
                    if len(serials) > 1:
                        with self.lock:
                            self.stock.insert(0, (maker, lot, serials[1:]))
                elif op == "dispense":
                    with self.lock:
                        item2 = self.pool.pop() if self.pool else None
                    if item2 is None:
                        continue
                    serial, pharmacy = item2
                    self.call(http, op, "POST", "/v1/events", {201},
                              json=w.as_(pharmacy).dispense(GTIN_B, serial).to_json())
                elif op == "scan (public)":
                    serial = f"P{rng.randrange(self.pool_size):06d}"
                    self.call(http, op, "GET", f"/v1/packs/{GTIN_B}/{serial}", {200})
                elif op == "history (signed)":
                    with self.lock:
                        lot = rng.choice(self.lot_names[-200:])
                    gtin = GTIN_B if lot == "POOL" else GTIN
                    if lot == "POOL":
                        continue  # 20,000 entries: a different benchmark
                    path = f"/v1/batches/{gtin}/{quote(lot)}/history"
                    headers = sign_request(w.keys["regulator"], "regulator", "GET", path, int(time.time()))
                    self.call(http, op, "GET", path, {200}, headers=headers)
                else:
                    r = self.call(http, op, "GET", "/v1/log/checkpoint", {200})
                    if r is not None and r.status_code == 200:
                        size = int(r.text.split("\n")[1])
                        if 0 < seen < size:
                            self.call(http, op, "GET", "/v1/log/proof/consistency", {200},
                                      params={"first": seen, "second": size})
                        seen = size

    def take_window(self) -> Window:
        with self.lock:
            w, self.window = self.window, Window()
        return w


def _setup(home: Path, url: str, pool: int) -> World:
    world = make_world(home, url, clock=now_clock())
    serials = [f"P{i:06d}" for i in range(pool)]
    expiry = dt.date.today() + dt.timedelta(days=700)
    world.ledger.submit(world.as_("maphar").commission(GTIN_B, "POOL", expiry, "Pool 1 g", serials))
    world.deliver("maphar", "ph-rabat", "POOL", serials[1::2], gtin=GTIN_B)
    world.deliver("maphar", "ph-fes", "POOL", serials[0::2], gtin=GTIN_B)
    return world


def run(seconds: float, db_url: str | None = None, threads: int = 6, interval: float = 60.0,
        out: object = print, pool: int = POOL) -> SoakResult:
    tmp = Path(tempfile.mkdtemp(prefix="athar-soak-"))
    schema = None
    base_url = db_url
    if db_url and db_url.startswith("postgresql"):
        schema = "soak_" + uuid.uuid4().hex[:10]
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        engine.dispose()
        db_url = f"{db_url}{'&' if '?' in db_url else '?'}options=-csearch_path%3D{schema}"
    url = db_url or f"sqlite:///{tmp / 'ledger.db'}"
    home = tmp / "home"
    world = _setup(home, url, pool)
    server = ServerProcess(home, url, log=tmp / "server.log")
    server.start()
    soak = Soak(world, server.base, pool)
    rss_start = rss_kib(server.pid)
    workers = [threading.Thread(target=soak.worker, args=(n,), daemon=True) for n in range(threads)]
    for t in workers:
        t.start()
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    say = out  # type: ignore[assignment]
    say(f"soak: {threads} threads for {seconds:.0f} s against athar serve (pid {server.pid}) on "
        f"{url.split(':')[0]}; RSS at start {rss_start / 1024:.1f} MiB")  # type: ignore[operator]
    try:
        n = 0
        while time.monotonic() - started < seconds:
            time.sleep(min(interval, seconds - (time.monotonic() - started)))
            n += 1
            w = soak.take_window()
            all_lat = [x for v in w.latencies.values() for x in v]
            row: dict[str, object] = {"t_s": round(time.monotonic() - started),
                                      "rss_mib": round(rss_kib(server.pid) / 1024, 1),
                                      "requests": len(all_lat) + sum(w.errors.values()),
                                      "p50_ms": round(pct(all_lat, 50), 1), "p95_ms": round(pct(all_lat, 95), 1),
                                      "p99_ms": round(pct(all_lat, 99), 1), "errors": dict(w.errors),
                                      "per_op_p95_ms": {k: round(pct(v, 95), 1)
                                                        for k, v in sorted(w.latencies.items())}}
            rows.append(row)
            say(f"[{n}] t={row['t_s']}s rss={row['rss_mib']} MiB requests={row['requests']} "  # type: ignore[operator]
                f"p50={row['p50_ms']} p95={row['p95_ms']} p99={row['p99_ms']} ms errors={row['errors']} "
                f"p95 per op={row['per_op_p95_ms']}")
    finally:
        soak.stop.set()
        for t in workers:
            t.join(60)
        rss_end = rss_kib(server.pid)
        server.stop()
        world.db.dispose()
    t0 = time.perf_counter()
    ledger, db = open_ledger(home, url)
    try:
        report = verify_store(ledger.store, ledger.config.trust, ledger.config.origin)
    finally:
        db.dispose()
    took = time.perf_counter() - t0
    say(f"audit: {'intact' if report.ok else report.failure} - {report.entries} entries, "  # type: ignore[operator]
        f"{report.checkpoints} checkpoints in {took:.1f} s; ops {dict(soak.ops)}; errors {dict(soak.errors)}; "
        f"server errors (5xx) {soak.server_errors}; RSS {rss_start / 1024:.1f} -> {rss_end / 1024:.1f} MiB")
    if schema:
        engine = sa.create_engine(base_url or "")
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()
    return SoakResult(rows, soak.ops, soak.errors, soak.server_errors, report.ok, report.entries, took, rss_start,
                      rss_end)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--interval", type=float, default=60, help="seconds per report line")
    parser.add_argument("--pool", type=int, default=POOL, help="packs in the one big batch that is dispensed")
    args = parser.parse_args()
    result = run(args.seconds if args.seconds is not None else args.minutes * 60, args.db, args.threads,
                 args.interval, out=lambda line: print(line, flush=True), pool=args.pool)
    return 0 if result.audit_ok and result.server_errors == 0 and not result.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
