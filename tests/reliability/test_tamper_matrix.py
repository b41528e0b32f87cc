"""The tamper matrix, at the API, bundle and monitor level (DB-level edits one by one are in
tests/contract/test_tamper.py).

The attacker has write access to the database (append-only triggers dropped) but no key. Where it helps the
attacker, the rewrite is *consistent*: leaf bytes, entry hashes, ``prev`` links, Merkle nodes and the log head are
all recomputed, so only signatures and the signed checkpoints remain to betray it. The honest server keeps running
and, on its next append, signs a checkpoint over whatever tree the database now holds. Five mechanisms then look:

* **audit**: ``athar audit verify`` = ``ledger.audit.verify_store`` on the database;
* **bundle**: an offline bundle served by ``POST /v1/bundles`` and checked by ``ledger.bundle.verify_bundle``;
* **pack bundles**: the one-pack bundles served by ``GET /v1/packs/{gtin}/{serial}/bundle`` for the packs the
  attacks touch, checked by ``ledger.pack_bundle.verify_pack_bundle``;
* **monitor**: a monitor that trusted the checkpoint served before the attack checks the new one served by
  ``GET /v1/log/checkpoint`` with a consistency proof from ``GET /v1/log/proof/consistency``
  (``ledger.monitor.check_update``);
* **resumed audit**: ``athar audit verify --state`` with the state a full audit kept before the attack
  (``ledger.audit_state``): it reads only the entries after the kept size, checking the roots against its own.

``EXPECTED`` is the table in docs/reliability.md (checked by ``test_doc_table_is_current``).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from api.settings import Settings
from ledger import audit_state
from ledger.audit import verify_store
from ledger.builder import EventBuilder
from ledger.bundle import verify_bundle
from ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ledger.entry import EVENT_PURPOSE, Entry, SignedEvent, indexed_columns
from ledger.errors import IntegrityError
from ledger.events import parse_event
from ledger.merkle import CompactRange
from ledger.monitor import check_update
from ledger.pack_bundle import verify_pack_bundle
from ledger.request_signing import sign_request
from ledger.storage import tables as t
from signing import KeyPair, b64encode, canonical
from tests.integration.server import running_server
from tests.reliability.harness import now_clock
from tests.support import GTIN, World, make_world

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
SIZE = 16  # entries before the attack: 0-8 registrations, 9 commission, 10-13 two deliveries, 14 dispense, 15 report


@dataclass
class Case:
    what: str
    audit: str
    bundle: str
    monitor: str
    packs: str
    resumed: str


EXPECTED: dict[str, Case] = {c.what: c for c in [
    Case("edit a body (commission's product), rewritten consistently", "entry 9", "entry 9", "fork", "no",
         "checkpoint 17"),
    Case("edit a signature (a shipment re-signed by an attacker)", "entry 12", "entry 12", "fork", "no",
         "checkpoint 17"),
    Case("edit a prev (a shipment linked past its predecessor)", "entry 12",
         "server refuses (500 integrity_error)", "fork", "no", "checkpoint 17"),
    Case("edit a projection (packs: give ph-fes a pack), then ph-fes dispenses it", "entry 16", "entry 16", "no",
         "no", "entry 16"),
    Case("swap an actor's key in the log (ph-rabat's registration) and re-sign its events", "entry 4", "entry 4",
         "fork", "entry 14", "checkpoint 17"),
    Case("swap an actor's key row in the projection (actor_keys), then sign as the actor", "entry 16", "entry 16",
         "no", "entry 14", "entry 16"),
    Case("delete an entry (a dispense), renumber, keep old checkpoints", "entry 14",
         "server refuses (500 integrity_error)", "no (nothing new is signed: appends fail with 503)", "entry 14",
         "rollback"),
    Case("delete an entry (a dispense), renumber, delete old checkpoints", "no", "no", "fork", "entry 14",
         "checkpoint 16"),
    Case("reorder two entries (registrations 1 and 2)", "entry 1", "no", "fork", "no", "checkpoint 17"),
    Case("truncate the last two entries, delete their checkpoints", "no", "no", "rollback/fork", "entry 14",
         "rollback"),
    Case("truncate the last two entries, keep the checkpoints", "yes (log head)",
         "server refuses (500 integrity_error)", "no (nothing new is signed: appends fail with 503)", "entry 14",
         "rollback"),
    Case("replace the latest checkpoint with one signed by another key", "entry 15", "yes (checkpoint)",
         "yes (checkpoint)", "yes (checkpoint)", "checkpoint 16"),
    Case("serve a forked log (two copies of the database, each extended)", "no", "no", "fork", "no", "no"),
]}


# ---- the attacker's tools ----------------------------------------------------------------------------------------


def sql(world: World, statement: str, **params: Any) -> None:
    with world.db.writer.begin() as conn:
        conn.execute(sa.text(statement), params)


def drop_triggers(world: World) -> None:
    with world.db.writer.begin() as conn:
        names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars().all()
        for name in names:
            conn.exec_driver_sql(f"DROP TRIGGER {name}")


def docs(world: World) -> list[dict[str, Any]]:
    return [json.loads(e.leaf) for e in world.ledger.entries(0, world.ledger.size())]


def rewrite(world: World, entries: list[dict[str, Any]], *, relink: bool = True,
            drop_checkpoints_from: int | None = None) -> None:
    """Replace the whole log by ``entries``: renumbered, re-linked (unless told not to), re-hashed, with a
    Merkle tree, head and chain heads to match. Checkpoints cannot be re-signed: keep or delete them."""
    heads: dict[str, tuple[bytes, int, int]] = {}
    tree = CompactRange()
    with world.db.writer.begin() as conn:  # plain SQL on the tables, as an attacker would
        for table in ("log_entries", "merkle_nodes", "chain_heads"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
        if drop_checkpoints_from is not None:
            conn.execute(sa.text("DELETE FROM checkpoints WHERE tree_size >= :s"), {"s": drop_checkpoints_from})
        for i, doc in enumerate(entries):
            doc = dict(doc, index=i)
            if relink:
                head = heads.get(doc["chain"])
                doc["prev"] = head[0].hex() if head else None
            entry = Entry.from_leaf(canonical(doc))
            body = entry.signed.body
            # the indexed columns exactly as the sequencer derives them: the attacker is thorough
            gtin, lot, serial = indexed_columns(body["type"], parse_event(body), entry)
            conn.execute(sa.insert(t.log_entries).values(
                idx=i, entry_hash=entry.hash, event_id=body["id"], event_type=body["type"], actor=body["actor"],
                chain=entry.chain, prev=entry.prev, gtin=gtin, lot=lot, serial=serial, received_at=entry.received,
                leaf=entry.leaf()))
            heads[entry.chain] = (entry.hash, i, (heads[entry.chain][2] if entry.chain in heads else 0) + 1)
            for node, h in tree.append(entry.hash):
                conn.execute(sa.insert(t.merkle_nodes).values(level=node.level, idx=node.index, hash=h))
        for chain, (h, i, n) in heads.items():
            conn.execute(sa.insert(t.chain_heads).values(chain=chain, head_hash=h, head_index=i, length=n))
        conn.execute(sa.update(t.log_head).values(tree_size=tree.size, root_hash=tree.root()))


def resign(doc: dict[str, Any], key: KeyPair) -> None:
    doc["key_id"], doc["signature"] = key.key_id, b64encode(key.sign(EVENT_PURPOSE, doc["event"]))


# ---- the three detectors -------------------------------------------------------------------------------------------


@dataclass
class Scene:
    world: World
    http: httpx.Client
    trusted: str  # the checkpoint a monitor saw before the attack
    serials: list[str]
    kept: Path  # the state a full audit kept before the attack (``audit verify --state``)
    stuck: bool = False  # the server refuses every append

    def post(self, signed: SignedEvent) -> httpx.Response:
        return self.http.post("/v1/events", json=signed.to_json())

    def signed_post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        key = self.world.keys["regulator"]
        return self.http.post(path, json=body, headers=sign_request(key, "regulator", "POST", path, int(time.time())))


def resumed_audit(scene: Scene) -> str:
    cfg = scene.world.ledger.config
    with audit_state.kept(scene.kept, cfg.trust, cfg.origin) as kept:  # never committed: each attack from the same
        report = verify_store(scene.world.ledger.store, cfg.trust, cfg.origin, resume=kept.verifier)
    if report.ok:
        return "no"
    assert report.failure is not None
    reason = report.failure.reason
    if "rolled back" in reason:
        return "rollback"
    if (found := re.match(r"checkpoint at tree size (\d+)", reason)) is not None:
        return f"checkpoint {found[1]}"
    return f"entry {report.failure.index}" if report.failure.index is not None else "yes (log head)"


def audit(world: World) -> str:
    cfg = world.ledger.config
    report = verify_store(world.ledger.store, cfg.trust, cfg.origin)
    if report.ok:
        return "no"
    assert report.failure is not None
    return f"entry {report.failure.index}" if report.failure.index is not None else "yes (log head)"


def bundle(scene: Scene) -> str:
    r = scene.signed_post("/v1/bundles", {"batches": [f"{GTIN}/L1"]})
    return _finding(scene, r, verify_bundle) or "no"


def pack_bundles(scene: Scene) -> str:
    """The one-pack bundles of the dispensed pack (entry 14) and of the two packs some attacks dispense (entry 16):
    the first failure."""
    for serial in (scene.serials[0], scene.serials[1], scene.serials[8]):
        found = _finding(scene, scene.http.get(f"/v1/packs/{GTIN}/{serial}/bundle"), verify_pack_bundle)
        if found:
            return found
    return "no"


def _finding(scene: Scene, r: httpx.Response, verify: Callable[[Any, Any], object]) -> str | None:
    """What a verifier finds in a served bundle, or None when it verifies."""
    if r.status_code >= 500:  # the server cannot even prove the entries against its newest checkpoint
        return f"server refuses ({r.status_code} {r.json().get('code')})"
    assert r.status_code == 200, r.text
    try:
        verify(r.json(), scene.world.ledger.config.trust)
    except IntegrityError as err:
        index = err.details.get("index")
        return f"entry {index}" if index is not None else "yes (checkpoint)"
    return None


def monitor(scene: Scene, base: str | None = None) -> str:
    http = httpx.Client(base_url=base or str(scene.http.base_url), timeout=30)  # a fresh connection
    vkey = http.get("/v1/log/public-key").text.strip()
    note = http.get("/v1/log/checkpoint").text
    trusted = open_checkpoint(scene.trusted, vkey)

    def consistency(first: int, second: int) -> list[bytes]:
        r = http.get("/v1/log/proof/consistency", params={"first": first, "second": second})
        return [bytes.fromhex(h) for h in r.json()["hashes"]] if r.status_code == 200 else []

    try:
        check_update(trusted, note, vkey, consistency)
    except IntegrityError as err:
        if "not signed" in err.message:
            return "yes (checkpoint)"
        return {"log_fork": "fork", "log_rollback": "rollback/fork"}.get(err.code, err.code)
    if open_checkpoint(note, vkey).size == trusted.size:
        return "no (nothing new is signed: appends fail with 503)" if scene.stuck else "no"
    return "no"


def append_honest(scene: Scene) -> int:
    """The server goes on working: an inspector files a report, the server signs a checkpoint over the tree."""
    return scene.post(scene.world.as_("inspector").report(GTIN, "other")).status_code


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    w = make_world(tmp_path / "home", url, clock=now_clock())
    serials = w.commission("L1", 10)  # 9
    w.deliver("maphar", "dist-north", "L1", serials[:6])  # 10, 11
    w.deliver("dist-north", "ph-rabat", "L1", serials[:3])  # 12, 13
    w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, serials[0]))  # 14
    w.ledger.submit(w.as_("inspector").report(GTIN, "suspected_falsified", serial=serials[1]))  # 15
    assert w.ledger.size() == SIZE
    kept = tmp_path / "audit.state"
    with audit_state.kept(kept, w.ledger.config.trust, w.ledger.config.origin) as state:
        report = verify_store(w.ledger.store, w.ledger.config.trust, w.ledger.config.origin, resume=state.verifier)
        state.commit(report)
    settings = Settings(data_dir=tmp_path / "home", database_url=url, overdue_check_seconds=0)
    with running_server(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
        yield Scene(w, http, http.get("/v1/log/checkpoint").text, serials, kept)
    w.db.dispose()


def _edit_body(s: Scene) -> None:
    d = docs(s.world)
    d[9]["event"]["product"] = "Paracetamol 1 g"
    rewrite(s.world, d)


def _edit_signature(s: Scene) -> None:
    d = docs(s.world)
    d[12]["signature"] = b64encode(KeyPair.generate().sign(EVENT_PURPOSE, d[12]["event"]))
    rewrite(s.world, d)


def _edit_prev(s: Scene) -> None:
    d = docs(s.world)
    d[12]["prev"] = s.world.ledger.entries(10, 11)[0].entry_hash.hex()
    # every other link recomputed, this one kept wrong: relink by hand
    heads: dict[str, str] = {}
    for i, doc in enumerate(d):
        if i != 12:
            doc["prev"] = heads.get(doc["chain"])
        heads[doc["chain"]] = Entry.from_leaf(canonical(doc)).hash.hex()
    rewrite(s.world, d, relink=False)


def _edit_projection(s: Scene) -> None:
    sql(s.world, "UPDATE packs SET holder = 'ph-fes', status = 'active' WHERE serial = :s", s=s.serials[8])
    sql(s.world, "INSERT INTO holdings (actor, gtin, lot, quantity) VALUES ('ph-fes', :g, 'L1', 1)", g=GTIN)
    assert s.post(s.world.as_("ph-fes").dispense(GTIN, s.serials[8])).status_code == 201  # entry 16


def _swap_key_in_log(s: Scene) -> None:
    attacker = KeyPair.generate()
    d = docs(s.world)
    assert d[4]["event"]["subject"] == "ph-rabat"
    d[4]["event"]["public_key"] = attacker.public.b64
    for doc in d[5:]:
        if doc["event"]["actor"] == "ph-rabat":
            resign(doc, attacker)
    rewrite(s.world, d)


def _swap_key_in_projection(s: Scene) -> None:
    """Replace ph-rabat's key row (id and public key) with the attacker's: the registry the live path reads now
    names the attacker's key, which hashes to its id, so the forged event is admitted."""
    victim, attacker = s.world.keys["ph-rabat"], KeyPair.generate()
    sql(s.world, "UPDATE actor_keys SET key_id = :a, public_key = :pk WHERE key_id = :k", a=attacker.key_id,
        pk=attacker.public.b64, k=victim.key_id)
    forged = EventBuilder("ph-rabat", attacker).dispense(GTIN, s.serials[1])
    assert s.post(forged).status_code == 201  # entry 16: the live path trusted the projection


