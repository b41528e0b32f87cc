"""A real ``athar serve`` subprocess that can be killed with SIGKILL and restarted, a load generator that posts
pre-signed events from several threads and records every receipt, and the post-recovery checks."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ledger.audit import verify_store
from ledger.checkpoint import open_checkpoint
from ledger.entry import SignedEvent
from ledger.home import open_ledger
from ledger.merkle import verify_consistency, verify_inclusion
from ledger.monitor import check_update
from tests.integration.server import free_port
from tests.support import GTIN, GTIN_B, Clock, World, make_world

REPO = Path(__file__).resolve().parents[2]


def now_clock() -> Clock:
    return Clock(dt.datetime.now(dt.UTC).replace(microsecond=0))


class ServerProcess:
    """``athar serve`` as a child process on a fixed port, restartable after a kill -9."""

    def __init__(self, home: Path, db_url: str, *, log: Path, env: dict[str, str] | None = None) -> None:
        self.home, self.db_url, self.log = home, db_url, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "ATHAR_OVERDUE_CHECK_SECONDS": "0", **(env or {})}
        self.starts: list[float] = []  # seconds from spawn to ready, per start

    def start(self, timeout: float = 60) -> float:
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scanner_cli.main", "serve", "--data-dir", str(self.home), "--db",
                 self.db_url, "--port", str(self.port)], cwd=REPO, env=self.env, stdout=out, stderr=out,
                start_new_session=True)  # a process group of its own, which kill9 takes down whole
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"athar serve exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base + "/v1/ready", timeout=1).status_code == 200:
                    took = time.monotonic() - started
                    self.starts.append(took)
                    return took
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("athar serve did not become ready")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        """SIGKILL to every process of the server at once (supervisor, workers, sequencer), as a machine's crash
        stops them: none of them gets to finish what it was doing."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class LoadStats:
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> receipt
    unacked: list[SignedEvent] = field(default_factory=list)  # sent, no receipt (connection error or 503)
    statuses: Counter[str] = field(default_factory=Counter)  # "201", "503:storage_unavailable", "conn", ...
    bad: list[str] = field(default_factory=list)  # anything that is neither success nor 503/conn (e.g. a 500)
    latencies: list[float] = field(default_factory=list)


class LoadGen:
    """Threads that POST pre-signed events as fast as the server takes them."""

    def __init__(self, base: str, events: list[SignedEvent], threads: int = 6) -> None:
        self.base = base
        self.todo = list(reversed(events))
        self.threads = threads
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> LoadGen:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> LoadStats:
        self._stop.set()
        for t in self._workers:
            t.join(30)
        return self.stats

    @property
    def sent(self) -> int:
        return len(self.stats.receipts) + len(self.stats.unacked)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=httpx.Timeout(30, connect=2)) as http:
            while not self._stop.is_set():
                with self._lock:
                    if not self.todo:
                        return
                    signed = self.todo.pop()
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/events", json=signed.to_json())
                except httpx.ConnectError:  # never reached a server: not sent, try it again later
                    with self._lock:
                        self.stats.statuses["conn"] += 1
                        self.todo.append(signed)
                    time.sleep(0.1)
                    continue
                except httpx.HTTPError:  # sent, but the answer was lost: written whole or not at all
                    with self._lock:
                        self.stats.statuses["conn"] += 1
                        self.stats.unacked.append(signed)
                    time.sleep(0.1)
                    continue
                elapsed = time.perf_counter() - t0
                with self._lock:
                    if r.status_code in (200, 201):
                        self.stats.receipts[signed.event_id] = r.json()
                        self.stats.statuses[str(r.status_code)] += 1
                        self.stats.latencies.append(elapsed)
                    elif r.status_code == 503 and r.headers.get("content-type", "").startswith(
                            "application/problem+json"):
                        self.stats.statuses[f"503:{r.json().get('code')}"] += 1
                        self.stats.unacked.append(signed)
                    else:
                        self.stats.statuses[str(r.status_code)] += 1
                        self.stats.bad.append(f"{r.status_code} {r.text[:300]}")
                if r.status_code == 503:
                    time.sleep(0.05)


