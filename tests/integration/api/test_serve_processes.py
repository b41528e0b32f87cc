"""`athar serve --workers 2` names its processes, so an operator (``ps``, ``top``) and the benchmark's CPU
accounting can tell the sequencer from the API workers; its workers share what must be counted once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.common import CpuMeter, process_name, tree_pids
from ledger.proc_name import API_WORKER, SEQUENCER
from tests.integration.server import free_port
from tests.reliability.harness import now_clock
from tests.support import GTIN, make_world

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process names are set on Linux")


@contextlib.contextmanager
def _two_workers(tmp_path: Path, **env: str) -> Iterator[tuple[str, list[str], int]]:
    """`athar serve --workers 2` on a small world: its address, its processes' names and its pid, once ready."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_world(tmp_path / "home", url, clock=now_clock()).db.dispose()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scanner_cli.main", "serve", "--data-dir", str(tmp_path / "home"),
                             "--db", url, "--port", str(port), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ATHAR_OVERDUE_CHECK_SECONDS": "0", **env})
    try:
        base = f"http://127.0.0.1:{port}"
        names: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready, and both workers up
            names = [process_name(p) for p in tree_pids(proc.pid)]
            try:
                if names.count(API_WORKER) == 2 and httpx.get(base + "/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield base, names, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_sequencer_and_the_workers_carry_their_names(tmp_path: Path) -> None:
    with _two_workers(tmp_path) as (_base, names, pid):
        assert names.count(SEQUENCER) == 1, names
        assert names.count(API_WORKER) == 2, names
        meter = CpuMeter(pid).snapshot()
        assert 0 < meter.sequencer < meter.server  # the benchmark finds the sequencer among the server's processes


def test_the_workers_share_the_limit_on_anonymous_reports(tmp_path: Path) -> None:
    with _two_workers(tmp_path, ATHAR_PUBLIC_REPORTS_PER_MINUTE="3") as (base, names, _pid):
        assert names.count(API_WORKER) == 2, names
        codes = []
        for _ in range(12):  # a new connection each time: the workers take turns accepting them
            with httpx.Client(base_url=base, timeout=30) as client:
                codes.append(client.post("/v1/reports", json={"gtin": GTIN, "category": "other"}).status_code)
        assert codes == [201] * 3 + [429] * 9


def test_a_name_is_cut_to_what_the_kernel_keeps() -> None:
    code = ("import sys; from ledger.proc_name import name_this_process; "
            "ok = name_this_process('athar-a-much-longer-name'); print(ok, open('/proc/self/comm').read().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "athar-a-much-lo"]


def test_the_workers_end_when_the_server_is_killed(tmp_path: Path) -> None:
    """`kill -9` of `athar serve` (what the OOM killer does) takes its workers too, so it can be started again on its
    port at once, instead of orphans serving on."""
    with _two_workers(tmp_path) as (base, names, pid):
        workers = [p for p in tree_pids(pid) if process_name(p) == API_WORKER]
        assert len(workers) == 2, names
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers)
        with socket.socket() as s:  # the port is free again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(base.rsplit(":", 1)[1])))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has ended; reaping is init's
