"""athar init, athar serve, athar demo.

The ledger's storage modules are imported inside the commands that need them, so that `athar --help` and the
scanner commands start fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer
from rich.text import Text

from ledger.paths import (
    DEFAULT_ORIGIN,
    ENV_DATABASE_URL,
    ENV_HOME,
    ENV_RUN_DIR,
    ENV_SUPERVISOR_PID,
    STARTUP_FAILURE_FILE,
)
from scanner_cli import exit_codes, render
from scanner_cli.identity import usage
from signing.errors import SigningError
from signing.keys import read_private_key, read_public_key

if TYPE_CHECKING:
    from fixtures.demo import DemoSummary
from scanner_cli.options import DataDir, DbUrl, Json, home_path
from scanner_cli.serve_run import MAX_DEFAULT_WORKERS, default_workers, run_directory

Host = Annotated[str, typer.Option(help="address to listen on")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="port to listen on (0: any free port, shown at start)")]
Workers = Annotated[int | None, typer.Option(
    min=1, help=f"worker processes (default: one per core, at most {MAX_DEFAULT_WORKERS})", show_default=False)]


def init(data_dir: DataDir = None, db: DbUrl = None,
         origin: Annotated[str | None, typer.Option(
             help=f"checkpoint origin, e.g. sante.gov.ma/athar (default {DEFAULT_ORIGIN}); fixed once created",
             show_default=False)] = None,
         root_public_key: Annotated[Path | None, typer.Option(
             help="the regulator's root public key file; without it a root key pair is generated here")] = None,
         json_out: Json = False) -> None:
    """Create a data directory (ledger key, regulator root key) and migrate the database. Idempotent; on an
    existing directory, --db, --origin and --root-public-key must match what it holds."""
    from ledger.home import HomeMismatch, init_home

    path = home_path(data_dir)
    try:
        root = read_public_key(root_public_key) if root_public_key else None
    except SigningError as exc:
        usage(f"--root-public-key: {exc}")
    try:
        home, created = init_home(path, origin=origin, database_url=db, root_public_key=root)
    except HomeMismatch as err:
        usage(err.message)
    info = {"data_dir": str(path), "created": created, "database": home.database_url(db).split("@")[-1],
            "ledger_key": home.ledger_key().key_id, "root_key": home.trust().root.key_id}
    if json_out:
        render.emit_json(info)
        return
    render.console.print(f"[green]{'created' if created else 'already initialised'}[/] {render.escape(path)}")
    render.console.print(Text(f"  ledger key  {info['ledger_key']}\n  root key    {info['root_key']}\n"
                              f"  database    {info['database']} (migrated)"))


def serve(data_dir: DataDir = None, db: DbUrl = None, host: Host = "127.0.0.1", port: Port = 8000,
          workers: Workers = None,
          sequencer: Annotated[bool, typer.Option(
              "--sequencer/--no-sequencer",
              help="append through one sequencer process (default); without it each worker appends itself")]
          = True) -> None:
    """Run the API server (uvicorn)."""
    _serve(home_path(data_dir), db, host, port, workers or default_workers(), sequencer=sequencer)


def _serve(path: Path, db: str | None, host: str, port: int, workers: int, *, sequencer: bool = True) -> None:
    from ledger.home import open_ledger

    os.environ[ENV_HOME] = str(path)
    if db:
        os.environ[ENV_DATABASE_URL] = db
    # The workers share one listening socket, and libuv (under uvloop) accepts every pending connection at once:
    # clients that connect together (a pharmacy chain's tills, a load generator) all landed on one worker in some
    # runs, which then did all the work. One connection per turn of the loop spreads them.
    os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
    # fail fast, in one line, before forking workers that would each fail on their own
    shutdown_timeout = _check_settings().shutdown_timeout_seconds
    open_ledger(path, db)[1].dispose()
    # what the workers share besides the database: the sequencer's socket, the count of anonymous reports
    with run_directory() as run_dir:
        os.environ[ENV_RUN_DIR] = run_dir
        if workers > 1:  # uvicorn then supervises worker processes, which must not outlive it (api.supervision)
            os.environ[ENV_SUPERVISOR_PID] = str(os.getpid())
        try:
            started = _serve_in(path, db, host, port, workers, run_dir, shutdown_timeout, sequencer=sequencer)
            failure = Path(run_dir, STARTUP_FAILURE_FILE)
            if failure.exists() or not started:
                reason = failure.read_text(encoding="utf-8") if failure.exists() else "see the log above"
                render.fail_line(f"the API server did not start: {reason}")
                raise typer.Exit(exit_codes.UNAVAILABLE)
        finally:
            os.environ.pop(ENV_RUN_DIR, None)
            os.environ.pop(ENV_SUPERVISOR_PID, None)


def _check_settings() -> Any:
    """Read the API's settings as a worker will, and stop with a usage error on a bad ATHAR_* value. The module is
    named, not imported, as uvicorn names the app: the CLI does not depend on the API."""
    settings = importlib.import_module("api.settings")
    try:
        return settings.Settings.from_env()
    except ValueError as err:  # api.settings.SettingsError
        render.fail_line(str(err))
        raise typer.Exit(exit_codes.USAGE) from None


def _serve_in(path: Path, db: str | None, host: str, port: int, workers: int, run_dir: str,
              shutdown_timeout: int, *, sequencer: bool) -> bool:
    """Serve until stopped; False if the server stopped before it started serving."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    # named, not imported: the CLI does not import the API (the workers do); one send per response
    config = uvicorn.Config("api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            log_level="warning", proxy_headers=True,
                            http="api.http_protocol:CoalescingHttpToolsProtocol",
                            timeout_graceful_shutdown=shutdown_timeout)
    # bound here, not by uvicorn, so that the banner comes once the port is ours and names the port actually bound
    # (--port 0 asks the system for a free one), and a port in use is one line
    with _listen(host, port, config.backlog) as sock, \
            _sequencer_process(path, db, run_dir) if sequencer else contextlib.nullcontext():
        base = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"
        render.console.print(f"athar API on [bold]{base}[/]  (docs: {base}/docs, "
                             f"{workers} worker{'s' if workers > 1 else ''})", soft_wrap=True)
        if workers > 1:
            # it stops by itself only when a worker could not start (uvicorn's STARTUP_FAILURE), which that worker
            # records in the run directory
            Multiprocess(config, sockets=[sock]).run()
            return True
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        except SystemExit:  # uvicorn's way of saying the app or its start-up failed; the caller says it once
            pass
        except KeyboardInterrupt:  # as uvicorn.run: a second Ctrl-C during the graceful shutdown
            pass
        return server.started


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)  # connections made as soon as the banner is out wait for the workers
    except OSError as err:
        sock.close()
        render.fail_line(f"cannot listen on {host}:{port}: {err.strerror or err}")
        raise typer.Exit(exit_codes.UNAVAILABLE) from None
    sock.set_inheritable(True)  # the workers are spawned processes that take it over
    return sock


