"""What `athar serve` sets up around uvicorn (``scanner_cli.serve_run``): its default number of workers, and its
run directory, removed at the end of a run, SIGTERM included, or by the next run when the process was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scanner_cli.serve_run import (
    MAX_DEFAULT_WORKERS,
    PID_FILE,
    cgroup_cpus,
    default_workers,
    run_directory,
    sweep_stale,
)
from tests.integration.server import free_port
from tests.support import make_world

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("files", "cpus"), [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
    ({}, None),
    ({"cpu.max": "garbage\n"}, None),
])
def test_a_control_groups_cpu_quota(tmp_path: Path, files: dict[str, str], cpus: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpus(tmp_path) == cpus


def test_default_workers_follow_the_quota_and_the_cap(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert default_workers(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    cores = len(os.sched_getaffinity(0))
    assert default_workers(tmp_path) == min(cores, MAX_DEFAULT_WORKERS)


def test_a_run_directory_is_private_and_removed_and_stale_ones_are_swept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stale, live, foreign = tmp_path / "athar-stale", tmp_path / "athar-live", tmp_path / "athar-soak-x"
    for d, pid in ((stale, gone), (live, str(os.getpid())), (foreign, None)):
        d.mkdir()
        if pid:
            (d / PID_FILE).write_text(pid)
    with run_directory(str(tmp_path)) as path:
        run = Path(path)
        assert (run / PID_FILE).read_text() == str(os.getpid())
        assert run.stat().st_mode & 0o777 == 0o700
        assert not stale.exists() and live.exists() and foreign.exists()
    assert not run.exists()
    assert sweep_stale(tmp_path) == []


def test_sigterm_to_a_one_worker_server_removes_its_run_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_world(tmp_path / "home", url).db.dispose()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scanner_cli.main", "serve", "--data-dir", str(tmp_path / "home"),
                             "--db", url, "--port", str(port), "--workers", "1"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp), "ATHAR_OVERDUE_CHECK_SECONDS": "0"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        runs = [p.parent for p in tmp.glob(f"athar-*/{PID_FILE}") if p.read_text() == str(proc.pid)]
        assert len(runs) == 1, list(tmp.iterdir())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert not runs[0].exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
