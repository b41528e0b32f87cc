"""`athar serve --workers 2` names its processes, so an operator (``ps``, ``top``) and the benchmark's CPU
accounting can tell the sequencer from the API workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.common import CpuMeter, process_name, tree_pids
from ledger.proc_name import API_WORKER, SEQUENCER
from tests.integration.server import free_port
from tests.reliability.harness import now_clock
from tests.support import make_world

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process names are set on Linux")


def test_the_sequencer_and_the_workers_carry_their_names(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_world(tmp_path / "home", url, clock=now_clock()).db.dispose()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scanner_cli.main", "serve", "--data-dir", str(tmp_path / "home"),
                             "--db", url, "--port", str(port), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ATHAR_OVERDUE_CHECK_SECONDS": "0"})
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
        assert names.count(SEQUENCER) == 1, names
        assert names.count(API_WORKER) == 2, names
        meter = CpuMeter(proc.pid).snapshot()
        assert 0 < meter.sequencer < meter.server  # the benchmark finds the sequencer among the server's processes
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_name_is_cut_to_what_the_kernel_keeps() -> None:
    code = ("import sys; from ledger.proc_name import name_this_process; "
            "ok = name_this_process('athar-a-much-longer-name'); print(ok, open('/proc/self/comm').read().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "athar-a-much-lo"]
