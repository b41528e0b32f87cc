"""Benchmarks over HTTP against a real ``athar serve``: signed appends (1), also with every disk flush 2 ms
slower, pack verifications alone and with appends alongside (2), and commissioning a 100,000-pack batch then
looking its packs up (3)."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench import bare, common, wrk_check
from bench import floor as floor_mod
from bench.common import Report, Server, athar_init, database, fraction, ms, pct, serve, vacuum_analyze
from bench.loadgen import Load, LoadResult, run
from bench.world import EXPIRY, GTIN, World, build_world, cloned, mixed, pool_sizes, set_up, sign_all
from ledger import events as ev
from ledger.home import Home

LEVELS = (1, 16, 64)
#: how much longer every WAL flush takes in benchmark ``flush`` (the issue: "still >= 5,000/s if each flush took
#: 2 ms")
FLUSH_DELAY_US = 2_000


def _row_for(report: Report, bench: str, what: str, r: LoadResult, floor_rate: float | None, target: str,
             note: str) -> None:
    value = (f"{r.rate:,.0f}/s  p50 {ms(r.p(50))}  p95 {ms(r.p(95))}  p99 {ms(r.p(99))}"
             + (f"  ({r.failed} failed)" if r.failed else ""))
    extra = "pool exhausted before the deadline; " if r.exhausted else ""
    report.add(bench, what, value, target=target, floor=fraction(r.rate, floor_rate), note=extra + note)
    for e in r.errors[:2]:
        print(f"    error sample: {e}")


def run_http(report: Report, kind: str, quick: bool, workers: int, only: set[str] | None) -> None:
    duration = 5.0 if quick else 15.0
    # enough signed events for the target's 5,000 appends/s over the 64-client step (its slice is 0.2/1.3 of the
    # pool): in a fast phase (thirteenth session) 104,000 ran out at 3,356/s before the step's end
    pool_total = 170_000 if quick else 500_000
    fl = floor_mod.get(0.5)
    cores = os.cpu_count() or 1
    with database(kind) as (home, url):
        athar_init(home, url)
        root = Home(home).root_key()
        world = build_world(root, **{f"n_{k}": v for k, v in pool_sizes(pool_total).items()})
        t = time.perf_counter()
        pool = sign_all(world, mixed(world))
        print(f"    signed {len(pool)} workload events in {time.perf_counter() - t:.1f} s (before any timing)")
        get_floor, post_floor = _http_floor(report, workers, duration, world, pool, kind)
        with serve(home, url, workers) as srv:
            set_up(world, srv.base, lambda line: print(f"    set-up: {line}"))
            vacuum_analyze(url)  # the plans of a database in service, not of the empty tables the set-up started from
            # appends at 1/16/64 clients, appends beside lookups, the wrk cross-check, the national-peak runs
            # the last slice is for ``flush``: half here, half on a server whose disk flushes are slower
            slices = _split(pool, [share / 1.3 for share in (0.04, 0.12, 0.2, 0.2, 0.22, 0.22, 0.3)])
            tag = f"{kind}, {workers} worker(s)"
            if only is None or "appends" in only:
                for clients, items in zip(LEVELS, slices, strict=False):
                    (res,), note = run([Load("appends", srv.base, "POST", items, clients,
                                             procs=min(2, clients))], duration, srv.pid)
                    _row_for(report, "appends", f"signed appends, {clients} client(s) [{tag}]", res,
                             fl.appends_per_s(cores), "≥ 5,000/s, p99 ≤ 50 ms" if clients == 64 else "",
                             f"{fraction(res.rate, post_floor)} of the HTTP floor for a POST; {note}")
            if only is None or "suspects" in only:
                _suspects(report, srv, world, duration, tag)
            if only is None or "lookups" in only:
                paths = [f"/v1/packs/{g}/{s}" for g, _, s in random.Random(3).sample(world.packs,
                                                                                         min(60_000, len(world.packs)))]
                (res,), note = run([Load("lookups", srv.base, "GET", paths, 64, procs=2)], duration, srv.pid)
                _row_for(report, "lookups", f"pack verifications, 64 clients, alone [{tag}]", res, get_floor,
                         "p95 ≤ 10 ms at ≥ 2,000/s", f"of floor: of the HTTP floor for a GET; {note}")
                (lk, ap), note = run([Load("lookups", srv.base, "GET", paths, 64, procs=2),
                                      Load("appends", srv.base, "POST", slices[3], 16, procs=1)], duration, srv.pid)
                _row_for(report, "lookups", f"pack verifications, 64 clients, with appends [{tag}]", lk, get_floor,
                         "p95 ≤ 10 ms at ≥ 2,000/s", f"of floor: of the HTTP floor for a GET; {note}")
                _row_for(report, "lookups", f"  ...appends alongside, 16 clients [{tag}]", ap, fl.appends_per_s(cores),
                         "≥ 2,000/s alongside", "")
            if only is None or "peak" in only:
                _peak(report, srv.base, slices[5], world, duration, tag, srv.pid)
            if only is None or "wrk" in only:
                _wrk(report, srv.base, slices[4], world, duration, tag)
            if only is None or "batch" in only:
                _batch(report, world, srv.base, tag)
            half = len(slices[6]) // 2
            if only is None or "flush" in only:
                plain = _appends_and_flushes(srv, url, kind, slices[6][:half], duration)
        if only is None or "flush" in only:
            # the same appends with every flush slower, on a server of its own (its database sessions carry the
            # setting), against the plain server's figure measured just before with the other half of the slice
            _slow_flush(report, kind, home, url, workers, slices[6][half:], duration, tag, fl.appends_per_s(cores),
                        plain)


def _suspects(report: Report, srv: Server, world: World, duration: float, tag: str) -> None:
    """A wave of cloned packs: the pool's dispenses again at another pharmacy, each refused (a duplicate dispense,
    or a pack its dispenser never received) with an alert filed in the log."""
    clones = sign_all(world, cloned(world)[:40_000])
    (res,), note = run([Load("suspects", srv.base, "POST", clones, 64, procs=2, ok_status=(409,))], duration,
                       srv.pid)
    _row_for(report, "suspects", f"suspect scans refused with an alert, 64 clients [{tag}]", res, None,
             "", f"each answered 409 and alerted; {note}")


def _http_floor(report: Report, workers: int, duration: float, world: World, pool: Sequence[bytes], kind: str
                ) -> tuple[float, float]:
    """GETs and POSTs/s of an app that does nothing, served and driven as athar is (``bench.bare``)."""
    paths = [f"/v1/packs/{g}/{s}" for g, _, s in world.packs[:1000]]
    get, post, get_note, post_note = bare.measure(workers, duration, paths, pool[:1000])
    tag = f"{workers} worker(s), before the {kind} runs"  # no database: measured again before each kind's runs
    _row_for(report, "floor", f"HTTP floor: GET /v1/packs/... answered by an app that does nothing, 64 clients "
             f"[{tag}]", get, None, "", f"uvicorn as athar serve runs it; {get_note}")
    _row_for(report, "floor", f"HTTP floor: POST of a signed event, read but not parsed, 64 clients [{tag}]", post,
             None, "", post_note)
    return get.rate, post.rate


def _appends_and_flushes(srv: Server, url: str, kind: str, events: Sequence[bytes], duration: float
                         ) -> tuple[LoadResult, str, int | None]:
    """64 clients appending, and how many times PostgreSQL flushed its WAL meanwhile (None on SQLite)."""
    before = common.wal_syncs(url) if kind == "postgres" else None
    (res,), note = run([Load("appends", srv.base, "POST", events, 64, procs=2)], duration, srv.pid)
    if before is None:
        return res, note, None
    time.sleep(1.2)  # a session reports its counts to the statistics about once a second
    after = common.wal_syncs(url)
    return res, note, (after - before) if after is not None else None


def _per_flush(res: LoadResult, syncs: int | None) -> str:
    return f"{res.ok / syncs:,.1f} appends per WAL flush ({syncs:,} flushes)" if syncs else "WAL flushes not counted"


def _slow_flush(report: Report, kind: str, home: Path, url: str, workers: int, events: Sequence[bytes],
                duration: float, tag: str, floor_rate: float, plain: tuple[LoadResult, str, int | None]) -> None:
    """Appends at 64 clients when every WAL flush takes 2 ms longer, as on a slow disk: PostgreSQL's
    ``commit_delay`` (with ``commit_siblings`` 0) sleeps that long before each flush. One commit per request,
    one at a time, would top out near 1/(commit time); a group commit shares each flush among the group."""
    res, note, syncs = plain
    _row_for(report, "flush", f"signed appends, 64 clients, flushes as they are [{tag}]", res, floor_rate, "",
             f"{_per_flush(res, syncs)}; {note}")
    what = f"signed appends, 64 clients, every disk flush {FLUSH_DELAY_US / 1000:g} ms slower [{tag}]"
    if kind != "postgres":
        report.add("flush", what, "skipped", note="PostgreSQL only: SQLite has no setting that slows its flushes")
        return
    slow = common.with_pg_settings(url, {"commit_delay": str(FLUSH_DELAY_US), "commit_siblings": "0"})
    plain_commit, slow_commit = common.commit_time(url), common.commit_time(slow)
    print(f"    a single-row commit: {ms(plain_commit)}; with the slower flush: {ms(slow_commit)}")
    with serve(home, slow, workers) as srv:
        res, note, syncs = _appends_and_flushes(srv, url, kind, events, duration)
    _row_for(report, "flush", what, res, floor_rate, "still ≥ 5,000/s",
             f"{_per_flush(res, syncs)}; a single-row commit took {ms(slow_commit)} with the setting "
             f"({ms(plain_commit)} without): one commit per request, one at a time, would top out at "
             f"{1 / slow_commit:,.0f}/s; {note}")


# Morocco's pharmacies: about 1 billion pack events a year, 100-200 per second at peak; Germany's verification
# system: about 150 checks per second in business hours (issue 6).
PEAK_APPENDS, PEAK_LOOKUPS = 200, 150
# The target: 2,000 verifications/s at p95 <= 10 ms while 2,000 appends/s run alongside.
TARGET_APPENDS, TARGET_LOOKUPS = 2_000, 2_000


def _peak(report: Report, base: str, events: Sequence[bytes], world: World, duration: float, tag: str,
          pid: int) -> None:
    """Open-loop traffic at the national peak and at twice it: what latency does a pharmacist see?"""
    paths = [f"/v1/packs/{g}/{s}" for g, _, s in random.Random(6).sample(world.packs, min(60_000, len(world.packs)))]
    used = 0
    for factor in (1, 2):
        a_rate, l_rate = PEAK_APPENDS * factor, PEAK_LOOKUPS * factor
        n = int(a_rate * duration * 1.3)
        (ap, lk), note = run([Load("appends", base, "POST", events[used:used + n], 32, procs=1, rate=a_rate),
                              Load("lookups", base, "GET", paths, 32, procs=1, rate=l_rate)], duration, pid)
        used += n
        what = f"national peak x{factor}: {a_rate} appends/s + {l_rate} lookups/s offered, open loop [{tag}]"
        _row_for(report, "peak", what.replace("offered", "offered; appends"), ap, None, "", note)
        _row_for(report, "peak", f"  ...lookups at the same time [{tag}]", lk, None,
                 "p95 ≤ 10 ms (EU bound 300 ms)", "")
    # the issue's own rates, offered on schedule: a closed loop of 64 clients measures only saturation, where the
    # latency is the queue of 64 requests whatever the server does
    (lk,), note = run([Load("lookups", base, "GET", paths, 64, procs=2, rate=TARGET_LOOKUPS)], duration, pid)
    _row_for(report, "peak", f"pack verifications, {TARGET_LOOKUPS:,}/s offered, open loop [{tag}]", lk, None,
             "p95 ≤ 10 ms at ≥ 2,000/s", note)
    n = int(TARGET_APPENDS * duration * 1.3)
    (ap, lk), note = run([Load("appends", base, "POST", events[used:used + n], 64, procs=1, rate=TARGET_APPENDS),
                          Load("lookups", base, "GET", paths, 64, procs=1, rate=TARGET_LOOKUPS)], duration, pid)
    _row_for(report, "peak", f"{TARGET_APPENDS:,} appends/s + {TARGET_LOOKUPS:,} lookups/s offered; appends, open loop "
             f"[{tag}]", ap, None, "≥ 2,000/s alongside", note)
    _row_for(report, "peak", f"  ...lookups at the same time [{tag}]", lk, None, "p95 ≤ 10 ms at ≥ 2,000/s", "")


def _wrk(report: Report, base: str, events: Sequence[bytes], world: World, duration: float, tag: str) -> None:
    if not wrk_check.available():
        report.add("wrk", "cross-check with wrk", "skipped", note="wrk is not installed (apt-get install wrk)")
        return
    appends = wrk_check.run_wrk(base, "POST", events, 64, duration)
    wrk_check.add_rows(report, "wrk", f"signed appends, 64 connections, wrk [{tag}]", appends,
                       "≥ 5,000/s, p99 ≤ 50 ms")
    paths = [f"/v1/packs/{g}/{s}" for g, _, s in random.Random(4).sample(world.packs, min(60_000, len(world.packs)))]
    lookups = wrk_check.run_wrk(base, "GET", paths, 64, duration)
    wrk_check.add_rows(report, "wrk", f"pack verifications, 64 connections, wrk [{tag}]", lookups,
                       "p95 ≤ 10 ms at ≥ 2,000/s")


def _split(items: Sequence[bytes], shares: Sequence[float]) -> list[list[bytes]]:
    out, start = [], 0
    for s in shares:
        n = int(len(items) * s)
        out.append(list(items[start:start + n]))
        start += n
    return out


def _batch(report: Report, world: World, base: str, tag: str, n: int = 100_000) -> None:
    mfr = next(a for a, r in world.roles.items() if r == "manufacturer")
    lot = f"BIG{random.getrandbits(24):06X}"
    serials = [f"{lot}{i:07d}" for i in range(n)]
    body = {"v": ev.SCHEMA_VERSION, "type": "commission", "id": f"bench-batch-{lot}", "actor": mfr,
            "time": ev.format_time(dt.datetime.now(dt.UTC)),
            "gtin": GTIN, "lot": lot, "expiry": EXPIRY.isoformat(), "product": "Bench Paracétamol 500 mg",
            "quantity": n, "serials": serials, "channel": "private"}
    (payload,) = sign_all(world, [(mfr, body)])
    with httpx.Client(base_url=base, timeout=600) as client:
        client.get("/v1/health")
        t = time.perf_counter()
        r = client.post("/v1/events", content=payload, headers={"content-type": "application/json"})
        took = time.perf_counter() - t
        if r.status_code != 201:
            report.add("batch", f"commission {n:,} packs [{tag}]", f"refused {r.status_code}", note=r.text[:200])
            return
        report.add("batch", f"commission one batch of {n:,} serialized packs, HTTP POST [{tag}]", f"{took:.2f} s",
                   target="≤ 2 s", note=f"body {len(payload) / 1e6:.1f} MB; {n / took:,.0f} packs/s")
        lat = []
        for s in random.Random(5).sample(serials, 500):
            t = time.perf_counter()
            rr = client.get(f"/v1/packs/{GTIN}/{s}")
            lat.append(time.perf_counter() - t)
            if rr.status_code != 200 or json.loads(rr.text).get("verdict") != "AUTHENTIC":
                report.add("batch", "lookup of a pack of the batch", f"unexpected {rr.status_code} {rr.text[:200]}")
                return
        report.add("batch", f"look up a pack of that batch, 1 client, 500 lookups [{tag}]",
                   f"p50 {ms(pct(lat, 50))}  p95 {ms(pct(lat, 95))}  p99 {ms(pct(lat, 99))}",
                   note="verdict AUTHENTIC; the response carries the batch history")
