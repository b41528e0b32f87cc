"""The real ``athar`` command against a real ``athar serve`` subprocess on a free port.

A world (tests.support.make_world) is built in a data directory; its actors' private keys are written to
``<data-dir>/keys/actors/<actor>.key`` so the CLI signs as them with ``--data-dir D --actor ID``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from signing.keys import write_private_key
from tests.support import GTIN, make_world

REPO = Path(__file__).resolve().parents[3]
EXPIRY = "2028-06-30"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_world(data_dir: Path) -> None:
    world = make_world(data_dir, f"sqlite:///{data_dir}/ledger.db")
    try:
        for actor, key in world.keys.items():
            write_private_key(data_dir / "keys" / "actors" / f"{actor}.key", key)
    finally:
        world.db.dispose()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    data_dir: Path
    url: str
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, input: str | None = None, actor: str | None = None, timeout: float = 60,
                 data_dir: bool = True) -> Result:
        argv = [sys.executable, "-m", "scanner_cli.main", *args]
        if actor is not None:
            argv += ["--actor", actor]
        if data_dir:
            argv += ["--data-dir", str(self.data_dir)]
        env = {**os.environ, "ATHAR_URL": self.url, "COLUMNS": "200", "NO_COLOR": "1", **self.env}
        for name in ("ATHAR_KEY", "ATHAR_ACTOR", "ATHAR_LEDGER_KEY", "ATHAR_ROOT_KEY", "ATHAR_HOME"):
            env.pop(name, None)
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=env, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    # shortcuts for setting up custody through the CLI itself
    def commission(self, lot: str, serials: list[str], actor: str = "maphar", gtin: str = GTIN) -> None:
        r = self("batch", "commission", "--gtin", gtin, "--lot", lot, "--expiry", EXPIRY, "--product",
                 "Amoxicilline 500 mg", "--serials", ",".join(serials), "--channel", "private", actor=actor)
        assert r.code == 0, r.err

    def deliver(self, lot: str, serials: list[str], sender: str, recipient: str, gtin: str = GTIN) -> str:
        r = self("ship", "--gtin", gtin, "--lot", lot, "--to", recipient, "--serials", ",".join(serials), "--json",
                 actor=sender)
        assert r.code == 0, r.err
        shipment = str(r.json()["shipment"])
        r = self("receive", shipment, actor=recipient)
        assert r.code == 0, r.err
        return shipment


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (data_dir.parent / f"serve-{self.port}.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "scanner_cli.main", "serve", "--data-dir", str(data_dir),
                                      "--port", str(self.port)], cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={k: v for k, v in os.environ.items() if not k.startswith("ATHAR_")})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"athar serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/v1/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("athar serve did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Cli]]:
    """One world and one server per test module."""
    data_dir = tmp_path_factory.mktemp("cli") / "home"
    build_world(data_dir)
    server = Server(data_dir)
    try:
        yield server, Cli(data_dir, server.url)
    finally:
        server.stop()
