"""`athar audit verify` on a copy of a ledger, as an offline verifier gets it: config.json, the two public keys
and the database; never the private keys, perhaps on read-only storage."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger.storage.database import open_database
from tests.integration.cli.test_cli_init import athar, one_line
from tests.support import make_world


def public_copy(home: Path, copy: Path) -> None:
    """config.json, keys/*.pub and, for SQLite, the database as the copy's own ledger.db."""
    (copy / "keys").mkdir(parents=True)
    config = json.loads((home / "config.json").read_text())
    url = config.get("database_url", "")
    if url.startswith("sqlite:///"):
        original = Path(url.removeprefix("sqlite:///"))
        for db_file in original.parent.glob(original.name + "*"):
            shutil.copy(db_file, copy / db_file.name.replace(original.name, "ledger.db"))
        del config["database_url"]
    (copy / "config.json").write_text(json.dumps(config))
    for pub in (home / "keys").glob("*.pub"):
        shutil.copy(pub, copy / "keys" / pub.name)


def test_verify_needs_only_the_public_keys(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    world = make_world(home, db_url)
    world.commission("LOT-C", 3)
    world.db.dispose()
    copy = tmp_path / "aud"
    public_copy(home, copy)
    args = [] if db_url.startswith("sqlite") else ["--db", db_url]
    if db_url.startswith("sqlite"):
        assert (copy / "ledger.db").exists()
    ok = athar("audit", "verify", "--data-dir", str(copy), *args, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    # the public keys may also come from elsewhere than the data directory
    (copy / "keys" / "root.pub").rename(tmp_path / "root.pub")
    (copy / "keys" / "ledger.pub").rename(tmp_path / "ledger.pub")
    pinned = athar("audit", "verify", "--data-dir", str(copy), *args, "--ledger-key", str(tmp_path / "ledger.pub"),
                   "--root-key", str(tmp_path / "root.pub"), "--json")
    assert pinned.returncode == 0, pinned.stderr
    # and keys of another ledger are not taken for these
    other = tmp_path / "other"
    assert athar("init", "--data-dir", str(other)).returncode == 0
    wrong = athar("audit", "verify", "--data-dir", str(copy), *args, "--ledger-key", str(tmp_path / "ledger.pub"),
                  "--root-key", str(other / "keys" / "root.pub"))
    assert wrong.returncode == 20 and "another ledger" in one_line(wrong)


def test_verify_never_writes_to_a_read_only_sqlite_copy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    world = make_world(home, f"sqlite:///{home / 'ledger.db'}")
    world.commission("LOT-R", 2)
    world.db.dispose()
    copy = tmp_path / "aud"
    public_copy(home, copy)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in copy.glob("ledger.db*")}
    for p in copy.rglob("*"):
        p.chmod(0o555 if p.is_dir() else 0o444)
    copy.chmod(0o555)
    try:
        ok = athar("audit", "verify", "--data-dir", str(copy), "--json")
        assert ok.returncode == 0, ok.stderr
        after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in copy.glob("ledger.db*")
                 if p.name in before}
        assert after == before
    finally:
        copy.chmod(0o755)


def test_a_read_only_postgres_database_refuses_writes(postgres_url: str) -> None:
    db = open_database(postgres_url, read_only=True)
    try:
        with pytest.raises(sa.exc.InternalError, match="read-only transaction"), db.writer.begin() as conn:
            conn.execute(sa.text("CREATE TABLE must_not_exist (x int)"))
    finally:
        db.dispose()


def test_rebuild_needs_only_the_public_keys_and_compares_without_writing(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    world = make_world(home, db_url)
    serials = world.commission("LOT-B", 3)
    world.deliver("maphar", "dist-north", "LOT-B", serials)
    with world.db.writer.begin() as conn:  # the attacker edits a projection, not the log
        conn.execute(sa.text("UPDATE holdings SET quantity = quantity + 100 WHERE actor = 'dist-north'"))
    world.db.dispose()
    copy = tmp_path / "aud"
    public_copy(home, copy)
    args = [] if db_url.startswith("sqlite") else ["--db", db_url]
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in copy.glob("ledger.db*")}
    found = athar("audit", "rebuild", "--data-dir", str(copy), *args, "--json")
    assert found.returncode == 20, found.stderr
    report = json.loads(found.stdout)
    assert report["clean"] is False and report["rewritten"] is False and len(report["differences"]["holdings"]) == 1
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in copy.glob("ledger.db*")
            if p.name in before} == before
    fixed = athar("audit", "rebuild", "--data-dir", str(copy), *args, "--write", "--json")
    assert fixed.returncode == 0 and json.loads(fixed.stdout)["rewritten"] is True, fixed.stderr
    clean = athar("audit", "rebuild", "--data-dir", str(copy), *args, "--json")
    assert clean.returncode == 0 and json.loads(clean.stdout)["clean"] is True, clean.stderr
    assert not list(copy.glob("keys/*.key"))


def test_rebuild_write_as_a_read_only_database_user_is_one_line(tmp_path: Path, postgres_url: str) -> None:
    """An auditor's database account may only read: --write is then refused in one line, exit 5, not a traceback."""
    home = tmp_path / "home"
    world = make_world(home, postgres_url)
    world.commission("LOT-P", 2)
    world.db.dispose()
    schema = postgres_url.rsplit("search_path%3D", 1)[1]
    role = f"ro_{schema}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"))
    try:
        reader = sa.engine.make_url(postgres_url).set(username=role, password=None).render_as_string(
            hide_password=False)
        assert athar("audit", "rebuild", "--data-dir", str(home), "--db", reader, "--json").returncode == 0
        refused = athar("audit", "rebuild", "--data-dir", str(home), "--db", reader, "--write")
        assert refused.returncode == 5 and "permission denied" in one_line(refused), refused.stderr
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        engine.dispose()
