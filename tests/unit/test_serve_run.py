"""What `athar serve` sets up around uvicorn (``scanner_cli.serve_run``): its default number of workers, and its
run directory, removed at the end of a run, SIGTERM included, or by the next run when the process was killed."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
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
    # a service's own group (systemd's CPUQuota=) and the groups above it: the smallest quota counts
    ({"system.slice/athar.service/cpu.max": "200000 100000\n", "system.slice/cpu.max": "max 100000\n"}, 2),
    ({"system.slice/athar.service/cpu.max": "max 100000\n", "system.slice/cpu.max": "100000 100000\n"}, 1),
])
def test_a_control_groups_cpu_quota(tmp_path: Path, files: dict[str, str], cpus: int | None) -> None:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    own = tmp_path / "self-cgroup"
    own.write_text("0::/system.slice/athar.service\n")
    assert cgroup_cpus(root, own) == cpus


def test_default_workers_follow_the_quota_and_the_cap(tmp_path: Path) -> None:
    own = tmp_path / "self-cgroup"
    own.write_text("0::/\n")
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert default_workers(tmp_path, own) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    cores = len(os.sched_getaffinity(0))
    assert default_workers(tmp_path, own) == min(cores, MAX_DEFAULT_WORKERS)


def test_a_run_directory_is_private_and_removed_and_stale_ones_are_swept(tmp_path: Path) -> None:
    stale, live, foreign = tmp_path / "athar-stale", tmp_path / "athar-live", tmp_path / "athar-soak-x"
    for d in (stale, live, foreign):
        d.mkdir()
    (stale / PID_FILE).write_text("1\n")  # a live process id, but no run holds the lock: a killed run's
    with open(live / PID_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live run (in another container, say) holds it
        with run_directory(str(tmp_path)) as path:
            run = Path(path)
            assert (run / PID_FILE).read_text() == f"{os.getpid()}\n"
            assert run.stat().st_mode & 0o777 == 0o700
            assert not stale.exists() and live.exists() and foreign.exists()
            assert sweep_stale(tmp_path) == []  # its own directory is held too
        assert not run.exists()
    assert sweep_stale(tmp_path) == [live]  # released: the next start sweeps it


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
        _wait_ready(port)
        runs = [p.parent for p in tmp.glob(f"athar-*/{PID_FILE}") if p.read_text().strip() == str(proc.pid)]
        assert len(runs) == 1, list(tmp.iterdir())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # a stop asked for, not a failure (systemd counts 143 one)
        assert not runs[0].exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _wait_ready(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)


def _serve_cmd(home: Path, url: str, *args: str, prelude: str = "") -> list[str]:
    code = f"{prelude}\nfrom scanner_cli.main import run\nrun()"
    return [sys.executable, "-c", code, "serve", "--data-dir", str(home), "--db", url, *args]


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_world(tmp_path / "home", url).db.dispose()
    return tmp_path / "home", url


@pytest.mark.parametrize(("name", "value"), [
    ("ATHAR_DB_POOL_SIZE", "abc"), ("ATHAR_MAX_BODY_BYTES", "-5"), ("ATHAR_PUBLIC_REPORTS_PER_MINUTE", "1.5"),
    ("ATHAR_MAX_TRANSIT_DAYS", "0"), ("ATHAR_OVERDUE_CHECK_SECONDS", "1_000"), ("ATHAR_SHUTDOWN_TIMEOUT_SECONDS", "x"),
])
def test_a_bad_setting_is_one_line_and_a_usage_error_before_any_worker_starts(
        home: tuple[Path, str], name: str, value: str) -> None:
    r = subprocess.run(_serve_cmd(*home, "--port", str(free_port()), "--workers", "2"), cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={**os.environ, name: value})
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert name in r.stderr and repr(value) in r.stderr and "from " in r.stderr
    assert "athar API on" not in r.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_worker_that_cannot_start_stops_the_server_in_one_line(home: tuple[Path, str], workers: str) -> None:
    """The check before forking is skipped here, so the bad value reaches the workers as any start-up failure would
    (a database gone between the check and the fork): the server stops, it does not restart them for ever."""
    skip_check = ("import types, scanner_cli.commands.admin as a; "
                  "a._check_settings = lambda: types.SimpleNamespace(shutdown_timeout_seconds=5)")
    r = subprocess.run(_serve_cmd(*home, "--port", str(free_port()), "--workers", workers, prelude=skip_check),
                       cwd=ROOT, capture_output=True, text=True, timeout=90,
                       env={**os.environ, "ATHAR_DB_POOL_SIZE": "abc", "ATHAR_OVERDUE_CHECK_SECONDS": "0"})
    assert r.returncode == 5, (r.returncode, r.stderr[-3000:])
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the API server did not start: ATHAR_DB_POOL_SIZE='abc'"), r.stderr[-3000:]


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_a_usage_error(home: tuple[Path, str], port: str) -> None:
    r = subprocess.run(_serve_cmd(*home, "--port", port), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--port" in r.stderr, (r.returncode, r.stderr)
    assert "athar API on" not in r.stdout


def test_a_port_in_use_is_one_line_and_no_banner(home: tuple[Path, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = subprocess.run(_serve_cmd(*home, "--port", str(taken.getsockname()[1]), "--workers", "1"), cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 5 and r.stderr.startswith("error: cannot listen on"), (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "athar API on" not in r.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_is_not_held_by_a_half_sent_request(home: tuple[Path, str], workers: str) -> None:
    """Port 0 takes a free port, which the banner names once it listens; a client that sent headers and part of
    its body holds the stop only for ATHAR_SHUTDOWN_TIMEOUT_SECONDS."""
    proc = subprocess.Popen(_serve_cmd(*home, "--port", "0", "--workers", workers), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "ATHAR_OVERDUE_CHECK_SECONDS": "0",
                                 "ATHAR_SHUTDOWN_TIMEOUT_SECONDS": "2"})
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        port = int(banner.split("http://127.0.0.1:")[1].split()[0])
        assert port != 0, banner
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:  # listening once announced
            _wait_ready(port)
            client.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100\r\n\r\n0123456789")
            time.sleep(0.5)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
