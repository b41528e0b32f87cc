"""Shared pieces: result rows, percentiles, CPU accounting, PostgreSQL schemas, a real ``athar serve``."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ledger.proc_name import SEQUENCER

ROOT = Path(__file__).resolve().parent.parent
ATHAR = str(Path(sys.executable).with_name("athar"))
PG_BASE = os.environ.get("ATHAR_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One figure of the report."""

    bench: str
    what: str
    value: str
    target: str = ""
    floor: str = ""  # the figure as a fraction of what the hardware allows
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, bench: str, what: str, value: str, target: str = "", floor: str = "", note: str = "") -> Row:
        row = Row(bench, what, value, target, floor, note)
        self.rows.append(row)
        print(f"  {what}: {value}" + (f"   [target {target}]" if target else "")
              + (f"   [{floor} of floor]" if floor else "") + (f"   ({note})" if note else ""), flush=True)
        return row


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``; NaN for an empty list."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def fraction(achieved_per_s: float, floor_per_s: float | None) -> str:
    if not floor_per_s:
        return ""
    return f"{100 * achieved_per_s / floor_per_s:.1f}%"


# ---- CPU accounting (Linux /proc) ------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its live descendants."""
    return sum(_proc_cpu(p) for p in tree_pids(pid))


def machine_cpu() -> float:
    """CPU seconds used so far by the whole machine (user + nice + system + irq + softirq, /proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / CLK_TCK


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    server: float  # the server's process tree
    sequencer: float  # of which the sequencer process (``/proc/PID/comm``, see ``ledger.proc_name``)
    machine: float


def process_name(pid: int) -> str:
    """``/proc/PID/comm``: the name a process shows to ``ps`` (empty when it is gone)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class CpuMeter:
    """CPU seconds spent by the server tree (and its sequencer) and by the whole machine over a timed phase."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def snapshot(self) -> CpuSnapshot:
        pids = tree_pids(self.server_pid) if self.server_pid else []
        per = {p: _proc_cpu(p) for p in pids}
        sequencer = sum(cpu for p, cpu in per.items() if process_name(p) == SEQUENCER)
        return CpuSnapshot(time.perf_counter(), sum(per.values()), sequencer, machine_cpu())


def cpu_note(before: CpuSnapshot, after: CpuSnapshot, loadgen_cpu: float, requests: int = 0) -> str:
    """Cores busy by role over the window; with ``requests`` (one kind of request only), CPU per request too."""
    wall = after.wall - before.wall
    if wall <= 0:
        return ""
    cores = os.cpu_count() or 1
    server, sequencer = after.server - before.server, after.sequencer - before.sequencer
    machine = after.machine - before.machine
    other = max(0.0, machine - server - loadgen_cpu)
    of_which = f" (sequencer {sequencer / wall:.2f})" if sequencer > 0 else ""
    note = (f"cores busy: server {server / wall:.2f}{of_which}, load generator {loadgen_cpu / wall:.2f}, "
            f"other (PostgreSQL...) {other / wall:.2f}; machine {machine / wall:.2f} of {cores}")
    if requests > 0:
        def us(seconds: float) -> str:
            return f"{1e6 * seconds / requests:,.0f}"

        seq = f" (sequencer {us(sequencer)})" if sequencer > 0 else ""
        note += (f"; CPU per request {us(machine)} µs: server {us(server)}{seq}, PostgreSQL and the rest "
                 f"{us(other)}, load generator {us(loadgen_cpu)}")
        bound = cpu_bound(requests, server + other, cores)
        if bound is not None:
            note += f"; at that CPU per request {cores} cores serve at most {bound:,.0f}/s"
    return note


def cpu_bound(requests: int, serving_cpu: float, cores: int) -> float | None:
    """Requests per second ``cores`` could serve if they did nothing else, at the CPU per request measured
    (``serving_cpu``: the server and the rest of the machine, PostgreSQL and anything else running, but not the
    load generator, which could run elsewhere): the ceiling that closing the gap to it (queueing, the
    sequencer's serial cycle) could reach without making a request cheaper."""
    if requests <= 0 or serving_cpu <= 0:
        return None
    return cores * requests / serving_cpu


# ---- PostgreSQL ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    took: float  # seconds
    returncode: int
    stdout: str
    stderr: str
    peak_mb: float  # the command's own peak resident memory (VmHWM, polled), not its children's


def run_measured(argv: Sequence[str], cwd: Path | None = None, poll: float = 0.02) -> Measured:
    """Run a command to its end: its wall time, and its peak memory read from /proc while it runs. (Not from
    ``wait4``: Linux carries the forking process's peak across ``exec``, so a child of this big process would
    report this process's memory.) The peak is the last reading, at most ``poll`` s before it ended."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, cwd=cwd)
        peak_kb = 0
        while proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, IndexError):  # IndexError: exited, not yet reaped
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak_kb = max(peak_kb, int(status.split("VmHWM:", 1)[1].split()[0]))
            time.sleep(poll)
        took = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        return Measured(took, proc.returncode, out.read().decode(errors="replace"),
                        err.read().decode(errors="replace"), peak_kb / 1024)


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(_libpq(PG_BASE), connect_timeout=3):
            return True
    except Exception:
        return False


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_pg_settings(url: str, settings: dict[str, str]) -> str:
    """``url`` whose connections start with these PostgreSQL settings (added to libpq's ``options``)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    extra = " ".join(f"-c{name}={value}" for name, value in settings.items())
    query["options"] = f"{query['options']} {extra}" if query.get("options") else extra
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))  # spaces as %20, not +


