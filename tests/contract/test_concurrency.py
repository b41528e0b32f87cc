"""Several OS processes appending to one ledger at once: PostgreSQL (row lock on the log head) with four
writers, and SQLite (BEGIN IMMEDIATE) with two. The log must stay linear, gap-free and verifiable."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ledger import events as ev
from ledger.audit import verify_store
from ledger.checkpoint import open_checkpoint
from ledger.entry import Entry
from ledger.merkle import verify_consistency
from signing.keys import write_private_key
from tests.support import GTIN, World, make_world

REPO = Path(__file__).resolve().parents[2]

# The child: open the shared data directory's ledger, sign all its events, wait for the start signal, submit.
CHILD = r"""
import datetime as dt, json, os, sys, time
from pathlib import Path
from ledger.builder import EventBuilder
from ledger.errors import LedgerError
from ledger.events import parse_time
from ledger.home import open_ledger
from signing.keys import read_private_key

spec = json.loads(sys.argv[1])
now = parse_time(spec["time"])
clock = lambda: now
ledger, db = open_ledger(Path(spec["home"]), spec["url"], pool_size=2)
ledger.clock = clock
signed = []
for actor, kind, args in spec["tasks"]:
    b = EventBuilder(actor, read_private_key(Path(spec["keys"]) / f"{actor}.key"), clock)
    signed.append(getattr(b, kind)(*args["pos"], **args["kw"]))
Path(spec["ready"]).write_text("ready")
deadline = time.monotonic() + 60
while not os.path.exists(spec["go"]):
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.005)
out = []
group = spec.get("group", 1)
for i in range(0, len(signed), group):
    chunk = signed[i:i + group]
    results = ledger.append(chunk)
    for s, r in zip(chunk, results):
        if isinstance(r, LedgerError):
            out.append({"id": s.event_id, "error": r.code})
        else:
            out.append({"id": s.event_id, "index": r.index, "tree_size": r.tree_size})
