"""The load generator: separate processes, each running closed-loop clients on asyncio (``bench.rawhttp``, one
keep-alive connection each), sending requests prepared in advance (signed event bodies, or pack URLs). Every
client sends one request at a time (a closed loop), so "N clients" means N requests in flight. All processes
start together at an agreed instant and stop at the deadline or when their share of the prepared requests
runs out.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.common import CpuMeter, cpu_note, pct


@dataclass
class Load:
    """One kind of traffic: ``clients`` closed-loop clients spread over ``procs`` processes."""

    name: str
    base: str
    method: str  # "POST" (items are JSON bodies for /v1/events) or "GET" (items are paths)
    items: Sequence[Any]
    clients: int
    procs: int = 2
    ok_status: tuple[int, ...] = (200, 201)
    # Open loop: requests per second for the whole load, on a fixed schedule per client; a latency is counted
    # from the scheduled send time, so a server that falls behind shows it (no coordinated omission).
    # None: closed loop, each client sends its next request when the previous one is answered.
    rate: float | None = None


@dataclass
class LoadResult:
    name: str
    clients: int
    ok: int
    failed: int
    seconds: float
    latencies: list[float]
    exhausted: bool
    errors: list[str] = field(default_factory=list)
    cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def p(self, q: float) -> float:
        return pct(self.latencies, q)


def _worker(load: Load, shards: list[list[Any]], conn: Connection) -> None:
    from bench.rawhttp import Connection as Http
    from bench.rawhttp import HttpError

    # A forked worker inherits the benchmark's heap (the world, the signed pool: ~212,000 objects); a collection
    # traversing it paused the worker 6-24 ms, added to the latency of every request then in flight.
    gc.freeze()

    async def main() -> dict[str, Any]:
        conns = [await Http.open(load.base) for _ in shards]
        for c in conns:
            await c.request("GET", "/v1/health")  # warm the connections
        conn.send("ready")
        start_at, deadline = conn.recv()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0 = time.process_time()
        lat: list[float] = []
        errors: list[str] = []
        counts = {"ok": 0, "failed": 0, "exhausted": 0}
        finish = [start_at]

        interval = load.clients / load.rate if load.rate else 0.0

        async def run(http: Http, items: list[Any], offset: float) -> None:
            scheduled = time.perf_counter() + offset
            for item in items:
                if time.time() >= deadline:
                    return
                if interval:
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    t0 = scheduled
                    scheduled += interval
                else:
                    t0 = time.perf_counter()
                try:
                    if load.method == "POST":
                        status, body = await http.request("POST", "/v1/events", item)
                    else:
                        status, body = await http.request("GET", item)
                except (HttpError, OSError, asyncio.IncompleteReadError) as exc:
                    status, body = 0, repr(exc).encode()
                    http = await Http.open(load.base)
                lat.append(time.perf_counter() - t0)
                if status in load.ok_status:
                    counts["ok"] += 1
                else:
                    counts["failed"] += 1
                    if len(errors) < 5:
                        errors.append(f"{status}: {body[:300].decode('utf-8', 'replace')}")
            counts["exhausted"] += 1
            finish[0] = max(finish[0], time.time())

        spread = random.Random(os.getpid())  # clients (of every process) start at random points of the interval
        offsets = [interval * spread.random() for _ in shards]
        await asyncio.gather(*(run(c, s, o) for c, s, o in zip(conns, shards, offsets, strict=True)))
        cpu = time.process_time() - cpu0
        for c in conns:
            c.close()
        end = min(deadline, max(finish[0], time.time())) if counts["exhausted"] == len(shards) else deadline
        return {"lat": lat, "errors": errors, "end": end, "start": start_at, "cpu": cpu, **counts}

    try:
        import uvloop
        result = uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        result = asyncio.run(main())
    conn.send(result)
    conn.close()


def run(loads: Sequence[Load], duration: float, server_pid: int | None = None) -> tuple[list[LoadResult], str]:
    """Run every load at once for ``duration`` seconds; return their results and a CPU-use note."""
    ctx = mp.get_context("fork")
    started: list[tuple[Load, Connection, mp.process.BaseProcess]] = []
    for load in loads:
        procs = max(1, min(load.procs, load.clients))
        per_client: list[list[Any]] = [list(load.items[i::load.clients]) for i in range(load.clients)]
        for p in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(load, per_client[p::procs], child), daemon=True)
            proc.start()
            started.append((load, parent, proc))
    for _, conn, _ in started:
        if conn.recv() != "ready":
            raise RuntimeError("load generator failed to start")
    meter = CpuMeter(server_pid)
    start_at = time.time() + 0.5
    deadline = start_at + duration
    for _, conn, _ in started:
        conn.send((start_at, deadline))
    time.sleep(max(0.0, start_at - time.time()))
    before = meter.snapshot()
    parts: list[tuple[Load, dict[str, Any]]] = []
    after = None
    for load, conn, worker in started:
        parts.append((load, conn.recv()))
        if after is None:
            after = meter.snapshot()  # the first worker is done: the load window has ended
        worker.join()
    assert after is not None
    results = []
    for load in loads:
        mine = [r for ld, r in parts if ld is load]
        lat = [x for r in mine for x in r["lat"]]
        end = max(r["end"] for r in mine)
        results.append(LoadResult(load.name, load.clients, sum(r["ok"] for r in mine), sum(r["failed"] for r in mine),
                                  end - mine[0]["start"], lat, all(r["exhausted"] for r in mine),
                                  [e for r in mine for e in r["errors"]][:5], sum(r["cpu"] for r in mine)))
    # CPU per request only when the window served one kind of request
    requests = results[0].ok + results[0].failed if len(results) == 1 else 0
    return results, cpu_note(before, after, _window_cpu(results), requests)


def _window_cpu(results: Sequence[LoadResult]) -> float:
    return sum(r.cpu for r in results)  # CPU seconds of the load generator during the timed window


SETUP_ATTEMPTS = 5


def _outcome_unknown(r: Any) -> bool:
    """A 503 answered by athar (problem JSON, code ``outcome_unknown``), not by a proxy in front of it."""
    try:
        return bool(r.json().get("code") == "outcome_unknown")
    except (ValueError, AttributeError):
        return False


def submit_all(base: str, payloads: Sequence[bytes], threads: int = 16) -> None:
    """Submit set-up events (untimed), in parallel; raise on the first refusal.

    An event whose outcome the server could not tell in time (503 ``outcome_unknown``: in full mode a group of
    a dozen 50,000-pack shipments can outlast the server's 60 s wait) is sent again, as the API tells a client to:
    the same signed event is recorded once, and its receipt comes back when it was."""
    import httpx

    with httpx.Client(base_url=base, timeout=300, limits=httpx.Limits(max_connections=threads)) as client:
        def one(body: bytes) -> None:
            for _ in range(SETUP_ATTEMPTS):
                r = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
                if r.status_code != 503 or not _outcome_unknown(r):
                    break
            if r.status_code not in (200, 201):
                raise RuntimeError(f"set-up event refused: {r.status_code} {r.text[:500]}")

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, payloads))