def _delete_keep(s: Scene) -> None:
    d = docs(s.world)
    del d[14]
    rewrite(s.world, d)


def _delete_drop(s: Scene) -> None:
    d = docs(s.world)
    del d[14]
    rewrite(s.world, d, drop_checkpoints_from=15)


def _reorder(s: Scene) -> None:
    d = docs(s.world)
    d[1], d[2] = d[2], d[1]
    rewrite(s.world, d)


def _truncate_drop(s: Scene) -> None:
    rewrite(s.world, docs(s.world)[:-2], drop_checkpoints_from=SIZE - 1)


def _truncate_keep(s: Scene) -> None:
    rewrite(s.world, docs(s.world)[:-2])


def _replace_checkpoint(s: Scene) -> None:
    cp = s.world.ledger.checkpoint()
    assert cp is not None
    cfg = s.world.ledger.config
    forged = sign_checkpoint(Checkpoint(cfg.origin, cp.tree_size, cp.root_hash), cfg.origin, KeyPair.generate())
    sql(s.world, "UPDATE checkpoints SET note = :n WHERE tree_size = :t", n=forged, t=cp.tree_size)


ATTACKS: dict[str, tuple[Callable[[Scene], None], str]] = {  # the attack; does the server append after (yes/no/refused)
    "edit a body (commission's product), rewritten consistently": (_edit_body, "yes"),
    "edit a signature (a shipment re-signed by an attacker)": (_edit_signature, "yes"),
    "edit a prev (a shipment linked past its predecessor)": (_edit_prev, "yes"),
    "edit a projection (packs: give ph-fes a pack), then ph-fes dispenses it": (_edit_projection, "yes"),
    "swap an actor's key in the log (ph-rabat's registration) and re-sign its events": (_swap_key_in_log, "yes"),
    "swap an actor's key row in the projection (actor_keys), then sign as the actor": (_swap_key_in_projection, "yes"),
    "delete an entry (a dispense), renumber, keep old checkpoints": (_delete_keep, "refused"),
    "delete an entry (a dispense), renumber, delete old checkpoints": (_delete_drop, "yes"),
    "reorder two entries (registrations 1 and 2)": (_reorder, "yes"),
    "truncate the last two entries, delete their checkpoints": (_truncate_drop, "yes"),
    "truncate the last two entries, keep the checkpoints": (_truncate_keep, "refused"),
    "replace the latest checkpoint with one signed by another key": (_replace_checkpoint, "no"),
}