db.dispose()
print(json.dumps(out))
"""


def task(actor: str, kind: str, *pos: Any, **kw: Any) -> list[Any]:
    return [actor, kind, {"pos": list(pos), "kw": kw}]


def dispenses(actor: str, serials: list[str]) -> list[list[Any]]:
    return [task(actor, "dispense", GTIN, s) for s in serials]


def shipments(actor: str, to: str, serials: list[str]) -> list[list[Any]]:
    return [task(actor, "ship", GTIN, "L1", to, serials=[s]) for s in serials]


def run_children(world: World, tmp_path: Path, url: str, plans: list[tuple[list[list[Any]], int]]) -> list[Any]:
    keys = tmp_path / "actor-keys"
    for actor, key in world.keys.items():
        write_private_key(keys / f"{actor}.key", key)
    go = tmp_path / "go"
    when = ev.format_time(world.clock.now + dt.timedelta(hours=1))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for n, (tasks, group) in enumerate(plans):
        spec = {"home": str(world.home.path), "url": url, "keys": str(keys), "time": when, "tasks": tasks,
                "group": group, "ready": str(tmp_path / f"ready-{n}"), "go": str(go)}
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{n}").exists() for n in range(len(plans))):
            for p in procs:
                if p.poll() is not None:
                    raise AssertionError(f"child exited early: {p.communicate()}")
            assert time.monotonic() < deadline, "children did not get ready"
            time.sleep(0.01)
        go.write_text("go")
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def check_log(world: World, before: int, results: list[Any], *, accepted: int, alerts: int) -> None:
    ledger = world.ledger
    flat = [r for rs in results for r in rs]
    ok = [r for r in flat if "index" in r]
    assert len(ok) == accepted, Counter(r.get("error") for r in flat)
    size = ledger.size()
    assert size == before + accepted + alerts
    # each accepted event got its own index, inside the new part of the log
    indices = sorted(r["index"] for r in ok)
    assert len(set(indices)) == accepted and indices[0] >= before and indices[-1] < size
    # indices gap-free, every chain unbroken
    stored = ledger.entries(0, size)
    assert [s.index for s in stored] == list(range(size))
    heads: dict[str, bytes] = {}
    for s in stored:
        e = Entry.from_leaf(s.leaf)
        assert e.index == s.index
        assert e.prev == heads.get(e.chain), f"chain {e.chain} broken at entry {e.index}"
        heads[e.chain] = e.hash
    assert sum(1 for s in stored[before:] if s.event_type == "alert") == alerts
    # the whole store verifies
    cfg = ledger.config
    report = verify_store(ledger.store, cfg.trust, cfg.origin)
    assert report.ok, report.failure
    assert report.entries == size
    # checkpoints: strictly growing, each signed, each consistent with the last
    with ledger.store.read() as u:
        checkpoints = u.checkpoints()
    sizes = [c.tree_size for c in checkpoints]
    assert sizes == sorted(set(sizes)) and sizes[-1] == size
    for c in checkpoints:
        opened = open_checkpoint(c.note, cfg.verifier_key)
        assert (opened.size, opened.root) == (c.tree_size, c.root_hash)
    first, last = checkpoints[0], checkpoints[-1]
    verify_consistency(first.tree_size, last.tree_size, first.root_hash, last.root_hash,
                       ledger.consistency_proof(first.tree_size, last.tree_size))
    for a, b in itertools.pairwise([c for c in checkpoints if c.tree_size > before]):
        verify_consistency(a.tree_size, b.tree_size, a.root_hash, b.root_hash,
                           ledger.consistency_proof(a.tree_size, b.tree_size))
    # every receipt a child got names a checkpoint that includes its entry
    assert all(r["index"] < r["tree_size"] <= size for r in ok)


def test_four_processes_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    world = make_world(tmp_path / "home", postgres_url)
    try:
        serials = world.commission("L1", 200)
        world.deliver("maphar", "ph-rabat", "L1", serials[:80])
        world.deliver("maphar", "ph-fes", "L1", serials[80:120])
        before = world.ledger.size()
        contested = serials[70:75]
        plans = [
            # two processes of the same pharmacy; five packs scanned by both: one dispense each, one refusal
            (dispenses("ph-rabat", serials[:35] + contested), 1),
            (dispenses("ph-rabat", serials[35:70] + contested), 1),
            # another pharmacy, group-committed, also trying three of ph-rabat's packs: each attempt is an alert
            # (NotInCustody before ph-rabat dispenses them, DuplicateDispense after)
            (dispenses("ph-fes", serials[80:120] + serials[:3]), 8),
            # the manufacturer ships one pack per shipment on the same batch chain
            (shipments("maphar", "dist-north", serials[120:160]), 1),
        ]
        results = run_children(world, tmp_path, postgres_url, plans)
        errors = Counter(r.get("error") for rs in results for r in rs if "error" in r)
        assert errors["already_dispensed_by_you"] == 5
        assert errors["duplicate_dispense"] + errors["not_in_custody"] == 3
        assert sum(errors.values()) == 8
        check_log(world, before, results, accepted=35 + 35 + 5 + 40 + 40, alerts=3)
        with world.ledger.store.read() as u:
            assert u.holdings_of_batch(GTIN, "L1") == {"maphar": 40, "ph-rabat": 5}
            packs = u.packs(GTIN, tuple(serials))
            assert len(u.alerts()) == 3
        assert all(packs[s].dispensed_by == "ph-rabat" for s in serials[:75])
        assert all(packs[s].dispensed_by == "ph-fes" for s in serials[80:120])
        assert all(packs[s].status == "in_transit" for s in serials[120:160])
    finally:
        world.db.dispose()


def test_two_processes_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    world = make_world(tmp_path / "home", url)
    try:
        serials = world.commission("L1", 100)
        world.deliver("maphar", "ph-rabat", "L1", serials[:40])
        before = world.ledger.size()
        plans = [
            (dispenses("ph-rabat", serials[:30]) + dispenses("ph-rabat", serials[:2]), 1),
            (shipments("maphar", "dist-north", serials[40:70]), 3),
        ]
        results = run_children(world, tmp_path, url, plans)
        errors = Counter(r.get("error") for rs in results for r in rs if "error" in r)
        assert errors == {"already_dispensed_by_you": 2}
        check_log(world, before, results, accepted=60, alerts=0)
        with world.ledger.store.read() as u:
            assert u.holdings_of_batch(GTIN, "L1") == {"maphar": 30, "ph-rabat": 10}
    finally:
        world.db.dispose()


def test_child_script_compiles() -> None:
    """Guard against a syntax error in the child script hiding behind a subprocess failure."""
    compile(CHILD, "<child>", "exec")
