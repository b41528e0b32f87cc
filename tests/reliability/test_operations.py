"""Operations: readiness follows the database (a TCP proxy in front of PostgreSQL is cut and restored, so the
shared server is never disturbed), a bogus database URL fails fast and readably, and a pg_dump of a ledger's
schema restored into a new schema verifies and ends at the same checkpoint."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import sqlalchemy as sa

from api.settings import Settings
from ledger.audit import verify_store
from ledger.home import open_ledger
from ledger.request_signing import sign_request
from tests.integration.server import free_port, running_server
from tests.reliability.harness import REPO, now_clock
from tests.support import GTIN, make_world


class Proxy:
    """A TCP forwarder that can cut every connection and refuse new ones, then come back on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.up = True
        self._pairs: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for s in pairs:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _through(url: str, port: int) -> str:
    return re.sub(r"@[^/]+/", f"@127.0.0.1:{port}/", url, count=1)


def test_ready_follows_the_database_and_the_server_recovers_by_itself(tmp_path: Path, postgres_url: str) -> None:
    home = tmp_path / "home"
    world = make_world(home, postgres_url, clock=now_clock())
    world.commission("OPS", 5)
    host, port = re.search(r"@([^:/]+):(\d+)/", postgres_url).groups()  # type: ignore[union-attr]
    proxy = Proxy((host, int(port)))
    url = _through(postgres_url, proxy.port)
    settings = Settings(data_dir=home, database_url=url, overdue_check_seconds=0)
    reg = world.keys["regulator"]
    try:
        with running_server(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/v1/ready").json()["status"] == "ready"
            assert http.post("/v1/events", json=world.as_("inspector").report(GTIN, "other").to_json()
                             ).status_code == 201
            proxy.cut()
            ready = http.get("/v1/ready")
            assert ready.status_code == 503 and ready.json()["status"] == "unavailable", ready.text
            size = world.ledger.size()
            for _ in range(3):
                r = http.post("/v1/events", json=world.as_("inspector").report(GTIN, "other").to_json())
                assert r.status_code == 503, r.text
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["code"] == "storage_unavailable" and r.headers["retry-after"]
            path = f"/v1/batches/{GTIN}/OPS/history"
            r = http.get(path, headers=sign_request(reg, "regulator", "GET", path, int(time.time())))
            assert r.status_code == 503 and r.json()["code"] == "storage_unavailable", r.text
            assert http.get(f"/v1/packs/{GTIN}/OPSS00000").status_code == 503
            # anyone may call these: what the driver said, and where the database is, stay in the server's log
            for answer in (http.get(f"/v1/packs/{GTIN}/OPSS00000").text, http.get("/v1/ready").text, r.text):
                assert str(proxy.port) not in answer and "search_path" not in answer and "127.0.0.1" not in answer
                assert "postgres" not in answer.lower(), answer
            assert world.ledger.size() == size  # nothing was written
            proxy.restore()
            deadline = time.monotonic() + 20
            while http.get("/v1/ready").status_code != 200:
                assert time.monotonic() < deadline, "the server did not recover by itself"
                time.sleep(0.1)
            assert http.post("/v1/events", json=world.as_("inspector").report(GTIN, "other").to_json()
                             ).status_code == 201
    finally:
        proxy.close()
    cfg = world.ledger.config
    assert verify_store(world.ledger.store, cfg.trust, cfg.origin).ok
    world.db.dispose()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres@127.0.0.1:1/nope",
    "not a url",
    "mysql://x@y/z",
], ids=["unreachable-postgres", "not-a-url", "driver-not-installed"])
def test_bogus_database_url_fails_fast_and_readably(tmp_path: Path, url: str) -> None:
    home = tmp_path / "home"
    make_world(home, f"sqlite:///{tmp_path / 'l.db'}").db.dispose()
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "scanner_cli.main", "serve", "--data-dir", str(home), "--db", url,
                        "--port", str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode not in (0, 1), (url, r.returncode, r.stderr)  # 1 is Python's own exit on a traceback
    assert "Traceback" not in r.stderr and r.stderr.strip(), (url, r.stderr)
    assert time.monotonic() - started < 30


def test_sqlite_file_removed_under_a_running_server(tmp_path: Path) -> None:
    """The database file is deleted (an operator's mistake): readiness must not lie about a fresh empty file."""
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    world = make_world(tmp_path / "home", url, clock=now_clock())
    world.db.dispose()
    settings = Settings(data_dir=tmp_path / "home", database_url=url, overdue_check_seconds=0)
    with running_server(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/v1/ready").status_code == 200
        for p in tmp_path.glob("ledger.db*"):
            p.unlink()
        r = http.get("/v1/ready")
        # pooled connections still hold the unlinked file, so the server keeps answering from it (200), or
        # a new connection finds no schema (503): never a 500, and never a silently re-created empty ledger
        assert r.status_code in (200, 503), r.text
        w = http.post("/v1/events", json=world.as_("inspector").report(GTIN, "other").to_json())
        assert w.status_code in (201, 503), w.text


def _schema(url: str) -> str:
    m = re.search(r"search_path=([a-z0-9_]+)", unquote(url))
    assert m
    return m.group(1)


def test_pg_dump_restore_verifies_with_the_same_checkpoint(tmp_path: Path, postgres_url: str) -> None:
    world = make_world(tmp_path / "home", postgres_url, clock=now_clock())
    serials = world.commission("BKP", 20)
    world.deliver("maphar", "dist-north", "BKP", serials[:10])
    world.deliver("dist-north", "ph-rabat", "BKP", serials[:4])
    world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    original = world.ledger.checkpoint()
    assert original is not None
    old = _schema(postgres_url)
    new = "r_" + uuid.uuid4().hex[:12]
    dsn = re.sub(r"^postgresql\+psycopg://", "postgresql://", postgres_url.split("?")[0])
    dump = subprocess.run(["pg_dump", "--no-owner", "--no-privileges", "-n", old, dsn], capture_output=True,
                          text=True, timeout=120, check=True).stdout
    restored_sql = re.sub(rf"\b{old}\b", new, dump)
    assert old not in restored_sql
    engine = sa.create_engine(postgres_url.split("?")[0])
    try:
        subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-q", dsn], input=restored_sql, capture_output=True,
                       text=True, timeout=120, check=True)
        url = postgres_url.replace(old, new)
        ledger, db = open_ledger(tmp_path / "home", url)
        try:
            cfg = ledger.config
            report = verify_store(ledger.store, cfg.trust, cfg.origin)
            assert report.ok, report.failure
            restored = ledger.checkpoint()
            assert restored is not None
            assert (restored.tree_size, restored.root_hash, restored.note) == (
                original.tree_size, original.root_hash, original.note)
            assert report.entries == original.tree_size == world.ledger.size()
            # the append-only triggers came back with the restore
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.writer.begin() as conn:
                conn.exec_driver_sql("DELETE FROM log_entries")
        finally:
            db.dispose()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {new} CASCADE")
        engine.dispose()
        world.db.dispose()
