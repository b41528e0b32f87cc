"""The regulator's dashboard, rendered by a real browser (headless Chromium) against a real server."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger import errors as E
from ledger.request_signing import make_session_token
from tests.integration.api.conftest import Live
from tests.support import GTIN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_dom(url: str, profile: Path) -> str:
    if CHROMIUM is None:
        msg = "headless Chromium is not installed (Debian package 'chromium'; `make test` installs it)"
        if os.environ.get("ATHAR_REQUIRE_POSTGRES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def sqlite_only(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("one browser run is enough; the data layer is covered on PostgreSQL elsewhere")


def test_dashboard_renders_in_a_real_browser(sqlite_only: None, live: Live, tmp_path: Path) -> None:
    w = live.world
    serials = w.commission("LOT-DB", 6)
    w.deliver("maphar", "dist-north", "LOT-DB", serials)
    w.deliver("dist-north", "ph-rabat", "LOT-DB", serials[:3])
    w.deliver("dist-north", "ph-fes", "LOT-DB", serials[3:])
    w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, serials[0]))
    with pytest.raises(E.DuplicateDispense):
        w.ledger.submit(w.as_("ph-fes").dispense(GTIN, serials[0]))
    w.ledger.submit(w.as_("maphar").recall(GTIN, "LOT-DB", "sterility failure"))
    w.ledger.submit(w.as_("ph-rabat").report(GTIN, "damaged_pack", serial=serials[1]))

    token = make_session_token(w.keys["regulator"], "regulator", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))
    dom = _browser_dom(f"{live.base}/dashboard?token={token}", tmp_path / "chromium")
    assert 'id="open-alerts">2<' in dom
    assert "duplicate_dispense" in dom and "ph-fes" in dom
    assert "reported by ph-rabat" in dom  # who filed a report is not shown as a suspect
    assert "LOT-DB" in dom and "sterility failure" in dom  # the recall with its progress
    assert "Rabat-Salé-Kénitra" in dom  # dispensing volumes per region

    pharmacy = make_session_token(w.keys["ph-rabat"], "ph-rabat", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))
    assert live.http.get("/dashboard", params={"token": pharmacy}).status_code == 403
    expired = make_session_token(w.keys["regulator"], "regulator", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    assert live.http.get("/dashboard", params={"token": expired}).status_code == 401


def test_digital_link_page_in_a_real_browser(sqlite_only: None, live: Live, tmp_path: Path) -> None:
    serials = live.world.commission("LOT-DL", 1, expiry=dt.date(2028, 2, 29))
    dom = _browser_dom(f"{live.base}/01/{GTIN}/10/LOT-DL/21/{serials[0]}?17=280229", tmp_path / "chromium")
    assert 'id="verdict">AUTHENTIC<' in dom and "هذا الدواء أصلي" in dom
