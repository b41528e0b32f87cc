"""`athar init`, `athar audit verify` and `athar audit rebuild` as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tests.support import make_world


def athar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner_cli.main", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_byte_changed_in_the_database_is_found_and_named(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    world = make_world(home, db_url)
    serials = world.commission("LOT-T", 4)
    world.deliver("maphar", "dist-north", "LOT-T", serials)
    world.db.dispose()
    ok = athar("audit", "verify", "--data-dir", str(home), "--db", db_url, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    victim = 10  # the commission entry's neighbourhood: any entry will do
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text("DROP TRIGGER log_entries_no_update"))
        else:
            conn.execute(sa.text("ALTER TABLE log_entries DISABLE TRIGGER USER"))
        leaf = conn.execute(sa.text("SELECT leaf FROM log_entries WHERE idx = :i"), {"i": victim}).scalar_one()
        tampered = bytes(leaf).replace(b'"v":1}', b'"v":2}')
        assert tampered != bytes(leaf)
        conn.execute(sa.text("UPDATE log_entries SET leaf = :l WHERE idx = :i"), {"l": tampered, "i": victim})
    engine.dispose()

    bad = athar("audit", "verify", "--data-dir", str(home), "--db", db_url)
    assert bad.returncode == 20
    assert f"TAMPERED at entry {victim}" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1  # one readable line
    rebuild = athar("audit", "rebuild", "--data-dir", str(home), "--db", db_url)
    assert rebuild.returncode == 20 and "cannot be rebuilt" in rebuild.stderr


def test_commands_fail_with_one_readable_line(tmp_path: Path) -> None:
    missing = athar("audit", "verify", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "athar init" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad_db = athar("init", "--data-dir", str(tmp_path / "x"), "--db", "postgresql+psycopg://nobody@127.0.0.1:1/x")
    assert bad_db.returncode == 5 and "Traceback" not in bad_db.stderr