def wal_syncs(url: str) -> int | None:
    """How many times PostgreSQL has synced its WAL to disk (cluster-wide, since its statistics were reset); None
    when it cannot say. PostgreSQL 18 moved the count from ``pg_stat_wal`` to ``pg_stat_io``."""
    import psycopg

    for query in ("SELECT wal_sync FROM pg_stat_wal", "SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal'"):
        try:
            with psycopg.connect(_libpq(url), autocommit=True) as conn:
                row = conn.execute(query).fetchone()
                return int(row[0]) if row and row[0] is not None else None
        except psycopg.Error:
            continue
    return None


def commit_time(url: str, n: int = 200) -> float:
    """Seconds per single-row INSERT + COMMIT on one connection of ``url`` (a scratch table, dropped after)."""
    import psycopg

    with psycopg.connect(_libpq(url)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (n integer)")
        conn.commit()
        try:
            started = time.perf_counter()
            for i in range(n):
                conn.execute("INSERT INTO bench_commit_probe VALUES (%s)", (i,))
                conn.commit()
            return (time.perf_counter() - started) / n
        finally:
            conn.rollback()  # an insert that failed leaves the transaction aborted: the drop must not hide its error
            conn.execute("DROP TABLE bench_commit_probe")
            conn.commit()


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema ``bench_<random>``; yields the SQLAlchemy URL that uses it; drops it afterwards."""
    import psycopg

    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(_libpq(PG_BASE), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in PG_BASE else "?"
    try:
        yield f"{PG_BASE}{sep}options=-csearch_path%3D{name}"
    finally:
        if not os.environ.get("ATHAR_BENCH_KEEP"):
            with psycopg.connect(_libpq(PG_BASE), autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {name} CASCADE")


@contextlib.contextmanager
def database(kind: str) -> Iterator[tuple[Path, str]]:
    """A fresh data directory and database URL (SQLite in the directory, or a fresh PostgreSQL schema)."""
    tmp = Path(tempfile.mkdtemp(prefix="athar-bench-"))
    try:
        if kind == "postgres":
            with pg_schema() as url:
                yield tmp / "home", url
        else:
            yield tmp / "home", f"sqlite:///{tmp / 'home' / 'ledger.db'}"
    finally:
        if not os.environ.get("ATHAR_BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def vacuum_analyze(url: str) -> None:
    """Refresh the planner's statistics and, on PostgreSQL, reclaim dead row versions: what autovacuum does on a
    database in service soon after its tables grow or change.

    A benchmark starts on empty tables and fills them within seconds, before autovacuum's first round: the
    statements the server prepared during the set-up keep the plans made for near-empty tables (found with
    auto_explain: the replay check scanned the whole log on every group). The set-up also updates every pack
    once or twice (shipments and receipts move them), leaving two to three dead versions per live pack, which
    every later read of a pack stepped over; autovacuum keeps a table below a fifth of dead rows, and on a
    server where it is off (as on this project's CI machines) nothing reclaims them."""
    from ledger.storage.database import open_database

    db = open_database(url, pool_size=1)
    try:
        with db.writer.connect() as conn:
            if db.is_sqlite:
                conn.exec_driver_sql("ANALYZE")
            else:
                vacuum = "" if os.environ.get("ATHAR_BENCH_NO_VACUUM") else "VACUUM "
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(vacuum + "ANALYZE")
            conn.commit()
    finally:
        db.dispose()


def athar_init(home: Path, url: str) -> None:
    subprocess.run([ATHAR, "init", "--data-dir", str(home), "--db", url, "--json"], check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    home: Path
    url: str
    base: str
    proc: subprocess.Popen[bytes]
    workers: int

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def http_server(argv: list[str], log_path: Path, ready_path: str, workers: int, what: str,
                timeout: float = 60) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``argv`` (given the port as ``{port}``) as a subprocess serving HTTP on a free port, its output in
    ``log_path``; yields its base URL and process once ``ready_path`` answers 200; stops it afterwards."""
    import httpx

    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen([a.replace("{port}", str(port)) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(base + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s")
            time.sleep(0.2)
        # with several workers, wait until each has started (each answers on its own)
        time.sleep(1.0 if workers > 1 else 0)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def serve(home: Path, url: str, workers: int) -> Iterator[Server]:
    """A real ``athar serve`` subprocess on a free port, ready when yielded, stopped afterwards."""
    argv = [ATHAR, "serve", "--data-dir", str(home), "--db", url, "--port", "{port}", "--workers", str(workers)]
    with http_server(argv, home / "serve.log", "/v1/ready", workers, "athar serve") as (base, proc):
        yield Server(home, url, base, proc, workers)
