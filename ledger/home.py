"""The data directory: keys, configuration and the embedded database, and opening a ledger from it.

    <home>/config.json        origin (checkpoint key name) and, optionally, the database URL
    <home>/keys/ledger.key    the ledger's checkpoint signing key (0600)
    <home>/keys/root.key      the regulator root key (0600) when it was generated here; in production the
                              regulator keeps it offline and only keys/root.pub is present
    <home>/keys/*.pub         public keys: all an offline verifier needs
    <home>/ledger.db          the SQLite database (unless a database URL is configured)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from ledger.admission import TrustAnchors
from ledger.errors import ConflictError, IntegrityError, StorageUnavailable
from ledger.paths import DEFAULT_ORIGIN, ENV_DATABASE_URL
from ledger.service import Ledger, LedgerConfig
from ledger.storage.database import Database, migrate, open_database, redact, schema_is_current, sqlite_url
from ledger.storage.sql import SqlStore
from signing import KeyPair, PublicKey, SigningError
from signing.keys import read_private_key, read_public_key, write_private_key, write_public_key


class HomeError(StorageUnavailable):
    code = "data_directory"
    title = "The data directory is missing or incomplete"


@dataclass(frozen=True)
class Home:
    path: Path

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    def config(self) -> dict[str, str]:
        try:
            data = json.loads(self.config_file.read_text())
        except FileNotFoundError as exc:
            raise HomeError(f"{self.path} is not an athar data directory (no config.json); run 'athar init'") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise HomeError(f"cannot read {self.config_file}: {exc}") from exc
        return {str(k): str(v) for k, v in data.items()}

    def database_url(self, override: str | None = None) -> str:
        return (override or os.environ.get(ENV_DATABASE_URL) or self.config().get("database_url")
                or sqlite_url(self.path / "ledger.db"))

    def trust(self) -> TrustAnchors:
        try:
            return TrustAnchors(read_public_key(self.keys / "root.pub"), read_public_key(self.keys / "ledger.pub"))
        except SigningError as exc:
            raise HomeError(f"{exc}; run 'athar init'") from exc

    def ledger_key(self) -> KeyPair:
        try:
            return read_private_key(self.keys / "ledger.key")
        except SigningError as exc:
            raise HomeError(f"{exc}; run 'athar init'") from exc

    def root_key(self) -> KeyPair:
        try:
            return read_private_key(self.keys / "root.key")
        except SigningError as exc:
            raise HomeError(f"the regulator root private key is not in this data directory: {exc}") from exc

    def witnesses(self) -> dict[str, PublicKey]:
        """Witness public keys, one file per witness: keys/witnesses/<name>.pub."""
        folder = self.keys / "witnesses"
        return {p.stem: read_public_key(p) for p in sorted(folder.glob("*.pub"))} if folder.is_dir() else {}

    def ledger_config(self) -> LedgerConfig:
        return LedgerConfig(self.config().get("origin", DEFAULT_ORIGIN), self.ledger_key(), self.trust(),
                            self.witnesses())


class HomeMismatch(ConflictError):
    code = "data_directory_mismatch"
    title = "The data directory already holds a ledger with other settings"


def init_home(path: Path, *, origin: str | None = None, database_url: str | None = None,
              root_public_key: PublicKey | None = None) -> tuple[Home, bool]:
    """Create the data directory and keys if missing (idempotent); migrate the database. Returns (home, created).

    A new directory's config.json is written last, once the database is migrated and bound to the new keys:
    config.json is what makes a directory a ledger, so a failure leaves none behind (what this call created is
    removed). On an existing directory, options that differ from what it holds are refused, never ignored."""
    home = Home(path)
    if home.config_file.exists():
        return _reinit(home, origin, database_url, root_public_key), False
    created: list[Path] = []  # files and directories this call made, removed again if it fails
    bound = False
    try:
        _make_dirs(path, created)
        ledger_key = KeyPair.generate()
        root = None if root_public_key is not None else KeyPair.generate()
        root_public = root.public if root is not None else root_public_key
        assert root_public is not None
        _write_new(created, home.keys / "ledger.key", lambda p: write_private_key(p, ledger_key,
                                                                                 label="ledger checkpoint key"))
        _write_new(created, home.keys / "ledger.pub", lambda p: write_public_key(p, ledger_key.public,
                                                                                label="ledger checkpoint key"))
        if root is not None:
            _write_new(created, home.keys / "root.key", lambda p: write_private_key(p, root,
                                                                                   label="regulator root key"))
        _write_new(created, home.keys / "root.pub", lambda p: write_public_key(p, root_public,
                                                                              label="regulator root key"))
        config = {"origin": origin or DEFAULT_ORIGIN}
        if database_url:
            config["database_url"] = database_url
        url = database_url or os.environ.get(ENV_DATABASE_URL) or sqlite_url(path / "ledger.db")
        _migrate_and_bind(url, LedgerConfig(
            config["origin"], ledger_key, TrustAnchors(root_public, ledger_key.public)), created)
        bound = True
        _write_new(created, home.config_file, lambda p: _write_private_text(p, json.dumps(config, indent=2) + "\n"))
    except BaseException:
        # Once the database is bound to the new keys they must stay: they are the only ones it will accept.
        if not bound:
            _remove(created)
        raise
    return home, True


def _reinit(home: Home, origin: str | None, database_url: str | None, root_public_key: PublicKey | None) -> Home:
    config = home.config()
    stored_origin = config.get("origin", DEFAULT_ORIGIN)
    if origin is not None and origin != stored_origin:
        raise HomeMismatch(f"{home.path} already holds the ledger of origin {stored_origin!r}, not {origin!r}: "
                           "a ledger's origin is in its signed checkpoints and cannot change; use a new "
                           "--data-dir for another ledger")
    stored_url = config.get("database_url") or sqlite_url(home.path / "ledger.db")
    if database_url is not None and database_url != stored_url:
        raise HomeMismatch(f"{home.path} already uses the database {redact(stored_url)}, not "
                           f"{redact(database_url)}: to move the ledger deliberately, change database_url in "
                           f"{home.config_file} (or remove it, for {home.path / 'ledger.db'}) and run "
                           "'athar init' again")
    if root_public_key is not None and root_public_key != home.trust().root:
        raise HomeMismatch(f"{home.path} already trusts the root key {home.trust().root.key_id}, not "
                           f"{root_public_key.key_id}: a ledger's root key cannot change; use a new --data-dir")
    # config.json may hold a database password: directories made before it was written 0600 are tightened
    if home.config_file.stat().st_mode & 0o077:
        home.config_file.chmod(0o600)
    _migrate_and_bind(home.database_url(database_url), home.ledger_config(), [])
    return home


def _migrate_and_bind(url: str, config: LedgerConfig, created: list[Path]) -> None:
    new_file = _create_sqlite_file(url)
    if new_file is not None:
        created.append(new_file)
    try:
        db = open_database(url)
        try:
            migrate(db)
            Ledger(SqlStore(db), config).bind()
        finally:
            db.dispose()
    except BaseException:
        if new_file is not None:  # a database file made here for a ledger that did not come to be
            _remove([new_file, *(new_file.with_name(new_file.name + s) for s in ("-wal", "-shm", "-journal"))])
            created.remove(new_file)
        raise


def _create_sqlite_file(url: str) -> Path | None:
    """Create a missing SQLite database file 0600 (SQLite would make it, and its -wal and -shm files, which
    take the database's mode, with the umask's, often world-readable). Returns it if made here."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None  # open_database says why
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:" or name.startswith("file:"):
        return None
    target = Path(name)
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return None  # exists already, or cannot be made: SQLite will open it or say why
    return target


