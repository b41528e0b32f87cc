"""Inputs that once caused harm: a submission that sank its whole commit group, and 500s from hostile bodies."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

from ledger.request_signing import b64url, make_session_token, sign_request
from tests.integration.api.conftest import Live
from tests.support import GTIN


def test_one_unencodable_submission_does_not_sink_its_group(live: Live) -> None:
    w = live.world
    recorded = w.as_("maphar").commission(GTIN, "GRP-1", dt.date(2029, 1, 31), "X", ["G1"])
    w.ledger.submit(recorded)
    evil = recorded.to_json()
    evil["event"] = {**evil["event"], "product": "Y", "junk": 10**30}  # same id, cannot be canonicalised
    good = w.as_("maphar").commission(GTIN, "GRP-2", dt.date(2029, 1, 31), "X", ["G2"])
    from ledger.entry import SignedEvent

    forged = SignedEvent(evil["event"], evil["key_id"], base64.b64decode(evil["signature"]))
    results = w.ledger.append([good, forged])
    assert not isinstance(results[0], Exception)  # the good one is recorded
    assert isinstance(results[1], Exception)
    r = live.http.post("/v1/events", content=json.dumps(evil).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_event"


def test_unencodable_bodies_and_tokens_are_4xx(live: Live) -> None:
    w = live.world
    ledger_kid = w.ledger.config.ledger_key.key_id
    body = {"event": {"v": 1, "type": "alert", "id": "x1", "actor": "ledger", "time": "2026-11-22T10:00:00Z",
                      "kind": "k", "message": "m", "suspect": "s", "evidence": {"a": 1e400}},
            "key_id": ledger_kid, "signature": base64.b64encode(b"\0" * 64).decode()}
    raw = json.dumps(body).replace("Infinity", "1e400").encode()
    r = live.http.post("/v1/events", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    claim = b'{"actor":"regulator","expires":NaN,"key_id":"' + w.keys["regulator"].key_id.encode() + b'"}'
    token = b64url(claim) + "." + b64url(b"\0" * 64)
    r = live.http.get("/dashboard", params={"token": token})
    assert r.status_code == 401, r.text


def test_the_dashboard_refuses_as_every_signed_read_does(live: Live) -> None:
    """A revoked key is 403 key_not_active for a session token as for a signed request; no token at all is 401."""
    w = live.world
    path = "/v1/alerts"
    token = make_session_token(w.keys["inspector"], "inspector", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    assert live.http.get("/dashboard", params={"token": token}).status_code == 200
    w.ledger.submit(w.root.revoke_key("inspector", w.keys["inspector"].key_id, "laptop stolen"))
    read = live.http.get(path, headers=sign_request(w.keys["inspector"], "inspector", "GET", path, int(time.time())))
    page = live.http.get("/dashboard", params={"token": token})
    assert (read.status_code, read.json()["code"]) == (page.status_code, page.json()["code"]) == (403, "key_not_active")
    r = live.http.get("/dashboard")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated" and "athar dashboard" in r.json()["detail"]