@contextlib.contextmanager
def _sequencer_process(path: Path, db: str | None, run_dir: str) -> Iterator[None]:
    """Start the sequencer process (``ledger.sequencer_link``) and tell the workers where it listens. If it
    does not come up, the workers append by themselves."""
    import multiprocessing

    from ledger.sequencer_link import STOP_SIGNAL, run_sequencer

    socket_path = os.path.join(run_dir, "sequencer.sock")
    process = multiprocessing.get_context("spawn").Process(
        target=run_sequencer, args=(str(path), db, socket_path, os.getpid()), name="athar-sequencer", daemon=True)
    process.start()
    deadline = time.monotonic() + 30
    while not os.path.exists(socket_path) and process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.path.exists(socket_path):
        os.environ["ATHAR_SEQUENCER_SOCKET"] = socket_path
    else:
        render.console.print("[yellow]the sequencer process did not start; each worker appends by itself[/]")
    try:
        yield
    finally:
        os.environ.pop("ATHAR_SEQUENCER_SOCKET", None)
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, STOP_SIGNAL)  # the workers are done: answer what is queued, then stop
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join(5)


def demo(data_dir: DataDir = None, db: DbUrl = None,
         serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the API afterwards")] = False,
         host: Host = "127.0.0.1", port: Port = 8000, workers: Workers = None, json_out: Json = False) -> None:
    """Build a realistic demo ledger (idempotent), verify it, and optionally serve it."""
    from fixtures.demo import build_demo
    from ledger.audit import verify_store
    from ledger.home import init_home, open_ledger

    path = home_path(data_dir)
    home, _ = init_home(path, database_url=db)
    ledger, database = open_ledger(path, db)
    started = time.perf_counter()
    try:
        with render.console.status("building the demo ledger...") as status:
            summary = build_demo(ledger, home, progress=lambda msg: status.update(msg))
        report = verify_store(ledger.store, ledger.config.trust, ledger.config.origin)
    finally:
        database.dispose()
    elapsed = time.perf_counter() - started
    if json_out:
        render.emit_json({"summary": dataclasses.asdict(summary), "verified": report.ok,
                          "seconds": round(elapsed, 2)})
    else:
        base = f"http://{host}:{port}"
        _print_summary(summary, base)
        state = "[green]intact[/]" if report.ok else f"[red]FAILED[/] {render.escape(report.failure)}"
        render.console.print(f"audit verify: {report.entries} entries, {report.checkpoints} checkpoints: {state} "
                             f"({elapsed:.1f} s)")
        _print_links(home.keys / "actors", base)
    if serve_after:
        _serve(path, db, host, port, workers or default_workers())


