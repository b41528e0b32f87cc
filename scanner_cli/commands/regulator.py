"""The regulator's commands: alerts (list, statistics, handle), recalls, risk indicators, the dashboard."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ledger.builder import EventBuilder
from ledger.request_signing import make_session_token
from scanner_cli import render
from scanner_cli.identity import DEFAULT_URL, Actor, KeyFile, Url, client, resolve_identity, usage
from scanner_cli.options import DataDir, Json

alerts_app = typer.Typer(help="Alerts raised by the ledger: list them, see the false-alert rate, handle them.",
                         no_args_is_help=True)


@alerts_app.command("list")
def list_alerts(url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
                status: Annotated[str | None, typer.Option(help="open, investigating or closed")] = None,
                kind: Annotated[str | None, typer.Option(help="e.g. duplicate_dispense")] = None,
                suspect: Annotated[str | None, typer.Option(help="an actor id")] = None,
                gtin: Annotated[str | None, typer.Option(help="a product's GTIN")] = None,
                limit: Annotated[int, typer.Option(min=1, max=5000, help="at most this many")] = 500,
                before: Annotated[int | None, typer.Option(min=0, help="the next page: alerts logged before this "
                                                                       "entry (the last one listed)")] = None,
                json_out: Json = False) -> None:
    """List alerts, newest first, optionally filtered, a page at a time (--limit, then --before)."""
    identity = resolve_identity(key, actor, data_dir, required=True, what="reading alerts")
    with client(url, identity) as api:
        rows = api.alerts(status, kind=kind, suspect=suspect, gtin=gtin, limit=limit, before=before)
    if json_out:
        render.emit_json(rows)
        return
    table = Table("entry", "kind", "status", "suspect", "likely cause", "id")
    for a in rows:
        # a report's "suspect" is who filed it, never shown as a suspect (its message names the reporter)
        suspect = "—" if a["kind"] == "report" else a["suspect"]
        table.add_row(*(Text(str(v)) for v in (a["index"], a["kind"], a["status"], suspect,
                                                 a.get("cause") or a["message"], a["id"])))
    render.console.print(table)
    if len(rows) == limit:  # a full page: say so, rather than let it pass for all there is
        render.errors.print(Text(f"{limit} alerts shown; more may follow: add --before {rows[-1]['index']}"))


@alerts_app.command("stats")
def alert_stats(url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
                json_out: Json = False) -> None:
    """Alert counts by status and kind, and the false-alert rate among closed alerts."""
    identity = resolve_identity(key, actor, data_dir, required=True, what="reading alerts")
    with client(url, identity) as api:
        stats = api.alert_stats()
    if json_out:
        render.emit_json(stats)
        return
    rate = stats["false_alert_rate"]
    render.console.print(Text(f"status: {stats['by_status']}\nkinds: {stats['by_kind']}\nfalse-alert rate: "
                              f"{'—' if rate is None else f'{100 * rate:.1f} %'}"), highlight=False)


@alerts_app.command("update")
def update_alert(alert_id: Annotated[str, typer.Argument(help="the alert's id")],
                 status: Annotated[str, typer.Option(help="investigating or closed")],
                 outcome: Annotated[str | None, typer.Option(help="when closing: confirmed, false_alarm or "
                                                                   "inconclusive")] = None,
                 finding: Annotated[str | None, typer.Option(help="what the investigation found")] = None,
                 url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
                 json_out: Json = False) -> None:
    """Record the handling of an alert in the ledger (signed by you)."""
    identity = resolve_identity(key, actor, data_dir, required=True, what="handling an alert")
    assert identity is not None
    signed = EventBuilder(identity.actor, identity.key).sign("alert_update", alert=alert_id, status=status,
                                                             outcome=outcome, finding=finding)
    with client(url, identity) as api:
        receipt = api.submit(signed)
    if json_out:
        render.emit_json(receipt)
    else:
        render.console.print(Text(f"recorded at entry {receipt['index']} (tree size {receipt['tree_size']})"))


def recalls(url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
            json_out: Json = False) -> None:
    """Every recalled batch: who still holds the stock and the share recovered."""
    identity = resolve_identity(key, actor, data_dir, required=True, what="reading recalls")
    with client(url, identity) as api:
        rows = api.recalls()
    if json_out:
        render.emit_json(rows)
        return
    table = Table("batch", "reason", "recovered", "still held by")
    for r in rows:
        holders = ", ".join(f"{a}: {n}" for a, n in r["holders"].items()) or "—"
        table.add_row(Text(f"{r['gtin']} / {r['lot']}"), Text(str(r["reason"])),
                      f"{100 * r['recovered_share']:.0f} %", Text(holders))
    render.console.print(table)


def risk(url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
         limit: Annotated[int, typer.Option(help="subjects per level")] = 20, json_out: Json = False) -> None:
    """Risk indicators per actor, region and batch, sorted, each with the signals and entries behind it."""
    identity = resolve_identity(key, actor, data_dir, required=True, what="reading risk indicators")
    with client(url, identity) as api:
        report = api.risk(limit)
    if json_out:
        render.emit_json(report)
        return
    for level in ("actors", "regions", "batches"):
        table = Table("subject", "score", "signals (evidence)", title=level, title_justify="left")
        for row in report.get(level, []):
            if row["score"] <= 0:
                continue
            signals = "\n".join(f"{s['explanation']} [{', '.join(map(str, s['evidence'][:6]))}]"
                                for s in row["signals"])
            table.add_row(Text(str(row["subject"])), f"{row['score']:.2f}", Text(signals))
        render.console.print(table)


def dashboard(url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
              hours: Annotated[float, typer.Option(help="how long the link stays valid (at most 12)")] = 8.0) -> None:
    """Print a link to the regulator's dashboard, valid for a few hours (a claim signed with your key)."""
    if not 0 < hours <= 12:
        usage("--hours must be between 0 and 12")
    identity = resolve_identity(key, actor, data_dir, required=True, what="the dashboard")
    assert identity is not None
    token = make_session_token(identity.key, identity.actor, dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours))
    render.console.print(Text(f"{url.rstrip('/')}/dashboard?token={token}"), highlight=False, soft_wrap=True)
