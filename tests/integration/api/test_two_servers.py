"""Two `athar serve` processes on one PostgreSQL database, written to concurrently, keep one linear log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ledger.audit import verify_store
from ledger.checkpoint import open_checkpoint
from ledger.entry import SignedEvent
from ledger.merkle import verify_consistency
from tests.integration.server import free_port
from tests.support import GTIN, make_world


def _serve(home: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scanner_cli.main", "serve", "--data-dir", str(home), "--db", url,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ATHAR_OVERDUE_CHECK_SECONDS": "0"})
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/v1/ready", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def test_two_servers_one_log(tmp_path: Path, postgres_url: str) -> None:
    home = tmp_path / "home"
    world = make_world(home, postgres_url)
    lots = [f"TWO{i}" for i in range(4)]
    serials = {lot: world.commission(lot, 40) for lot in lots}
    for lot in lots:
        world.deliver("maphar", "dist-north", lot, serials[lot])
        world.deliver("dist-north", "ph-rabat" if lot in lots[:2] else "ph-fes", lot, serials[lot])
    start_size = world.ledger.size()
    first_note = world.ledger.checkpoint().note  # type: ignore[union-attr]
    events: list[SignedEvent] = []
    for lot in lots:
        pharmacy = "ph-rabat" if lot in lots[:2] else "ph-fes"
        events += [world.as_(pharmacy).dispense(GTIN, s) for s in serials[lot]]

    servers = [_serve(home, postgres_url) for _ in range(2)]
    try:
        def post(i_event: tuple[int, SignedEvent]) -> dict[str, object]:
            i, signed = i_event
            base = servers[i % 2][1]
            r = httpx.post(base + "/v1/events", json=signed.to_json(), timeout=30)
            assert r.status_code == 201, r.text
            return dict(r.json())

        with ThreadPoolExecutor(max_workers=16) as pool:
            receipts = list(pool.map(post, enumerate(events)))
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=20)

    indices = sorted(int(r["index"]) for r in receipts)  # type: ignore[call-overload]
    assert indices == list(range(start_size, start_size + len(events)))  # gap-free, no duplicates
    report = verify_store(world.ledger.store, world.ledger.config.trust, world.ledger.config.origin)
    assert report.ok, report.failure
    with world.ledger.store.read() as u:
        for r in receipts:
            stored = u.entry(int(r["index"]))  # type: ignore[call-overload]
            assert stored is not None and stored.entry_hash.hex() == r["entry_hash"]
    vkey = world.ledger.config.verifier_key
    old = open_checkpoint(first_note, vkey)
    new = open_checkpoint(world.ledger.checkpoint().note, vkey)  # type: ignore[union-attr]
    verify_consistency(old.size, new.size, old.root, new.root, world.ledger.consistency_proof(old.size, new.size))
    world.db.dispose()
