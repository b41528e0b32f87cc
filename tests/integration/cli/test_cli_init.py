"""`athar init` as an operator runs it: failures leave nothing behind, re-runs never silently ignore options,
secrets are not world-readable, and a SQL error during migration is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.cli.conftest import REPO


def athar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner_cli.main", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=REPO)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_sql_error_while_migrating_is_one_line_exit_5(tmp_path: Path, postgres_url: str) -> None:
    base = postgres_url.split("?", 1)[0]
    url = f"{base}?options={quote('-csearch_path=nope_schema')}"
    result = athar("init", "--data-dir", str(tmp_path / "d"), "--db", url)
    assert result.returncode == 5
    line = one_line(result)
    assert line.startswith("error: cannot migrate") and "no schema has been selected" in line
