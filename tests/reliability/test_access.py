"""Access control through real HTTP: every role x every action, then keys (revoked, rotated), signatures made for
one purpose replayed as another, replays, signer mismatch, non-canonical JSON and malleated signatures."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.settings import Settings
from ledger.builder import EventBuilder
from ledger.bundle import verify_bundle
from ledger.entry import EVENT_PURPOSE, SignedEvent
from ledger.errors import IntegrityError
from ledger.request_signing import READ_PURPOSE, sign_request, signed_value
from signing import KeyPair, b64encode
from tests.integration.server import running_server
from tests.reliability.harness import now_clock
from tests.support import GTIN, GTIN_B, World, make_world

EXPIRY = dt.date.today() + dt.timedelta(days=700)

ROLES = {"manufacturer": "maphar", "distributor": "dist-north", "pharmacy": "ph-rabat", "hospital": "chu-oujda",
         "regulator": "regulator", "inspector": "inspector", "public": "anon-citizen"}
ACTIONS = ("commission", "ship", "receive", "dispense", "recall", "quarantine", "register actor",
           "history (own batch)", "history (other batch)", "risk", "alerts", "raw entries")

#: the allowed cells, from DESIGN.md ("Custody rules", "Trust and access") and ledger/custody.py, ledger/queries.py.
#: receive: custody moves to the named recipient; only distributors, pharmacies and hospitals can be sent a
#: shipment, and a manufacturer receives returned stock. History (own batch): a batch the actor made or handled.
ALLOWED: dict[str, set[str]] = {
    "manufacturer": {"commission", "ship", "receive", "recall", "history (own batch)"},
    "distributor": {"ship", "receive", "history (own batch)"},
    "pharmacy": {"receive", "dispense", "history (own batch)"},
    "hospital": {"receive", "dispense", "history (own batch)"},
    "regulator": {"recall", "quarantine", "history (own batch)", "history (other batch)", "risk", "alerts",
                  "raw entries"},
    "inspector": {"history (own batch)", "history (other batch)", "risk", "alerts", "raw entries"},
    "public": set(),
}


@dataclass
class Site:
    world: World
    http: httpx.Client

    def post(self, signed: SignedEvent) -> httpx.Response:
        return self.http.post("/v1/events", json=signed.to_json())

    def get(self, actor: str, path: str, key: KeyPair | None = None) -> httpx.Response:
        key = key or self.world.keys.get(actor)
        if key is None:
            return self.http.get(path)
        return self.http.get(path, headers=sign_request(key, actor, "GET", path, int(time.time())))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    world = make_world(tmp_path / "home", url, clock=now_clock())
    settings = Settings(data_dir=tmp_path / "home", database_url=url, overdue_check_seconds=0)
    with running_server(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
        yield Site(world, http)
    world.db.dispose()


def _code(r: httpx.Response) -> str:
    if r.status_code < 300:
        return str(r.status_code)
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return f"{r.status_code} {r.json()['code']}"


def test_role_action_matrix(site: Site) -> None:
    w = site.world
    anon = KeyPair.generate()
    w.keys["anon-citizen"] = anon  # signs, but was never registered: the public
    serials = w.commission("ACL", 40)
    w.commission("OTHER", 2, actor="sothema")
    w.commission("RM", 1)
    w.commission("RR", 1)
    w.commission("Q", 1)
    w.deliver("maphar", "dist-north", "ACL", serials[:20])
    w.deliver("dist-north", "ph-rabat", "ACL", serials[:4])
    w.deliver("dist-north", "chu-oujda", "ACL", serials[4:8])
    held = {"maphar": serials[30:], "dist-north": serials[10:20], "ph-rabat": serials[:4], "chu-oujda": serials[4:8],
            "regulator": serials[36:], "inspector": serials[36:], "anon-citizen": serials[36:]}
    # a shipment addressed to each actor that can be sent one; the others try someone else's
    inbound: dict[str, str] = {}
    ret = w.as_("dist-north").return_(GTIN, "ACL", "maphar", "damaged", serials=[serials[19]])
    w.ledger.submit(ret)
    inbound["maphar"] = ret.event_id
    for actor, serial, sender in (("dist-north", serials[29], "maphar"), ("ph-rabat", serials[18], "dist-north"),
                                  ("chu-oujda", serials[17], "dist-north")):
        s = w.as_(sender).ship(GTIN, "ACL", actor, serials=[serial])
        w.ledger.submit(s)
        inbound[actor] = s.event_id
    spare = w.as_("dist-north").ship(GTIN, "ACL", "ph-rabat", serials=[serials[16]])
    w.ledger.submit(spare)

    def attempt(role: str, actor: str, action: str) -> httpx.Response:
        b = EventBuilder(actor, w.keys[actor])
        if action == "commission":
            return site.post(b.commission(GTIN_B, f"C-{role[:4]}", EXPIRY, "X", [f"C{role[:4]}1"]))
        if action == "ship":
            return site.post(b.ship(GTIN, "ACL", "ph-fes", serials=[held[actor][0]]))
        if action == "receive":
            return site.post(b.receive(inbound.get(actor, spare.event_id)))
        if action == "dispense":
            return site.post(b.dispense(GTIN, held[actor][-1]))
        if action == "recall":
            return site.post(b.recall(GTIN, "RR" if role == "regulator" else "RM", "test"))
        if action == "quarantine":
            return site.post(b.quarantine(GTIN, "Q", "test"))
        if action == "register actor":
            return site.post(b.register_actor(f"new-{role[:5]}", "N", "pharmacy", "Oriental",
                                              KeyPair.generate().public.b64))
        if action.startswith("history"):
            lot = "ACL" if action == "history (own batch)" else "OTHER"
            if role in ("regulator", "inspector") and action == "history (own batch)":
                lot = "RR"  # the regulator recalled it; oversight sees everything anyway
            return site.get(actor, f"/v1/batches/{GTIN}/{lot}/history", None if role != "public" else anon)
        path = {"risk": "/v1/audit/risk", "alerts": "/v1/alerts", "raw entries": "/v1/log/entries?start=0&end=5"}
        return site.get(actor, path[action])

    size0 = w.ledger.size()
    observed: dict[str, dict[str, str]] = {}
    for role, actor in ROLES.items():
        for action in ACTIONS:
            observed.setdefault(role, {})[action] = _code(attempt(role, actor, action))
    # the public with no key at all: every protected read is a 401
    for path in (f"/v1/batches/{GTIN}/ACL/history", "/v1/audit/risk", "/v1/alerts", "/v1/log/entries?start=0&end=5"):
        assert site.http.get(path).status_code == 401
    # the root key registers actors and does nothing else
    root = w.root
    assert _code(site.post(root.register_actor("new-root", "N", "pharmacy", "Oriental",
                                               KeyPair.generate().public.b64))) == "201"
    assert _code(site.post(root.dispense(GTIN, serials[39]))).startswith("4")

    lines = [f"{'role':<13}" + "".join(f"| {a:<22}" for a in ACTIONS)]
    for role in ROLES:
        lines.append(f"{role:<13}" + "".join(f"| {observed[role][a]:<22}" for a in ACTIONS))
    print("\n" + "\n".join(lines))
    wrong = [(role, a, observed[role][a]) for role in ROLES for a in ACTIONS
             if (observed[role][a] in ("200", "201")) != (a in ALLOWED[role])]
    assert not wrong, wrong
    # denials are 401 (unknown key) for the public, 403 role or 409 (nothing addressed to you) otherwise
    for role in ROLES:
        for a in ACTIONS:
            code = observed[role][a]
            if a not in ALLOWED[role]:
                assert code.split()[0] == ("401" if role == "public" else "403") or (
                    a == "receive" and code == "409 not_recipient"), (role, a, code)
    writes = sum(1 for r in ROLES for a in ALLOWED[r] if not a.startswith(("history", "risk", "alerts", "raw")))
    assert w.ledger.size() == size0 + writes + 1  # + the root's registration; refusals wrote nothing


def test_revoked_and_rotated_keys(site: Site) -> None:
    w = site.world
    serials = w.commission("KEYS", 4)
    w.deliver("maphar", "ph-fes", "KEYS", serials[:2])
    old = w.keys["ph-fes"]
    pack = f"/v1/packs/{GTIN}/{serials[0]}"
    assert site.get("ph-fes", pack).status_code == 200
    assert site.post(w.root.revoke_key("ph-fes", old.key_id, "laptop stolen")).status_code == 201
    assert _code(site.post(w.as_("ph-fes").dispense(GTIN, serials[0]))) == "403 key_not_active"
    assert _code(site.get("ph-fes", pack)) == "403 key_not_active"
    # rotation: the old key signs nothing after the rotation entry, the new key works for events and reads
    old_dn = w.keys["dist-south"]
    new_dn = KeyPair.generate()
    assert site.post(w.root.rotate_key("dist-south", new_dn.public.b64)).status_code == 201
    assert _code(site.post(EventBuilder("dist-south", old_dn).report(GTIN, "other"))) == "403 key_not_active"
    assert _code(site.get("dist-south", pack, old_dn)) == "403 key_not_active"
    assert _code(site.post(EventBuilder("dist-south", new_dn).report(GTIN, "other"))) == "201"
    assert _code(site.get("dist-south", pack, new_dn)) == "200"
    # an event signed with the old key before the rotation still verifies in the audit (it was valid then)
    from ledger.audit import verify_store

    cfg = w.ledger.config
    assert verify_store(w.ledger.store, cfg.trust, cfg.origin).ok


L = 2**252 + 27742317777372353535851937790883648493  # the order of the Ed25519 base point


def malleate(sig: bytes) -> bytes:
    """R || S+L: the classic Ed25519 malleation; the same signature mathematically, other bytes."""
    s = int.from_bytes(sig[32:], "little") + L
    return sig[:32] + s.to_bytes(32, "little")


def test_signatures_cannot_change_purpose(site: Site) -> None:
    w = site.world
    key = w.keys["maphar"]
    signed = w.as_("maphar").commission(GTIN, "PURP", EXPIRY, "X", ["P1"])
    size = w.ledger.size()
    # a read-auth signature over the event body, presented as the event signature
    as_read = key.sign(READ_PURPOSE, dict(signed.body))
    r = site.http.post("/v1/events", json={**signed.to_json(), "signature": b64encode(as_read)})
    assert _code(r) == "401 signature_invalid"
    # an event signature over a read request, presented as Athar-Signature
    path = "/v1/alerts"
    ts = int(time.time())
    value = signed_value("regulator", w.keys["regulator"].key_id, "GET", path, ts)
    headers = sign_request(w.keys["regulator"], "regulator", "GET", path, ts)
    headers["Athar-Signature"] = b64encode(w.keys["regulator"].sign(EVENT_PURPOSE, value))
    assert _code(site.http.get(path, headers=headers)) == "401 signature_invalid"
    # the ledger key signs both events (alerts) and bundle manifests: neither passes for the other
    ledger_key = w.home.ledger_key()
    w.ledger.submit(w.as_("ph-rabat").report(GTIN, "other"))
    bundle = site.http.post("/v1/bundles", json={"batches": [f"{GTIN}/PURP"]}, headers=sign_request(
        w.keys["regulator"], "regulator", "POST", "/v1/bundles", ts))
    assert bundle.status_code == 404  # the batch is not registered yet
    assert site.post(signed).status_code == 201
    bundle = site.http.post("/v1/bundles", json={"batches": [f"{GTIN}/PURP"]}, headers=sign_request(
        w.keys["regulator"], "regulator", "POST", "/v1/bundles", ts))
    doc = bundle.json()
    verify_bundle(doc, w.ledger.config.trust)
    manifest_as_event = {"event": doc["manifest"], "key_id": ledger_key.key_id,
                         "signature": doc["manifest_signature"]}
    assert site.http.post("/v1/events", json=manifest_as_event).status_code in (401, 422)
    alert = SignedEvent.create({"v": 1, "type": "alert", "id": "alert:purpose-test", "actor": "ledger",
                                "time": "2026-01-01T00:00:00Z", "kind": "x", "message": "m", "suspect": "maphar"},
                               ledger_key)
    forged = {**doc, "manifest": dict(alert.body), "manifest_signature": b64encode(alert.signature)}
    with pytest.raises(IntegrityError, match="manifest is not signed"):
        verify_bundle(forged, w.ledger.config.trust)
    assert w.ledger.size() == size + 2  # the report and the commission


def test_replay_mismatch_and_malleated_signatures(site: Site) -> None:
    w = site.world
    signed = w.as_("maphar").commission(GTIN, "REPL", EXPIRY, "X", ["R1", "R2"])
    first = site.post(signed)
    assert first.status_code == 201
    size = w.ledger.size()
    again = site.post(signed)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert (again.json()["index"], again.json()["entry_hash"]) == (first.json()["index"], first.json()["entry_hash"])
    # the same event, malleated signature: not a replay, not a new entry
    mal = {**signed.to_json(), "signature": b64encode(malleate(signed.signature))}
    assert _code(site.http.post("/v1/events", json=mal)).split()[0] in ("401", "409")
    fresh = w.as_("maphar").commission(GTIN, "MALL", EXPIRY, "X", ["M1"])
    assert _code(site.http.post("/v1/events", json={**fresh.to_json(),
                                                     "signature": b64encode(malleate(fresh.signature))})) == \
        "401 signature_invalid"
    # a malleated read signature
    path = "/v1/alerts"
    headers = sign_request(w.keys["regulator"], "regulator", "GET", path, int(time.time()))
    import base64

    headers["Athar-Signature"] = b64encode(malleate(base64.b64decode(headers["Athar-Signature"])))
    assert _code(site.http.get(path, headers=headers)) == "401 signature_invalid"
    # signed by ph-rabat, naming ph-fes as the actor
    body = dict(w.as_("ph-fes").report(GTIN, "other").body)
    mismatch = SignedEvent(body, w.keys["ph-rabat"].key_id, w.keys["ph-rabat"].sign(EVENT_PURPOSE, body))
    assert _code(site.post(mismatch)) == "401 signer_mismatch"
    assert w.ledger.size() == size


def test_non_canonical_json_is_accepted_only_with_the_same_meaning(site: Site) -> None:
    w = site.world
    signed = w.as_("maphar").commission(GTIN, "CANON", EXPIRY, "Amoxicilline é", ["N1", "N2"])
    doc = signed.to_json()
    # keys reversed, whitespace everywhere, ASCII escapes for every non-ASCII character and for 'A'
    event = dict(reversed(list(doc["event"].items())))
    text = json.dumps({"signature": doc["signature"], "key_id": doc["key_id"], "event": event}, indent=7,
                      ensure_ascii=True).replace('"ACL', '"\\u0041CL')
    text = text.replace('"Amoxicilline', '"\\u0041moxicilline')
    assert "\\u0041" in text and "\\u00e9" in text
    size = w.ledger.size()
    r = site.http.post("/v1/events", content=text.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    stored = w.ledger.entries(r.json()["index"], r.json()["index"] + 1)[0]
    assert json.loads(stored.leaf)["event"] == dict(signed.body)  # stored in canonical form, as signed
    # the same text with a changed meaning: refused, nothing written
    for old, new in (('"N2"', '"N3"'), ('"\\u0041moxicilline', '"\\u0042moxicilline'), ("2,", "3,")):
        changed = text.replace(old, new, 1)
        assert changed != text
        r = site.http.post("/v1/events", content=changed.encode(), headers={"content-type": "application/json"})
        assert r.status_code in (401, 409, 422), r.text
        if r.status_code == 409:
            assert r.json()["code"] == "event_id_conflict"
    # duplicate keys would make the signed bytes ambiguous: refused
    dup = text.replace('"key_id"', '"key_id": "x", "key_id"', 1)
    assert _code(site.http.post("/v1/events", content=dup.encode(),
                                headers={"content-type": "application/json"})) == "422 invalid_event"
    assert w.ledger.size() == size + 1