def _make_dirs(path: Path, created: list[Path]) -> None:
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    try:
        for p in missing:
            p.mkdir()
            created.append(p)
        # the directory holds private keys and, in config.json, perhaps a database password
        if path in missing or not any(path.iterdir()):
            path.chmod(0o700)
        keys = path / "keys"
        if not keys.exists():
            keys.mkdir(mode=0o700)
            created.append(keys)
    except OSError as exc:
        raise HomeError(f"cannot create the data directory {path}: {exc.strerror}") from exc


def _write_new(created: list[Path], path: Path, write: Callable[[Path], None]) -> None:
    if path.exists():
        # never overwritten: keys left by an earlier attempt may be the ones a database is bound to
        raise HomeError(f"{path} already exists, but its data directory has no config.json (an earlier 'athar "
                        "init' stopped half way?): move the directory away and run 'athar init' again")
    write(path)
    created.append(path)


def _write_private_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _remove(paths: list[Path]) -> None:
    for p in reversed(paths):
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()  # only if empty: anything else put there is not ours to delete
            else:
                p.unlink()


def open_ledger(path: Path, database_url: str | None = None, *, pool_size: int = 10) -> tuple[Ledger, Database]:
    home = Home(path)
    config = home.ledger_config()
    db = open_database(home.database_url(database_url), pool_size=pool_size)
    try:
        current = schema_is_current(db)
    except Exception as exc:
        db.dispose()
        raise StorageUnavailable(f"cannot open the ledger database: {exc}") from exc
    if not current:
        db.dispose()
        raise HomeError("the database schema is missing or out of date; run 'athar init' to migrate it")
    ledger = Ledger(SqlStore(db), config)
    try:
        ledger.bind()
    except BaseException:
        db.dispose()
        raise
    return ledger, db


def open_store(path: Path, trust: TrustAnchors, database_url: str | None = None, *,
               read_only: bool = True) -> tuple[SqlStore, Database, str]:
    """The store of a ledger to verify or rebuild with only its public keys (``trust``) and the origin in
    config.json, never its private key; read-only unless told (a copy may be on read-only storage and must not
    change). Returns (store, database, origin)."""
    home = Home(path)
    origin = home.config().get("origin", DEFAULT_ORIGIN)
    db = open_database(home.database_url(database_url), read_only=read_only)
    try:
        try:
            current = schema_is_current(db)
        except Exception as exc:
            raise StorageUnavailable(f"cannot open the ledger database: {exc}") from exc
        if not current:
            raise HomeError("the database schema is missing or out of date; run 'athar init' to migrate it")
        store = SqlStore(db)
        with store.read() as u:
            have = u.meta()
        want = {"ledger_key_id": trust.ledger.key_id, "root_key_id": trust.root.key_id}
        diff = [k for k in want if have.get(k) != want[k]]
        if diff:
            raise IntegrityError(f"this database belongs to another ledger than the pinned keys ({', '.join(diff)} "
                                 f"differ): it was created with ledger key {have.get('ledger_key_id')} and root "
                                 f"key {have.get('root_key_id')}")
    except BaseException:
        db.dispose()
        raise
    return store, db, origin