def _print_summary(summary: DemoSummary, base: str) -> None:
    from rich.table import Table

    c = render.console
    c.print(f"[bold]demo ledger[/] {'built' if summary.created else 'already present (nothing added)'}: "
            f"{summary.tree_size} log entries")
    table = Table(show_header=False, box=None, padding=(0, 2))
    for label, value in [("actors", summary.actors), ("products", summary.products), ("batches", summary.batches),
                         ("serialized packs", summary.packs), ("shipments", summary.shipments),
                         ("returns", summary.returns), ("dispensed", summary.dispensed),
                         ("destroyed", summary.destroyed), ("recalled batches", summary.recalled_batches),
                         ("quarantined batches", summary.quarantined_batches), ("reports", summary.reports),
                         ("alerts", summary.alerts)]:
        table.add_row(label, str(value))
    c.print(table)
    for refused in summary.refused:
        c.print(f"  [yellow]refused[/] {refused.code} by {refused.actor}: {render.escape(refused.message)} "
                f"(alert at entry {refused.alert_index})", highlight=False, soft_wrap=True)
    if summary.samples:
        c.print("\n[bold]try these packs[/] (expected verdict):")
        for s in summary.samples:
            link = f"{base}/01/{s.gtin}/10/{quote(s.lot, safe='')}/21/{quote(s.serial, safe='')}" \
                   f"?17={s.expiry.strftime('%y%m%d')}"
            c.print(f"  {s.expected:<18} athar scan --url {base} --text '{s.element_string}'   {link}", highlight=False,
                    soft_wrap=True)


def _print_links(actor_keys: Path, base: str) -> None:
    """Where to look once the demo is served: the API docs and the regulator's dashboard (signed link)."""
    import datetime as dt

    from fixtures.demo import load_actors
    from ledger.request_signing import make_session_token

    c = render.console
    c.print(f"\n[bold]open[/]  API docs      {base}/docs", highlight=False, soft_wrap=True)
    c.print(f"      checkpoint    {base}/v1/log/checkpoint", highlight=False, soft_wrap=True)
    for actor in load_actors():
        key_file = actor_keys / f"{actor.id}.key"
        if actor.role == "regulator" and key_file.exists():
            token = make_session_token(read_private_key(key_file), actor.id,
                                       dt.datetime.now(dt.UTC) + dt.timedelta(hours=12))
            c.print(f"      dashboard     {base}/dashboard?token={token}  (as {actor.id}, valid 12 h)",
                    highlight=False, soft_wrap=True)
            break
    c.print(f"      scan a pack   athar scan --url {base} --text '<code>'   (exit code = verdict class)",
            highlight=False, soft_wrap=True)
