"""GET /v1/packs/{gtin}/{serial}/bundle over real HTTP: public, verified with the pinned keys, problems for bad
input, and listed in the OpenAPI contract."""

from __future__ import annotations

import json

from api.schemas import PackBundleOut
from ledger.pack_bundle import FORMAT, verify_pack_bundle
from tests.integration.api.conftest import Live
from tests.support import GTIN


def test_a_dispensed_pack_over_http(live: Live) -> None:
    w = live.world
    serials = w.commission("HTTP1", 4)
    w.deliver("maphar", "ph-rabat", "HTTP1", serials[:2])
    w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, serials[0]))
    r = live.http.get(f"/v1/packs/{GTIN}/{serials[0]}/bundle")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    doc = r.json()
    assert doc["format"] == FORMAT and len(r.content) < 4096
    bundle = verify_pack_bundle(doc, w.ledger.config.trust)
    assert PackBundleOut.model_validate(doc).model_dump(mode="json") == doc  # the documented schema is exact
    assert [s.type for s in bundle.steps] == ["commission", "ship", "dispense"]
    assert bundle.anchor is not None and bundle.anchor.signed.body["serial"] == serials[0]
    scan = live.http.get(f"/v1/packs/{GTIN}/{serials[0]}").json()
    assert bundle.verdict().verdict.value == scan["verdict"] == "ALREADY_DISPENSED"
    assert [s["index"] for s in scan["provenance"]] == [s.index for s in bundle.steps]


def test_problems(live: Live) -> None:
    r = live.http.get(f"/v1/packs/{GTIN}/NOPE/bundle")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert "was ever registered" in r.json()["detail"]
    r = live.http.get("/v1/packs/06111234567890/X1/bundle")  # a wrong check digit
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert "check digit" in json.dumps(r.json())


def test_in_the_openapi_contract(live: Live) -> None:
    spec = live.http.get("/openapi.json").json()
    op = spec["paths"]["/v1/packs/{gtin}/{serial}/bundle"]["get"]
    assert {"200", "404", "422"} <= set(op["responses"])
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/PackBundleOut"}
