"""`athar init` as an operator runs it: failures leave nothing behind, re-runs never silently ignore options,
secrets are not world-readable, and a SQL error during migration is one line."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

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


def test_a_failed_init_leaves_no_data_directory_and_a_corrected_run_keeps_the_corrected_url(tmp_path: Path) -> None:
    home = tmp_path / "typo"
    failed = athar("init", "--data-dir", str(home), "--db", "postgresql+psycopg://postgres@127.0.0.1:1/test")
    assert failed.returncode == 5 and one_line(failed).startswith("error: cannot migrate")
    assert not home.exists()

    fixed_url = f"sqlite:///{tmp_path / 'fixed.db'}"
    fixed = athar("init", "--data-dir", str(home), "--db", fixed_url)
    assert fixed.returncode == 0, fixed.stderr
    assert "created" in fixed.stdout
    assert json.loads((home / "config.json").read_text())["database_url"] == fixed_url
    verify = athar("audit", "verify", "--data-dir", str(home))
    assert verify.returncode == 0, verify.stderr


def test_a_database_of_another_ledger_leaves_no_new_data_directory(tmp_path: Path) -> None:
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    assert athar("init", "--data-dir", str(tmp_path / "first"), "--db", shared).returncode == 0
    other = athar("init", "--data-dir", str(tmp_path / "second"), "--db", shared)
    assert other.returncode == 20 and "belongs to another ledger" in one_line(other)
    assert not (tmp_path / "second").exists()
    assert athar("audit", "verify", "--data-dir", str(tmp_path / "first")).returncode == 0


def test_a_rerun_refuses_a_different_origin_or_database_instead_of_ignoring_it(tmp_path: Path) -> None:
    home = tmp_path / "d1"
    assert athar("init", "--data-dir", str(home)).returncode == 0
    config = (home / "config.json").read_text()

    origin = athar("init", "--data-dir", str(home), "--origin", "sante.gov.ma/athar")
    assert origin.returncode == 2
    assert "origin" in one_line(origin) and "cannot change" in origin.stderr
    database = athar("init", "--data-dir", str(home), "--db", f"sqlite:///{tmp_path / 'other.db'}")
    assert database.returncode == 2
    assert "database_url" in one_line(database)  # how to move it deliberately
    assert (home / "config.json").read_text() == config
    assert not (tmp_path / "other.db").exists()

    same = athar("init", "--data-dir", str(home), "--db", f"sqlite:///{home / 'ledger.db'}")
    assert same.returncode == 0 and "already initialised" in same.stdout, same.stderr


def test_keys_left_without_a_config_are_never_overwritten(tmp_path: Path) -> None:
    home = tmp_path / "half"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "ledger.key").write_text("precious")
    result = athar("init", "--data-dir", str(home))
    assert result.returncode == 5 and "ledger.key already exists" in one_line(result)
    assert (home / "keys" / "ledger.key").read_text() == "precious"
    assert sorted(p.name for p in home.rglob("*")) == ["keys", "ledger.key"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_not_readable_by_other_users(tmp_path: Path, postgres_url: str) -> None:
    with_password = postgres_url.replace("postgresql+psycopg://postgres@", "postgresql+psycopg://postgres:S3cretPw@")
    assert with_password != postgres_url
    home = tmp_path / "pw1"
    result = athar("init", "--data-dir", str(home), "--db", with_password)
    assert result.returncode == 0, result.stderr
    assert "S3cretPw" in (home / "config.json").read_text()
    assert mode(home / "config.json") == 0o600
    assert mode(home) == 0o700 and mode(home / "keys") == 0o700

    embedded = tmp_path / "embedded"
    assert athar("init", "--data-dir", str(embedded)).returncode == 0
    assert mode(embedded) == 0o700 and mode(embedded / "config.json") == 0o600
    for db_file in embedded.glob("ledger.db*"):
        assert mode(db_file) == 0o600, db_file
