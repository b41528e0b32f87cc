"""The ``athar`` command, and the one place where errors become exit codes and one readable line."""

from __future__ import annotations

import sys

import typer

from ledger.errors import LedgerError
from scanner_cli import exit_codes, render
from scanner_cli.commands import admin, audit
from signing.errors import SigningError

app = typer.Typer(name="athar", help="athar: a tamper-evident traceability ledger for medicines.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.command()(admin.init)
app.command()(admin.serve)
app.command()(admin.demo)
app.add_typer(audit.app, name="audit")


def run() -> None:
    try:
        app()
    except LedgerError as err:
        render.fail_line(err.message)
        sys.exit(exit_codes.for_error(err))
    except SigningError as err:
        render.fail_line(str(err))
        sys.exit(exit_codes.AUTH)
    except KeyboardInterrupt:
        render.fail_line("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    run()
