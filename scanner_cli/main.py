"""The ``athar`` command, and the one place where errors become exit codes and one readable line."""

from __future__ import annotations

import sys

import typer

from ledger.errors import LedgerError
from scanner_cli import exit_codes, render
from scanner_cli.commands import actions, actors, admin, audit, bundle, keys, label, regulator, scan
from signing.errors import SigningError

app = typer.Typer(name="athar", help="athar: a tamper-evident traceability ledger for medicines.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.command()(admin.init)
app.command()(admin.serve)
app.command()(admin.demo)
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(actors.app, name="actors")
app.add_typer(actions.batch_app, name="batch")
app.command()(actions.ship)
app.command()(actions.receive)
app.command()(actions.refuse)
app.command()(actions.dispense)
app.command()(actions.recall)
app.command()(actions.report)
app.command()(label.label)
app.command()(scan.scan)
app.add_typer(bundle.app, name="bundle")
app.add_typer(regulator.alerts_app, name="alerts")
app.command()(regulator.recalls)
app.command()(regulator.dashboard)
audit.app.command()(regulator.risk)


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
        _interrupted()
    except SystemExit as exc:
        # typer turns a Ctrl-C inside a command into a bare exit 130, before the handler above can see it
        if exc.code == 130 and _from_ctrl_c(exc):
            _interrupted()
        raise


def _interrupted() -> None:
    render.fail_line("interrupted")
    sys.exit(130)


def _from_ctrl_c(exc: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


if __name__ == "__main__":
    run()
