"""athar audit: verify the whole ledger."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ledger.audit import verify_store
from ledger.home import open_ledger
from scanner_cli import exit_codes, render
from scanner_cli.options import DataDir, DbUrl, Json, home_path

app = typer.Typer(help="Audit the ledger: verify every signature, chain link, Merkle node and checkpoint.",
                  no_args_is_help=True)


@app.command()
def verify(data_dir: DataDir = None, db: DbUrl = None, json_out: Json = False) -> None:
    """Verify the whole log from the database; exit 0 when intact, 20 naming the first bad entry otherwise."""
    ledger, database = open_ledger(home_path(data_dir), db)
    try:
        with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=render.errors, disable=json_out, transient=True) as bar:
            task = bar.add_task("entries", total=None)
            report = verify_store(ledger.store, ledger.config.trust, ledger.config.origin,
                                  progress=lambda done, total: bar.update(task, completed=done, total=total))
    finally:
        database.dispose()
    result = {"ok": report.ok, "entries": report.entries, "tree_size": report.tree_size, "chains": report.chains,
              "actors": report.actors, "batches": report.batches, "checkpoints": report.checkpoints,
              "first_failure": None if report.failure is None else
              {"index": report.failure.index, "reason": report.failure.reason}}
    if json_out:
        render.emit_json(result)
    elif report.ok:
        render.console.print(f"[green]intact[/]: {report.entries} entries, {report.chains} chains, {report.actors} "
                             f"actors, {report.batches} batches, {report.checkpoints} checkpoints verified")
    else:
        assert report.failure is not None
        where = f"entry {report.failure.index}" if report.failure.index is not None else "the log"
        render.fail_line(f"TAMPERED at {where}: {report.failure.reason}")
    if not report.ok:
        raise typer.Exit(exit_codes.TAMPERED)
