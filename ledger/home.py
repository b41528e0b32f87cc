"""The data directory: keys, configuration and the embedded database, and opening a ledger from it.

    <home>/config.json        origin (checkpoint key name) and, optionally, the database URL
    <home>/keys/ledger.key    the ledger's checkpoint signing key (0600)
    <home>/keys/root.key      the regulator root key (0600) when it was generated here; in production the
                              regulator keeps it offline and only keys/root.pub is present
    <home>/keys/*.pub         public keys: all an offline verifier needs
    <home>/ledger.db          the SQLite database (unless a database URL is configured)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ledger.admission import TrustAnchors
from ledger.errors import StorageUnavailable
from ledger.paths import DEFAULT_ORIGIN, ENV_DATABASE_URL
from ledger.service import Ledger, LedgerConfig
from ledger.storage.database import Database, migrate, open_database, schema_is_current, sqlite_url
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


def init_home(path: Path, *, origin: str = DEFAULT_ORIGIN, database_url: str | None = None,
              root_public_key: PublicKey | None = None) -> tuple[Home, bool]:
    """Create the data directory and keys if missing (idempotent); migrate the database. Returns (home, created)."""
    home = Home(path)
    created = not home.config_file.exists()
    if created:
        path.mkdir(parents=True, exist_ok=True)
        home.keys.mkdir(exist_ok=True)
        ledger_key = KeyPair.generate()
        write_private_key(home.keys / "ledger.key", ledger_key, label="ledger checkpoint key")
        write_public_key(home.keys / "ledger.pub", ledger_key.public, label="ledger checkpoint key")
        if root_public_key is None:
            root = KeyPair.generate()
            write_private_key(home.keys / "root.key", root, label="regulator root key")
            root_public_key = root.public
        write_public_key(home.keys / "root.pub", root_public_key, label="regulator root key")
        config = {"origin": origin}
        if database_url:
            config["database_url"] = database_url
        home.config_file.write_text(json.dumps(config, indent=2) + "\n")
    db = open_database(home.database_url(database_url))
    try:
        migrate(db)
        Ledger(SqlStore(db), home.ledger_config()).bind()
    finally:
        db.dispose()
    return home, created


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
