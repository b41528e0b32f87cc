"""Structured logs carry what operators need and never secrets or personal data."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time

import pytest

from api.observability import JsonFormatter
from ledger.request_signing import make_session_token
from tests.integration.api.conftest import Live
from tests.support import GTIN


def test_logs_are_json_lines_without_secrets(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="athar")
    w = live.world
    signed = w.as_("maphar").commission(GTIN, "LOG-1", dt.date(2029, 1, 31), "X", ["SECRETSERIAL1"])
    # an unchecked Athar-Actor header must not pass for the signed event's actor in the log
    assert live.http.post("/v1/events", content=json.dumps(signed.to_json()).encode(),
                          headers={"content-type": "application/json", "Athar-Actor": "ph-rabat"}).status_code == 201
    details = "Khadija B., +212 6 11 22 33 44"
    live.http.post("/v1/reports", json={"gtin": GTIN, "category": "other", "details": details})
    token = make_session_token(w.keys["regulator"], "regulator", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    live.http.get("/dashboard", params={"token": token})
    # a request's line is logged once its response is sent, so the client may read the response first
    deadline = time.monotonic() + 10
    while (not any(getattr(r, "fields", {}).get("path") == "/dashboard" for r in caplog.records)
           and time.monotonic() < deadline):
        time.sleep(0.02)
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("athar")]
    text = "\n".join(lines)
    docs = [json.loads(line) for line in lines]
    assert any(d.get("event_type") == "commission" and d.get("actor") == "maphar" and "index" in d for d in docs)
    # one line per request: the event's fields ride on the request's access-log line
    assert [(d["path"], d["status"], d["actor"]) for d in docs
            if d.get("event_type") == "commission"] == [("/v1/events", 201, "maphar")]
    assert any(d.get("path") == "/dashboard" and d.get("status") == 200 for d in docs)
    for secret in (token, details, "Khadija", signed.to_json()["signature"], "SECRETSERIAL1"):
        assert secret not in text


def test_a_logged_exception_carries_its_traceback() -> None:
    """uvicorn logs a 500's exception with the record's exc_info; the JSON line must keep it for the operator."""
    try:
        raise AssertionError("no EPCIS mapping for 'alert_update'")
    except AssertionError:
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application",
                                   None, sys.exc_info())
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "Exception in ASGI application"
    assert "AssertionError: no EPCIS mapping for 'alert_update'" in doc["exception"]
    assert "Traceback (most recent call last)" in doc["exception"] and "\n" not in json.dumps(doc)