@pytest.mark.parametrize("what", list(ATTACKS))
def test_tamper_matrix(scene: Scene, what: str) -> None:
    attack, then_append = ATTACKS[what]
    drop_triggers(scene.world)
    attack(scene)
    size = scene.world.ledger.size()
    if then_append == "yes":
        assert append_honest(scene) == 201  # the server signs a checkpoint over the rewritten tree
    elif then_append == "refused":
        # the log is shorter than its newest checkpoint: the next checkpoint row already exists, so every
        # append fails (503, nothing written, never a 500) until someone repairs the database
        assert append_honest(scene) == 503
        assert scene.world.ledger.size() == size
        scene.stuck = True
    seen = Case(what, audit(scene.world), bundle(scene), monitor(scene), pack_bundles(scene), resumed_audit(scene))
    print(f"\n{seen}")
    assert seen == EXPECTED[what]


def test_tamper_matrix_forked_log(scene: Scene, tmp_path: Path) -> None:
    """Split view: the operator serves one history to some clients and another to others. Each copy is
    internally perfect, so only a monitor comparing checkpoints (a witness) can tell."""
    what = "serve a forked log (two copies of the database, each extended)"
    w = scene.world
    fork_dir = tmp_path / "fork"
    shutil.copytree(w.home.path, fork_dir)
    src = sqlite3.connect(str(tmp_path / "ledger.db"), isolation_level=None)
    src.execute(f"VACUUM INTO '{tmp_path / 'fork.db'}'")
    src.close()
    url_b = f"sqlite:///{tmp_path / 'fork.db'}"
    assert append_honest(scene) == 201  # history A: a report
    settings = Settings(data_dir=fork_dir, database_url=url_b, overdue_check_seconds=0)
    with running_server(settings) as base_b, httpx.Client(base_url=base_b, timeout=30) as http_b:
        # history B: the same size, another event (a dispense that A does not have), then one more
        assert http_b.post("/v1/events", json=w.as_("ph-rabat").dispense(GTIN, s := scene.serials[1]).to_json()
                           ).status_code == 201
        seen_b_same = Scene(w, scene.http, http_b.get("/v1/log/checkpoint").text, scene.serials, scene.kept)
        same_size = monitor(seen_b_same)  # a monitor that trusted B's checkpoint now sees A's of the same size
        assert http_b.post("/v1/events", json=w.as_("inspector").report(GTIN, "other", serial=s).to_json()
                           ).status_code == 201
        a_note = scene.http.get("/v1/log/checkpoint").text
        # trusted A, then sees B, larger
        later = monitor(Scene(w, scene.http, a_note, scene.serials, scene.kept), base_b)
        b_ledger_ok = _verifies(fork_dir, url_b)
    seen = Case(what, audit(w), bundle(scene), later, pack_bundles(scene), resumed_audit(scene))
    print(f"\n{seen} (same size: {same_size})")
    assert same_size == "fork" and b_ledger_ok
    assert seen == EXPECTED[what]


def _verifies(home: Path, url: str) -> bool:
    from ledger.home import open_ledger

    ledger, db = open_ledger(home, url)
    try:
        return verify_store(ledger.store, ledger.config.trust, ledger.config.origin).ok
    finally:
        db.dispose()


def render_table() -> str:
    lines = ["| tampering (attacker: database write access, no key) | `athar audit verify` | offline bundle "
             "(`verify_bundle`) | monitor (`check_update`) | one-pack bundles (`verify_pack_bundle`) | resumed audit "
             "(`audit verify --state`) |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {c.what} | {c.audit} | {c.bundle} | {c.monitor} | {c.packs} | {c.resumed} |"
              for c in EXPECTED.values()]
    return "\n".join(lines)


def test_doc_table_is_current() -> None:
    assert render_table() in DOC.read_text(), "regenerate the table: python -m tests.reliability.test_tamper_matrix"


if __name__ == "__main__":
    print(render_table())