def load_world(path: Path, url: str, *, dispenses: int = 600, commissions: int = 3000) -> tuple[World,
                                                                                            list[SignedEvent]]:
    """A registered world, a batch delivered to two pharmacies, and pre-signed independent events:
    dispenses of held packs and commissions of new batches, interleaved."""
    world = make_world(path, url, clock=now_clock())
    serials = world.commission("LOAD", dispenses, gtin=GTIN_B)
    half = dispenses // 2
    world.deliver("maphar", "ph-rabat", "LOAD", serials[:half], gtin=GTIN_B)
    world.deliver("maphar", "ph-fes", "LOAD", serials[half:], gtin=GTIN_B)
    disp = [world.as_("ph-rabat" if i < half else "ph-fes").dispense(GTIN_B, s) for i, s in enumerate(serials)]
    expiry = dt.date.today().replace(year=dt.date.today().year + 2)
    comm = [world.as_("maphar" if i % 2 else "sothema").commission(GTIN, f"K{i:06d}", expiry, "Paracetamol 1 g",
                                                                    [f"K{i:06d}A", f"K{i:06d}B"])
            for i in range(commissions)]
    events: list[SignedEvent] = []
    while disp or comm:
        if comm:
            events.append(comm.pop())
        if disp:
            events.append(disp.pop())
    return world, events


def resubmit(base: str, unacked: list[SignedEvent]) -> Counter[str]:
    """Send every unacknowledged event again: each must now be recorded once (201) or be a replay (200)."""
    out: Counter[str] = Counter()
    with httpx.Client(base_url=base, timeout=30) as http:
        for signed in unacked:
            r = http.post("/v1/events", json=signed.to_json())
            out[str(r.status_code) if r.status_code in (200, 201) else f"{r.status_code}:{r.text[:200]}"] += 1
    return out


@dataclass
class Recovery:
    size: int
    checked_receipts: int
    checkpoints: int


def check_recovered(home: Path, url: str, stats: LoadStats) -> Recovery:
    """Every receipt is in the log at its index with its hash; nothing is half-written; the audit passes."""
    ledger, db = open_ledger(home, url)
    try:
        cfg = ledger.config
        size = ledger.size()
        stored = ledger.entries(0, size)
        while len(stored) < size:
            stored.extend(ledger.entries(len(stored), size))
        assert [s.index for s in stored] == list(range(size)), "gaps in the log"
        with ledger.store.read() as u:
            checkpoints = u.checkpoints()
            count = u.conn.exec_driver_sql("SELECT count(*) FROM log_entries").scalar()
        assert count == size, f"log_entries holds {count} rows, the head says {size}"
        assert checkpoints[-1].tree_size == size, "the latest checkpoint does not cover the whole log"
        for event_id, receipt in stats.receipts.items():
            entry = stored[receipt["index"]]
            assert entry.event_id == event_id, (event_id, receipt["index"], entry.event_id)
            assert entry.entry_hash.hex() == receipt["entry_hash"], f"entry {receipt['index']} changed"
            cp = open_checkpoint(receipt["checkpoint"], cfg.verifier_key)
            assert (cp.size, cp.root.hex()) == (receipt["tree_size"], receipt["root_hash"])
            verify_inclusion(entry.entry_hash, receipt["index"], cp.size,
                             [bytes.fromhex(h) for h in receipt["inclusion_proof"]], cp.root)
        # every checkpoint any client saw is a prefix of the final log
        final = open_checkpoint(checkpoints[-1].note, cfg.verifier_key)
        seen = {r["tree_size"]: r["checkpoint"] for r in stats.receipts.values()}
        sizes = sorted(seen)
        for tree_size in sizes[::max(1, len(sizes) // 150)] + sizes[-1:]:
            trusted = open_checkpoint(seen[tree_size], cfg.verifier_key)
            check_update(trusted, checkpoints[-1].note, cfg.verifier_key, ledger.consistency_proof)
            if tree_size < final.size:
                verify_consistency(trusted.size, final.size, trusted.root, final.root,
                                   ledger.consistency_proof(trusted.size, final.size))
        report = verify_store(ledger.store, cfg.trust, cfg.origin)
        assert report.ok, report.failure
        assert report.entries == size
        return Recovery(size, len(stats.receipts), report.checkpoints)
    finally:
        db.dispose()
