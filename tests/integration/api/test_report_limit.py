"""The anonymous-report limit is checked off the event loop: a report waiting for the limiter's file (another
worker holding it) does not hold up the scans the same worker serves, and is then let through."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx

from api.rate_limit import BUSY_TIMEOUT, FILE_NAME
from api.settings import Settings
from tests.integration.server import running_server
from tests.support import GTIN, make_world


def test_a_report_waiting_on_the_limit_does_not_hold_up_scans(tmp_path: Path) -> None:
    w = make_world(tmp_path / "home", f"sqlite:///{tmp_path / 'ledger.db'}")
    serial = w.commission("LIM", 1)[0]
    w.db.dispose()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with running_server(Settings(data_dir=tmp_path / "home", run_dir=run_dir)) as base:
        holder = sqlite3.connect(run_dir / FILE_NAME, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # as another worker's check would, for longer
        answers: list[int] = []
        report = threading.Thread(target=lambda: answers.append(
            httpx.post(base + "/v1/reports", json={"gtin": GTIN, "category": "other"}, timeout=60).status_code))
        try:
            report.start()
            report.join(0.5)
            assert report.is_alive()  # waiting for the file, up to the limiter's busy timeout
            # answered while the report waits: with the check on the event loop, the scan waited for it (2 s)
            scan = httpx.get(f"{base}/v1/packs/{GTIN}/{serial}", timeout=BUSY_TIMEOUT * 0.75)
            assert scan.status_code == 200 and scan.json()["verdict"] == "AUTHENTIC"
            assert not answers
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            report.join(60)
        assert answers == [201]
